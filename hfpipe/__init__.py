"""hfpipe: pretrain and adapt transformer language models on the Hugging Face stack.

``import hfpipe`` registers the three model families (model_type ``hfpipe_encoder``,
``hfpipe_decoder``, ``hfpipe_seq2seq``) with transformers' Auto classes, and hfpipe's pretraining
objectives (hfpipe/objectives/) and finetuning tasks (hfpipe/tasks/) with the recipe schema.
"""

import importlib

from .hub_kernels import keep_bitsandbytes_off_the_hub

keep_bitsandbytes_off_the_hub()  # before transformers can import peft, and peft bitsandbytes

from .models import *  # noqa: F401,F403,E402  (registers the Auto classes)
from .models import __all__ as _model_names  # noqa: E402
from . import objectives, tasks  # noqa: E402,F401  (registers the objectives and tasks: recipes name them)

__version__ = "0.1.0"

# Heavier pieces load on first use, so `import hfpipe` stays fast for plain model users.
_LAZY = {
    "span_corruption_lengths": "hfpipe.data.span_corruption",
    "DataCollatorForSpanCorruption": "hfpipe.data.span_corruption",
    "DataCollatorForBertPretraining": "hfpipe.data.collators",
    "DataCollatorForPrefixLM": "hfpipe.data.collators",
    "DataCollatorForCausalLM": "hfpipe.data.collators",
    "train_tokenizer": "hfpipe.tokenization",
    "load_recipe": "hfpipe.recipes",
    "InputError": "hfpipe.errors",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hfpipe' has no attribute {name!r}")


__all__ = [*_model_names, *_LAZY, "__version__"]
