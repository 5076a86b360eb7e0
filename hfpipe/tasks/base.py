"""What a finetuning task is to hfpipe: a recipe section that knows its data, its model head, its
metrics and its prediction file. ``hfpipe finetune`` and ``hfpipe evaluate`` (hfpipe/finetune.py) run
any registered task through :meth:`Task.load_data` (or :meth:`Task.embedded_data`), :meth:`Task.run`
and :meth:`Task.write_predictions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfpipe.recipes.schema import TASKS, TaskSection

register = TASKS.register  # class decorator: task.name (each of the Literal's values) -> this section


@dataclass
class Splits:
    """A task's examples: as its ``load_data`` reads them, then as the driver hands them to its ``run``
    (tasks.loading: data.max_train_samples / max_eval_samples applied, no "train" when only evaluating)."""

    splits: dict[str, Any]  # "train", "validation", "validation_mismatched" (MNLI) -> examples
    datasets: list[str]  # names for the model card
    labels: list[str] | None = None  # ner/pos: the dataset's ClassLabel names (None: plain tag strings)
    where: dict[str, str] = field(default_factory=dict)  # ner/pos: split -> its file or "<hub id> [split]"

    @property
    def train(self) -> Any | None:
        return self.splits.get("train")

    @property
    def evaluation(self) -> dict[str, Any]:
        """The evaluation splits (MNLI: matched and mismatched), by name."""
        return {name: examples for name, examples in self.splits.items() if name.startswith("validation")}


@dataclass
class TaskRun:
    """What :meth:`Task.run` hands back to the driver."""

    trainer: Any  # the Trainer that trained (or only evaluated) the model: the driver saves through it
    train_result: Any | None  # Trainer.train's, None when only evaluating
    metrics: dict[str, float]  # on the validation split(s), the names transformers' scripts use
    predictions: Any = None  # what this task's write_predictions writes


@dataclass
class Task(TaskSection):
    """A finetuning task. Subclasses declare ``name`` as a Literal of their names and their keys as
    fields, and write :meth:`embedded_data`, :meth:`load_data` and :meth:`run`."""

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        """hfpipe's synthetic examples of this task (no data given: --smoke, the demo)."""
        raise NotImplementedError(f"task {self.name}: embedded_data()")

    def load_data(self, recipe, train_files: list[str], validation_files: list[str], do_train: bool) -> Splits:
        """The recipe's local files, or its Hub dataset."""
        raise NotImplementedError(f"task {self.name}: load_data()")

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        """Build the model and its Trainer, train (``do_train``), evaluate; ``data``: the driver's Splits."""
        raise NotImplementedError(f"task {self.name}: run()")

    def write_predictions(self, output_dir: Path, predictions: Any) -> None:
        """The evaluation's predictions file(s) in ``output_dir`` (nothing by default)."""


# ------------------------------------------------------------------- shared by the tasks' runners
def is_text_to_text(recipe) -> bool:
    """An encoder-decoder answering with words (T5), which is the default for seq2seq."""
    return recipe.model.family == "seq2seq" and recipe.task.text_to_text is not False


def adapt(recipe, model, tokenizer):
    """Quantized bases get QLoRA's preparation; then the recipe's PEFT method (if any)."""
    from hfpipe.adapters import apply_peft, prepare_quantized, quantization_config

    if quantization_config(recipe.quantization) is not None:
        model = prepare_quantized(model)
    return apply_peft(model, recipe.peft, tokenizer)


def predict_splits(trainer, evaluation: dict, to_predictions) -> tuple[dict, dict]:
    """Metrics and predictions for each evaluation split; MNLI's mismatched set gets ``_mm``."""
    from hfpipe.training.results import standard_metric_name

    metrics, predictions = {}, {}
    for name, dataset in evaluation.items():
        split_metrics, split_predictions = trainer.evaluate_once(dataset)  # the final step's pass, if it ran one
        suffix = "_mm" if name.endswith("mismatched") else ""
        metrics.update({standard_metric_name(k) + suffix: v for k, v in split_metrics.items()})
        predictions[name] = to_predictions(split_predictions)
    return metrics, predictions


__all__ = ["Splits", "Task", "TaskRun", "adapt", "predict_splits", "is_text_to_text", "register"]
