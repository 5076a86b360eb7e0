"""``hfpipe finetune RECIPE`` and ``hfpipe evaluate RECIPE --model DIR``: the driver of every
finetuning task (hfpipe/tasks/: GLUE, SQuAD, instruction tuning, token tagging, DPO).

    recipe.task       -> its plug-in (hfpipe.tasks.<name>): data, head, metrics, prediction file
    recipe.model      -> a head on any checkpoint (the task's Auto class)
    recipe.train      -> training.trainer.build_trainer
    outputs           -> eval_results.json, the task's predictions (eval_predictions.jsonl|json,
                         eval_generations.jsonl), the model, the card
"""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed

from .tasks.loading import load_task_data
from .training.output_dir import prepare_output_dir
from .training.results import finish_run, is_bookkeeping, results_table, write_json


def run_finetuning(recipe, do_train: bool = True) -> dict:
    """Finetune (or only evaluate, ``do_train=False``) as the recipe says; returns the metrics."""
    if do_train:
        output_dir, resume_from = prepare_output_dir(recipe)
    else:  # the CLI chose a folder of its own (training.output_dir.prepare_evaluation_dir)
        output_dir, resume_from = Path(recipe.train.output_dir), None
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(recipe.train.seed)  # before any weight is initialised: Trainer seeds only once built
    data = load_task_data(recipe, do_train)
    run = recipe.task.run(recipe, data, do_train, resume_from)
    trainer, metrics = run.trainer, run.metrics
    if trainer.is_world_process_zero():
        recipe.task.write_predictions(output_dir, run.predictions)
        if recipe.peft.method != "none" and do_train:
            # The adapter alone does not say how the base was changed (labels, added tokens):
            # keep the base config next to it, for `hfpipe merge` and plain peft loading.
            trainer.model.get_base_model().config.save_pretrained(output_dir)
    if do_train:
        return finish_run(trainer, recipe, output_dir, run.train_result, metrics, model_name=output_dir.name,
                          task=recipe.task.name, datasets=data.datasets, base_model=recipe.model.name_or_path)
    if trainer.is_world_process_zero():
        write_json(output_dir / "eval_results.json", metrics)
        shown = {k: v for k, v in metrics.items() if not is_bookkeeping(k)}
        print("\n" + results_table(f"Evaluation: {recipe.model.name_or_path} on {recipe.task.name}", shown) + "\n")
    return metrics


__all__ = ["run_finetuning"]
