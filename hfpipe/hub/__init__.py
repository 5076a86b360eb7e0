"""The Hugging Face Hub: resolve ``--model NAME[@REVISION]`` and pull checkpoints (``pull``), push an
output directory (``push``: ``hfpipe push runs/sst2 my-org/bert-sst2``), write model cards (``card``).

Everything goes through huggingface_hub; these modules decide *what* to pull or push and turn the
Hub's errors into one-line ``InputError``s.
"""

from .card import write_model_card
from .pull import (CHECKPOINT_MARKER, hub_offline, load_hub_dataset, parse_model_reference, pull_checkpoint,
                   resolve_checkpoint)
from .push import push_to_hub, select_upload_files

__all__ = [
    "CHECKPOINT_MARKER",
    "hub_offline",
    "load_hub_dataset",
    "parse_model_reference",
    "pull_checkpoint",
    "push_to_hub",
    "resolve_checkpoint",
    "select_upload_files",
    "write_model_card",
]
