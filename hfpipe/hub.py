"""The Hugging Face Hub: push an output directory, resolve ``--model NAME[@REVISION]``, write model cards.

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
  re-encoded as safetensors + JSON by hfpipe.training_state, still without pickles, so that
  ``train.resume: org/name[@revision]`` continues the run exactly) and ``runs/``
  (``include_logs``: tensorboard events).

Weight files already on the target branch, in a folder the push writes weights to, and not part of
this push are deleted in the same commit: a stale ``model.safetensors`` next to a new sharded index
would otherwise be what ``from_pretrained`` loads. Earlier commits keep them.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token, hf_hub_download, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, filter_repo_objects, validate_repo_id

from .errors import InputError
from .heads import head_for, head_for_peft_task

logger = logging.getLogger(__name__)

UPLOAD_ALLOW_PATTERNS = [
    "*.safetensors", "*.safetensors.index.json", "*.json", "*.jsonl", "*.txt", "*.model", "*.jinja",
    "*.py", "*.md", "*.yaml", "*.png",
]  # fmt: skip
CHECKPOINT_PATTERNS = ["checkpoint-*/*"]
# Written last into checkpoint-N/ (train.COMPLETE_MARKER): without it the checkpoint was cut off
# while saving, or while being pulled.
CHECKPOINT_MARKER = "hfpipe_checkpoint_complete"
LOG_PATTERNS = ["runs/*"]
# Pickled files: never pushed, and a folder whose only weights are pickles is refused outright.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
# What resolve_checkpoint skips when it downloads a Hub checkpoint: training state, logs and
# other frameworks' weights, none of which from_pretrained needs.
DOWNLOAD_IGNORE_PATTERNS = [*CHECKPOINT_PATTERNS, *LOG_PATTERNS, "*.h5", "*.msgpack", "*.onnx", "*.tflite"]
# Markers of a usable cached snapshot (a full model, an adapter, or a tokenizer).
_CACHE_MARKERS = ("config.json", "adapter_config.json", "tokenizer_config.json")

# Trainer bookkeeping that eval_results.json carries next to the metrics: not evaluation results.
_NOT_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second", "total_flos"}
# The first placeholder of huggingface_hub's default card template (what peft's save_pretrained writes).
_HUB_TEMPLATE_MARK = "<!-- Provide a quick summary of what the model is/does. -->"



# --- model references ------------------------------------------------------------------------------
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
    safetensors form (hfpipe.training_state). A repo whose root is itself a checkpoint (it holds
    ``trainer_state.json``) works too. A checkpoint pushed without its training state still
    resumes its weights and step, with a warning that the optimizer starts afresh.
    """
    from .training_state import import_training_state

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


# --- push ------------------------------------------------------------------------------------------
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
        from .training_state import export_training_state

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


# --- model card ------------------------------------------------------------------------------------
def write_model_card(
    output_dir: str | Path,
    *,
    model_name: str,
    base_model: str | None = None,
    datasets: Iterable[str] = (),
    tags: Iterable[str] = (),
    task: str | None = None,
    results: Mapping[str, float],
    training_summary: str,
    recipe_path: str | Path | None = None,
    dataset_config: str | None = None,
    dataset_split: str | None = None,
) -> Path:
    """Write ``output_dir/README.md``: Hub metadata (YAML) + results table + how it was trained.

    - ``results``: flat metrics as in eval_results.json (``{"eval_accuracy": 0.91, ...}``); an
      ``eval_`` prefix is dropped, Trainer bookkeeping (epoch, runtime, samples/steps per second)
      is left out, everything else becomes one model-index metric and one table row.
    - ``datasets``: Hub dataset ids; the first is the one ``results`` were measured on
      (``dataset_config`` / ``dataset_split`` narrow it, e.g. "sst2" / "validation"); without one
      the results are filed under a dataset named "custom".
    - ``task``: the Hub task type ("text-classification", "question-answering", ...); by default
      inferred from ``config.json``'s architectures or ``adapter_config.json``'s task_type.
    - ``base_model``: put in the metadata only if it is a Hub id (the Hub rejects local paths).
    - ``recipe_path``: the resolved recipe, quoted in full under "Training procedure".

    The metadata is built with huggingface_hub's ModelCardData/EvalResult (library_name
    transformers, or peft for an adapter folder; tags include "hfpipe"). An existing README.md
    replaces only a generated one (hfpipe's, peft's template, Trainer's); anyone else's is kept
    (InputError).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise InputError(f"model card: {output_dir} is not a directory")
    card_path = output_dir / "README.md"
    if card_path.is_file() and not _replaceable_card(card_path):
        raise InputError(
            f"model card: {card_path} exists and was not generated (by hfpipe, peft or Trainer); move it away first"
        )

    metrics = _card_metrics(results)
    datasets = list(datasets)
    is_adapter = (output_dir / "adapter_config.json").is_file()
    task = task or _infer_task(output_dir)
    if metrics and task is None:
        raise InputError(f"model card: pass task= (e.g. text-classification); {output_dir} names no model head")
    dataset_type = datasets[0] if datasets else "custom"
    dataset_name = " ".join(filter(None, [dataset_type, dataset_config, dataset_split]))
    eval_results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=dataset_config,
            dataset_split=dataset_split,
            metric_type=metric,
            metric_name=metric,
            metric_value=value,
        )
        for metric, value in metrics.items()
    ]
    hub_base = base_model if base_model and _is_hub_id(base_model) else None
    data = ModelCardData(
        model_name=model_name,
        base_model=hub_base,
        datasets=datasets or None,
        library_name="peft" if is_adapter else "transformers",
        pipeline_tag=task,
        tags=["hfpipe", *tags],
        eval_results=eval_results or None,
    )
    recipe = None
    if recipe_path is not None:
        recipe_file = Path(recipe_path) if Path(recipe_path).is_absolute() else output_dir / recipe_path
        if not recipe_file.is_file():
            raise InputError(f"model card: recipe_path {recipe_path} does not exist")
        recipe = recipe_file.read_text(encoding="utf-8")
    body = _card_body(model_name, base_model, hub_base, datasets, dataset_name, metrics, training_summary, recipe)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    card.save(card_path)
    return card_path


def _replaceable_card(card_path: Path) -> bool:
    """hfpipe's own card, or boilerplate a library generated (peft's save_pretrained, Trainer)."""
    try:
        card = ModelCard.load(card_path)
    except ValueError:  # unparsable metadata: someone's own card
        return False
    tags = card.data.tags or []
    return "hfpipe" in tags or "generated_from_trainer" in tags or _HUB_TEMPLATE_MARK in card.text


def _card_metrics(results: Mapping[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in results.items():
        name = key.removeprefix("eval_")
        if name in _NOT_METRICS:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"model card: result {key!r} is {value!r}; expected a number")
        if name in metrics:
            raise InputError(f"model card: results hold both {name!r} and 'eval_{name}'")
        metrics[name] = value
    return metrics


def _infer_task(output_dir: Path) -> str | None:
    config = output_dir / "config.json"
    architectures = (json.loads(config.read_text()).get("architectures") or []) if config.is_file() else []
    for architecture in architectures:
        head = head_for(architecture)
        if head is not None and head.suffix != "Model":  # a bare backbone says nothing of its task
            return head.pipeline_tag
    adapter = output_dir / "adapter_config.json"
    if adapter.is_file():
        head = head_for_peft_task(json.loads(adapter.read_text()).get("task_type"))
        return head.pipeline_tag if head is not None else None
    return None


def _is_hub_id(name: str) -> bool:
    if Path(name).expanduser().exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _card_body(model_name, base_model, hub_base, datasets, dataset_name, metrics, training_summary, recipe) -> str:
    if hub_base:
        origin = f"a fine-tuned version of [{hub_base}](https://huggingface.co/{hub_base})"
    elif base_model:
        origin = f"a fine-tuned version of `{base_model}`"
    else:
        origin = "trained from scratch"
    on = f" on {', '.join(f'[{d}](https://huggingface.co/datasets/{d})' for d in datasets)}" if datasets else ""
    lines = [f"# {model_name}", "", f"This model is {origin}{on}, with hfpipe.", ""]
    if metrics:
        lines += ["## Evaluation results", "", f"Measured on {dataset_name}.", "", "| Metric | Value |", "|---|---|"]
        lines += [f"| {name} | {_format_value(value)} |" for name, value in metrics.items()]
        lines.append("")
    lines += ["## Training procedure", "", training_summary.strip(), ""]
    if recipe is not None:
        lines += ["### Recipe", "", "```yaml", recipe.rstrip("\n"), "```", ""]
    return "\n".join(lines)


def _format_value(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"
