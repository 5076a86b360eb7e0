"""What a finished run leaves: the final model, train_results.json / eval_results.json, recipe.yaml,
trainer_state.json, the model card, a results table on the terminal, and a push when asked."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..hub import push_to_hub, write_model_card


def write_json(path: Path, data: dict) -> None:
    """Write atomically (temporary file, then rename): a crash leaves the old file or the new."""
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def standard_metric_name(key: str) -> str:
    """Trainer's eval_accuracy -> accuracy; eval_loss keeps its name (interface.md)."""
    return key if key == "eval_loss" or not key.startswith("eval_") else key[len("eval_"):]


def add_perplexity(metrics: dict, prefix: str = "eval_") -> dict:
    loss = metrics.get(f"{prefix}loss")
    if loss is not None:
        metrics["perplexity"] = math.exp(min(loss, 700.0))
    return metrics


# Trainer's timing and bookkeeping entries: in eval_results.json, not in the table a reader scans.
BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")


def is_bookkeeping(metric: str) -> bool:
    return metric.removeprefix("eval_").endswith(BOOKKEEPING)


def results_table(title: str, rows: dict[str, float | int | str]) -> str:
    """A plain aligned two-column table for the terminal (and the model card)."""
    items = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in rows.items()]
    width = max([len(k) for k, _ in items] + [len("metric")])
    vwidth = max([len(v) for _, v in items] + [len("value")])
    lines = [title, f"| {'metric'.ljust(width)} | {'value'.rjust(vwidth)} |", f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|"]
    lines += [f"| {k.ljust(width)} | {v.rjust(vwidth)} |" for k, v in items]
    return "\n".join(lines)


def finish_run(trainer, recipe, output_dir: Path, train_result, eval_metrics: dict | None, *,
               model_name: str, task: str | None, datasets: list[str], base_model: str | None,
               extra_files: dict[str, str] | None = None) -> dict:
    """Save the final model, tokenizer, recipe.yaml, results JSON, model card, loss.png;
    print the results table; return the evaluation metrics."""
    trainer.save_model(str(output_dir))
    if trainer.is_fsdp_enabled and "FULL_STATE_DICT" not in str(trainer.accelerator.state.fsdp_plugin.state_dict_type):
        # Trainer writes no final weights for a sharded state dict (checkpoints keep shards); the run's
        # model must load with from_pretrained, so gather the full one (every rank joins, rank 0 writes).
        trainer._save(str(output_dir), state_dict=trainer.accelerator.get_state_dict(trainer.model))
    train_metrics = dict(train_result.metrics) if train_result is not None else {}
    if eval_metrics is not None:
        eval_metrics = {standard_metric_name(k): v for k, v in eval_metrics.items()}
    if trainer.args.should_save:  # with save_on_each_node, every machine's folder is a whole run
        recipe.save_yaml(output_dir / "recipe.yaml")
        if train_metrics:
            write_json(output_dir / "train_results.json", train_metrics)
        if eval_metrics is not None:
            write_json(output_dir / "eval_results.json", eval_metrics)
        for name, text in (extra_files or {}).items():
            (output_dir / name).write_text(text)
        trainer.state.save_to_json(str(output_dir / "trainer_state.json"))
        _write_card(output_dir, recipe, eval_metrics or {}, model_name=model_name, task=task,
                    datasets=datasets, base_model=base_model)
    if trainer.is_world_process_zero():
        shown = {k: v for k, v in (eval_metrics or {}).items() if not is_bookkeeping(k)}
        shown["train_loss"] = train_metrics.get("train_loss", float("nan"))
        shown["train_steps"] = trainer.state.global_step
        print("\n" + results_table(f"Results: {model_name} ({output_dir})", shown) + "\n", flush=True)
        push_if_asked(recipe, output_dir)
    return eval_metrics or {}


def push_if_asked(recipe, output_dir, include_checkpoints: bool = False) -> str | None:
    """``hub.push: true``: push the output folder (weights as safetensors, card, recipe)."""
    if not recipe.hub.push:
        return None
    url = push_to_hub(output_dir, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
                      commit_message=f"hfpipe {recipe.kind}: {recipe.description or Path(output_dir).name}",
                      include_checkpoints=include_checkpoints)
    print(f"pushed {output_dir} to {url}", flush=True)
    return url


def _write_card(output_dir, recipe, metrics, *, model_name, task, datasets, base_model):
    summary = (
        f"Trained with hfpipe `{recipe.kind}` ({recipe.description or 'recipe.yaml'}): "
        f"family {recipe.model.family}, "
        + (f"objective {recipe.objective.name}, " if recipe.objective else "")
        + (f"task {recipe.task.name}, " if recipe.task else "")
        + (f"peft {recipe.peft.method}, " if recipe.peft.method != "none" else "")
        + f"{recipe.train.max_steps if recipe.train.max_steps > 0 else recipe.train.num_train_epochs} "
        + ("steps" if recipe.train.max_steps > 0 else "epochs")
        + f", learning rate {recipe.train.learning_rate}. The full recipe is recipe.yaml."
    )
    # write_model_card strips eval_ and Trainer's bookkeeping itself; it takes numbers only
    results = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    write_model_card(output_dir, model_name=model_name, base_model=base_model, datasets=list(datasets),
                     tags=["hfpipe", recipe.kind, recipe.model.family], task=task, results=results,
                     training_summary=summary, recipe_path="recipe.yaml")
