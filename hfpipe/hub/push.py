"""Pushing an output directory to the Hugging Face Hub.

Everything goes through huggingface_hub (HfApi.create_repo / create_branch / upload_folder,
snapshot_download, ModelCard); this module only decides *what* to push and turns the Hub's
errors into one-line ``InputError``s. Run by the CLI as::

    hfpipe push runs/sst2 my-org/bert-sst2 [--private] [--revision exp-1] [--commit-message M]

What a push uploads (``select_upload_files``), relative to the output directory:

- allowed: ``*.safetensors`` and ``*.safetensors.index.json`` (weights, full models and adapters),
  ``*.json`` / ``*.jsonl`` (config, generation config, tokenizer, adapter config, metrics,
  predictions), ``*.txt`` / ``*.model`` / ``*.jinja`` (vocabularies, merges, sentencepiece models,
  chat templates), ``*.py`` (modeling code that ``trust_remote_code`` loads), ``*.md`` (the model
  card), ``*.yaml`` (the resolved recipe), ``*.png`` (loss curves);
- never: pickles (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``: ``pytorch_model.bin``,
  ``training_args.bin``, ``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``): anything loaded from
  the Hub should be safetensors, and optimizer state only serves a local resume;
- only when asked: ``checkpoint-*/`` (``include_checkpoints``: their weights, configs,
  ``trainer_state.json`` and completion marker, and the optimizer, scheduler and RNG state
  re-encoded as safetensors + JSON by hfpipe.training.state, still without pickles, so that
  ``train.resume: org/name[@revision]`` continues the run exactly) and ``runs/``
  (``include_logs``: tensorboard events).

Weight files already on the target branch, in a folder the push writes weights to, and not part of
this push are deleted in the same commit: a stale ``model.safetensors`` next to a new sharded index
would otherwise be what ``from_pretrained`` loads. Earlier commits keep them.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from huggingface_hub import HfApi, get_token
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, filter_repo_objects, validate_repo_id

from ..errors import InputError
from .pull import CHECKPOINT_MARKER, CHECKPOINT_PATTERNS, LOG_PATTERNS, hub_offline

logger = logging.getLogger(__name__)

UPLOAD_ALLOW_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "*.json", "*.jsonl", "*.txt", "*.model", "*.jinja",
    "*.py", "*.md", "*.yaml", "*.png",
]  # fmt: skip
# Pickled files: never pushed, and a folder whose only weights are pickles is refused outright.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def select_upload_files(
    folder: str | Path, *, include_checkpoints: bool = False, include_logs: bool = False
) -> list[str]:
    """The files of ``folder`` (relative posix paths, sorted) that push_to_hub uploads; see the module doc."""
    folder = Path(folder)
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    allow = UPLOAD_ALLOW_PATTERNS + (LOG_PATTERNS if include_logs else [])
    allow += [f"checkpoint-*/{CHECKPOINT_MARKER}"] if include_checkpoints else []
    ignore = ([] if include_checkpoints else CHECKPOINT_PATTERNS) + ([] if include_logs else LOG_PATTERNS)
    selected = filter_repo_objects(present, allow_patterns=allow, ignore_patterns=ignore)
    return [path for path in selected if not path.endswith(PICKLE_SUFFIXES)]


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    *,
    include_checkpoints: bool = False,
    include_logs: bool = False,
) -> str:
    """Upload an output directory to the Hub in one commit; returns the commit URL.

    Creates the repo if needed (``private`` applies on creation; pushing ``private=True`` into an
    existing public repo is refused) and the branch ``revision`` if it does not exist yet (from
    main). The token comes from ``token``, else HF_TOKEN, else ``hf auth login``; it is never
    printed, logged or written.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"push: {folder} is not a directory")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InputError(f"push: {repo_id!r} is not a Hub repo id (expected org/name)") from None
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        raise InputError(f"push: --revision {revision} is a commit id; pushes go to a branch name")
    if include_checkpoints:
        from ..training.state import export_training_state

        for checkpoint in sorted(folder.glob("checkpoint-*/")):
            export_training_state(checkpoint)
    files = select_upload_files(folder, include_checkpoints=include_checkpoints, include_logs=include_logs)
    _check_weights(folder, files)
    token = token or get_token()
    if not token:
        raise InputError("push: no Hugging Face token: pass one, set HF_TOKEN, or run `hf auth login`")
    _refuse_token_in_files(folder, files, token)
    if hub_offline():
        raise InputError("push: HF_HUB_OFFLINE=1 is set; unset it to push to the Hub")
    skipped = sorted(set(_all_files(folder)) - set(files))
    if skipped:
        shown = ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        logger.info("push: not uploading %d file(s) (pickles, checkpoints, logs, other): %s", len(skipped), shown)

    api = HfApi(token=token)
    branch = revision or hub_constants.DEFAULT_REVISION
    try:
        # private=None, not False: a repo created under an org that defaults to private stays private.
        api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if private and not api.repo_info(repo_id).private:
            raise InputError(f"push: {repo_id} already exists and is public; refusing to push a private model into it")
        if branch != hub_constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        stale = _stale_weight_files(api.list_repo_files(repo_id, revision=branch), files)
        if stale:
            logger.info("push: deleting weight files this push replaces: %s", ", ".join(stale))
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=branch,
            commit_message=commit_message or f"Upload {folder.name} with hfpipe",
            # Exact names: what was selected (and checked for the token) is what goes up.
            allow_patterns=[glob.escape(path) for path in files],
            delete_patterns=[glob.escape(path) for path in stale] or None,
        )
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise InputError(
                f"push: the Hub refused the token for {repo_id} (HTTP {status}): it needs write access to "
                f"'{repo_id.split('/')[0]}'"
            ) from None
        raise
    logger.info("push: %d file(s) from %s -> %s@%s: %s", len(files), folder, repo_id, branch, info.commit_url)
    return info.commit_url


def _all_files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


def _check_weights(folder: Path, files: list[str]) -> None:
    if not files:
        raise InputError(f"push: {folder} holds nothing to upload (expected config, tokenizer or *.safetensors files)")
    top_level_pickles = [p for p in _all_files(folder) if "/" not in p and p.endswith(PICKLE_SUFFIXES)]
    weights_in_pickles = [p for p in top_level_pickles if p.startswith(("pytorch_model", "adapter_model", "model"))]
    if weights_in_pickles and not any(path.endswith(WEIGHT_SUFFIXES) for path in files):
        raise InputError(
            f"push: {folder} holds weights only as pickles ({', '.join(weights_in_pickles)}); "
            "re-save with save_pretrained (safetensors) before pushing"
        )


def _refuse_token_in_files(folder: Path, files: list[str], token: str) -> None:
    """A token pasted into a recipe or config would be published with it: refuse (weights are not text)."""
    needle = token.encode()
    for path in files:
        if not path.endswith((".safetensors", ".png")) and needle in (folder / path).read_bytes():
            raise InputError(f"push: {folder / path} contains your Hugging Face token; remove it before pushing")


def _stale_weight_files(remote_files: Iterable[str], files: list[str]) -> list[str]:
    """Remote weight files in a folder this push writes weights to, and not among them."""
    uploading = set(files)
    weight_folders = {str(PurePosixPath(p).parent) for p in files if p.endswith(WEIGHT_SUFFIXES)}
    return sorted(
        p
        for p in remote_files
        if p.endswith(WEIGHT_SUFFIXES) and p not in uploading and str(PurePosixPath(p).parent) in weight_folders
    )
