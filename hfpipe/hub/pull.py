"""Model references on the Hub: ``--model NAME[@REVISION]`` resolved to a local snapshot
(``resolve_checkpoint``), and checkpoints pulled for ``train.resume: org/name[@revision]``."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import InputError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERNS = ["checkpoint-*/*"]
# Written last into checkpoint-N/ (training.output_dir.COMPLETE_MARKER): without it the checkpoint was cut off
# while saving, or while being pulled.
CHECKPOINT_MARKER = "hfpipe_checkpoint_complete"
LOG_PATTERNS = ["runs/*"]
# What resolve_checkpoint skips when it downloads a Hub checkpoint: training state, logs and
# other frameworks' weights, none of which from_pretrained needs.
DOWNLOAD_IGNORE_PATTERNS = [*CHECKPOINT_PATTERNS, *LOG_PATTERNS, "*.h5", "*.msgpack", "*.onnx", "*.tflite"]
# Markers of a usable cached snapshot (a full model, an adapter, or a tokenizer).
_CACHE_MARKERS = ("config.json", "adapter_config.json", "tokenizer_config.json")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return hub_constants.is_offline_mode() or now.upper() in hub_constants.ENV_VARS_TRUE_VALUES


def parse_model_reference(
    reference: str | os.PathLike, *, cache_dir: str | Path | None = None
) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; ``"org/name"`` -> ``("org/name", None)``.

    A local path wins: if ``reference`` exists on disk it is returned whole (even with an ``@``
    in its name), with revision None. Anything else must be a Hub id (``name`` or ``org/name``,
    optionally ``@branch``, ``@tag`` or ``@commit``). While HF_HUB_OFFLINE=1, a Hub id is only
    accepted if its revision is in the cache (``cache_dir``, default the hub cache): otherwise
    InputError now, in one line, instead of a loader retrying the network later.
    """
    ref = os.fspath(reference)
    if not ref:
        raise InputError("--model: empty model reference (expected a local folder or a Hub id org/name[@revision])")
    if Path(ref).expanduser().exists():
        return str(Path(ref).expanduser()), None
    name, at, revision = ref.partition("@")
    if at and not revision:
        raise InputError(f"--model {ref}: nothing after '@' (expected NAME@REVISION)")
    if at and Path(name).expanduser().exists():
        raise InputError(f"--model {ref}: {name} is a local folder; '@{revision}' applies only to Hub ids")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise InputError(f"--model {ref}: no local folder {name!r}, and not a Hub id (org/name[@revision])") from None
    if hub_offline() and not _is_cached(name, revision or None, cache_dir):
        raise InputError(
            f"--model {ref}: no local folder {name!r}, and HF_HUB_OFFLINE=1 forbids downloading it "
            "(nor is that revision in the Hub cache): give a local path, or unset HF_HUB_OFFLINE"
        )
    return name, revision or None


def _is_cached(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> bool:
    return any(
        isinstance(try_to_load_from_cache(repo_id, marker, cache_dir=cache_dir, revision=revision), str)
        for marker in _CACHE_MARKERS
    )


def resolve_checkpoint(reference: str | os.PathLike, *, token: str | None = None) -> str:
    """A local folder holding the checkpoint ``reference`` names: the path itself, or a Hub snapshot.

    Hub ids (``org/name[@revision]``) are downloaded with snapshot_download (or taken from its
    cache offline), skipping ``checkpoint-*/``, ``runs/`` and other frameworks' weights.
    """
    name, revision = parse_model_reference(reference)
    if revision is None and Path(name).exists():
        return name
    try:
        return snapshot_download(name, revision=revision, token=token, ignore_patterns=DOWNLOAD_IGNORE_PATTERNS)
    except RevisionNotFoundError:
        raise InputError(f"--model {reference}: the Hub repo {name} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise InputError(
            f"--model {reference}: no Hub repo {name} (or it is private and the token cannot read it)"
        ) from None


def pull_checkpoint(reference: str, output_dir: str | Path, *, token: str | None = None) -> str:
    """``train.resume: org/name[@revision]``: bring the newest complete ``checkpoint-N/`` of a run
    pushed with its checkpoints into ``output_dir`` and return its local path.

    The copy is a plain, writable folder (Trainer and later local resumes use it like any of the
    run's own checkpoints), with the optimizer, scheduler and RNG pickles written back from their
    safetensors form (hfpipe.training.state). A repo whose root is itself a checkpoint (it holds
    ``trainer_state.json``) works too. A checkpoint pushed without its training state still
    resumes its weights and step, with a warning that the optimizer starts afresh.
    """
    from ..training.state import import_training_state

    name, revision = parse_model_reference(reference)
    where = f"train.resume {reference}"
    try:
        remote = HfApi(token=token).list_repo_files(name, revision=revision)
    except RevisionNotFoundError:
        raise InputError(f"{where}: the Hub repo {name} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise InputError(f"{where}: no local folder and no Hub repo {name} (or the token cannot read it)") from None
    steps = sorted(int(m.group(1)) for path in remote
                   if (m := re.fullmatch(rf"checkpoint-(\d+)/{CHECKPOINT_MARKER}", path)))
    if steps:
        prefix, local = f"checkpoint-{steps[-1]}/", Path(output_dir) / f"checkpoint-{steps[-1]}"
    elif "trainer_state.json" in remote:
        state = Path(hf_hub_download(name, "trainer_state.json", revision=revision, token=token))
        step = json.loads(state.read_text())["global_step"]
        prefix, local = "", Path(output_dir) / f"checkpoint-{step}"
    else:
        raise InputError(
            f"{where}: the Hub repo {name} holds no complete checkpoint-N/ (push the run with "
            "hub.hub_strategy: every_save, or hfpipe push --include-checkpoints)"
        )
    if (local / CHECKPOINT_MARKER).is_file():
        logger.info("%s: already pulled to %s", where, local)
        return str(local)
    if local.exists():
        raise InputError(f"{where}: {local} exists but is incomplete; remove it or choose another --output-dir")
    snapshot = Path(snapshot_download(name, revision=revision, token=token, allow_patterns=[f"{prefix}*"]))
    partial = local.with_name(local.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # Root-level snapshots also hold the card, recipe and other checkpoints: copy the checkpoint's files only.
    ignore = shutil.ignore_patterns("checkpoint-*", "runs") if not prefix else None
    shutil.copytree(snapshot / prefix, partial, ignore=ignore)  # follows the cache's symlinks: real files
    if not import_training_state(partial):
        logger.warning("%s: the pushed checkpoint has no optimizer/scheduler/RNG state; the weights and step "
                       "resume, the optimizer starts afresh", where)
    (partial / CHECKPOINT_MARKER).write_text(f"pulled from {name}@{revision or 'main'}\n")
    partial.rename(local)  # whole or not at all: a crash mid-copy leaves only the .partial folder
    logger.info("%s: pulled %s%s to %s", where, name, f"/{prefix}" if prefix else "", local)
    return str(local)


def load_hub_dataset(name: str, config: str | None = None, *, local_hint: str, **kwargs):
    """``datasets.load_dataset(name, config)`` for a Hub dataset, with one line for a dataset that cannot
    be reached (offline, no network) or does not exist, saying which local files work instead."""
    import datasets

    label = f"data.dataset {name}" + (f" ({config})" if config else "")
    try:
        return datasets.load_dataset(name, config, **kwargs)
    except datasets.exceptions.DatasetNotFoundError as error:
        raise InputError(f"{label}: not found on the Hub ({error}); {local_hint}") from None
    except (ConnectionError, OSError) as error:
        why = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else f"{type(error).__name__}: {error}"
        raise InputError(f"{label}: cannot be reached on the Hub, {why}; {local_hint}") from None
