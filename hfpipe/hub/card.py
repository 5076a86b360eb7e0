"""Model cards: README.md written into an output directory from its recipe, results and base model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import InputError
from ..heads import head_for, head_for_peft_task

# Trainer bookkeeping that eval_results.json carries next to the metrics: not evaluation results.
_NOT_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second", "total_flos"}
# The first placeholder of huggingface_hub's default card template (what peft's save_pretrained writes).
_HUB_TEMPLATE_MARK = "<!-- Provide a quick summary of what the model is/does. -->"


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
            f"model card: {card_path} exists and was not generated (by hfpipe, peft, Trainer or trl); move it away first"
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


_TRL_TEMPLATE_MARK = "It has been trained using [TRL]"  # trl/templates/lm_model_card.md, written on every save


def _replaceable_card(card_path: Path) -> bool:
    """hfpipe's own card, or boilerplate a library generated (peft's save_pretrained, Trainer, trl's trainers)."""
    try:
        card = ModelCard.load(card_path)
    except ValueError:  # unparsable metadata: someone's own card
        return False
    tags = card.data.tags or []
    return ("hfpipe" in tags or "generated_from_trainer" in tags or _HUB_TEMPLATE_MARK in card.text
            or ("trl" in tags and _TRL_TEMPLATE_MARK in card.text))


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
