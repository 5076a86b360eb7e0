"""Trainer wiring shared by every verb: output directory, callbacks, results and the table.

transformers' Trainer (on Accelerate) runs the loop, mixed precision, gradient accumulation,
checkpoints, rotation and resuming; hfpipe adds what it lacks:
- refusing to overwrite a finished run, and resolving ``train.resume``;
- a loss curve (loss.png) and a non-finite-loss stop that names the step;
- a wall-clock budget (``train.time_budget``, budget.py);
- train_results.json / eval_results.json, recipe.yaml, the model card, a results table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from typing import Any
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from .accumulation import LossCountsMixin
from .budget import BudgetProgressCallback, TimeBudget, TimeBudgetCallback, budget_trainer, parse_duration
from .errors import InputError, NonFiniteLossError
from .hub import CHECKPOINT_MARKER as COMPLETE_MARKER  # written last into checkpoint-N/ (and pushed with it)
from .hub import pull_checkpoint, push_to_hub, write_model_card

logger = logging.getLogger("hfpipe")

# Files whose presence marks a folder as holding a finished run.
_FINISHED_MARKERS = ("train_results.json", "eval_results.json")


def last_complete_checkpoint(output_dir) -> str | None:
    """The newest checkpoint-N/ whose save finished. Trainer writes checkpoints in place, so a
    process killed while saving leaves a partial newest folder: it is skipped (and reported)."""
    folders = sorted(
        (p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for folder in reversed(folders):
        if (folder / COMPLETE_MARKER).exists():
            return str(folder)
        logger.warning("%s was not saved completely (the run stopped while saving); skipping it", folder)
    return None


class CompleteCheckpointsMixin:
    """Marks each checkpoint complete once every process has written its part, so resuming
    never starts from a half-written one."""

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            (folder / COMPLETE_MARKER).write_text(f"{self.state.global_step}\n")


class FinalEvaluationMixin:
    """Keeps the output of Trainer's last evaluation pass (its predictions included), so the results
    and prediction files of a run come from the evaluation Trainer already ran at its last step
    instead of a second pass over the same validation set (:meth:`evaluate_once`)."""

    last_evaluation = None  # (global step, dataset, EvalLoopOutput)

    def evaluation_loop(self, dataloader, *args, **kwargs):
        output = super().evaluation_loop(dataloader, *args, **kwargs)
        self.last_evaluation = (self.state.global_step, getattr(dataloader, "dataset", None), output)
        return output

    def evaluate_once(self, dataset, predictions: bool = True) -> tuple[dict, Any]:
        """(``eval_``-prefixed metrics, predictions or None) on ``dataset``: from the final step's
        evaluation when Trainer ran one on this very dataset with today's weights (not replaced by the
        best checkpoint since), else from one pass now (``predict``, or ``evaluate`` for the loss only)."""
        if self.last_evaluation is not None:
            step, evaluated, output = self.last_evaluation
            best = getattr(self.state, "best_global_step", None)
            best_loaded = self.args.load_best_model_at_end and best not in (None, step)
            if step == self.state.global_step and _same_rows(evaluated, dataset) and not best_loaded \
                    and (output.predictions is not None or not predictions):
                logger.debug("final metrics%s from the evaluation at step %d", " and predictions" * predictions, step)
                return dict(output.metrics), output.predictions if predictions else None
        if predictions:
            output = self.predict(dataset, metric_key_prefix="eval")
            return dict(output.metrics), output.predictions
        return self.evaluate(dataset), None


def _same_rows(evaluated, dataset) -> bool:
    """Whether Trainer's evaluation dataset (possibly wrapped by the dataloader) is ``dataset``."""
    return evaluated is dataset or getattr(evaluated, "dataset", None) is dataset


def prepare_evaluation_dir(recipe, explicit: str | None) -> Path:
    """Where ``hfpipe evaluate`` writes, chosen so that it never changes the run it evaluates.

    ``explicit`` (--output-dir) wins; otherwise ``eval-<task>/`` inside the evaluated model's folder,
    or ``runs/<model name>-eval-<task>`` for a Hub model. The evaluated folder itself is refused, and
    an earlier evaluation is kept unless ``train.overwrite``."""
    task = recipe.task.name if recipe.task is not None else "perplexity"
    model = recipe.model.name_or_path
    if explicit:
        out = Path(explicit)
    elif model and Path(model).is_dir():
        out = Path(model) / f"eval-{task}"
    else:
        out = Path("runs") / f"{Path(model or recipe.train.output_dir).name}-eval-{task}"
    if model and Path(model).is_dir() and out.resolve() == Path(model).resolve():
        raise InputError(f"{out}: is the model being evaluated; evaluate writes to another --output-dir")
    if (out / "eval_results.json").exists() and not recipe.train.overwrite:
        raise InputError(f"{out}: holds an earlier evaluation; choose another --output-dir or pass "
                         "--set train.overwrite=true")
    out.mkdir(parents=True, exist_ok=True)
    recipe.train.output_dir = str(out)
    return out


def prepare_output_dir(recipe) -> tuple[Path, str | bool | None]:
    """Check the output directory before any heavy work; return it and what to resume from.

    A folder holding a finished run is never overwritten without ``train.overwrite``; a folder
    with checkpoints but no finished run needs ``train.resume`` or ``train.overwrite``. A
    ``train.resume`` that is no local folder is a Hub id: its newest pushed checkpoint is pulled
    into the output directory (hub.pull_checkpoint) and resumed from there.
    """
    out = Path(recipe.train.output_dir)
    resume = recipe.train.resume
    finished = [name for name in _FINISHED_MARKERS if (out / name).exists()]
    if isinstance(resume, str):
        if Path(resume).is_dir():
            return out, resume
        if finished and not recipe.train.overwrite:
            raise InputError(f"{out}: holds a finished run ({finished[0]}); resume {resume} into another --output-dir")
        out.mkdir(parents=True, exist_ok=True)
        with distributed_state(recipe).local_main_process_first():  # one pull per machine: disks may not be shared
            local = pull_checkpoint(resume, out)
        return out, local
    if out.is_dir() and any(out.iterdir()) and not recipe.train.overwrite:
        last = last_complete_checkpoint(out)
        if finished and not resume:
            raise InputError(
                f"{out}: holds a finished run ({finished[0]}); choose another --output-dir or pass "
                "--set train.overwrite=true"
            )
        if resume:
            if last is None:
                raise InputError(f"{out}: train.resume is true but the folder holds no checkpoint-N/ to resume from")
            return out, last
        if last is not None:
            raise InputError(
                f"{out}: holds checkpoints of an unfinished run ({Path(last).name}); pass --set train.resume=true "
                "to continue it or --set train.overwrite=true to start over"
            )
    if resume is True:
        raise InputError(f"{out}: train.resume is true but there is no checkpoint to resume from")
    out.mkdir(parents=True, exist_ok=True)
    return out, None


def distributed_state(recipe) -> PartialState:
    """The launcher's processes, before TrainingArguments exists (which then takes this state over).

    A bare PartialState() on a machine without CUDA reports one process even under `accelerate launch`
    (it is TrainingArguments' use_cpu that makes the processes gloo), so its main_process_first would
    not wait and every process would write. The timeout is TrainingArguments' ddp_timeout: other
    processes wait in a barrier while one prepares the data or trains the tokenizer."""
    timeout = TrainingArguments.__dataclass_fields__["ddp_timeout"].default
    return PartialState(cpu=recipe.train.use_cpu or not torch.cuda.is_available(), timeout=timedelta(seconds=timeout))


def output_dir_is_shared(output_dir, state: PartialState) -> bool:
    """Whether every process sees the same ``output_dir``: the main process leaves a probe file there and
    every process looks for it. Machines without a shared filesystem (or given different folders) do not."""
    from accelerate.utils import broadcast_object_list, gather_object

    name = [f".hfpipe-shared-probe-{uuid.uuid4().hex}" if state.is_main_process else None]
    if state.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / name[0]).write_text("")
    probe = Path(output_dir) / broadcast_object_list(name)[0]
    seen = gather_object([probe.exists()])
    if state.is_main_process:
        probe.unlink()
    return all(seen)


class LossCurveCallback(TrainerCallback):
    """Collects training and evaluation losses; draws loss.png whenever a checkpoint is
    saved and at the end, so a crashed run still leaves its curve."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.train: list[tuple[int, float]] = []
        self.eval: list[tuple[int, float]] = []
        # Seconds since training began at each point above: loss against wall time (Cramming's axis).
        self.train_seconds: list[float] = []
        self.eval_seconds: list[float] = []
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.restored = False

    def on_step_begin(self, args, state, control, **kwargs):
        # (here, not in on_train_begin: some transformers releases load a resumed state after it)
        if not self.restored:
            self.restored = True
            if state.global_step > 0 and not self.train and not self.eval:
                self.restore(state)

    def restore(self, state) -> None:
        """A resumed run's curve begins with the steps before its checkpoint: the losses from the
        checkpoint's log history, their times from the loss_history.json its save wrote."""
        self.train = [(e["step"], float(e["loss"])) for e in state.log_history if "loss" in e]
        self.eval = [(e["step"], float(e["eval_loss"])) for e in state.log_history if "eval_loss" in e]
        saved = {}
        if (self.output_dir / "loss_history.json").is_file():
            saved = json.loads((self.output_dir / "loss_history.json").read_text())
        for points, kind in ((self.train, "train"), (self.eval, "eval")):
            times = {step: seconds for (step, _), seconds in zip(saved.get(kind, []), saved.get(f"{kind}_seconds", []))}
            setattr(self, f"{kind}_seconds", [times.get(step) for step, _ in points])
        known = [s for s in self.train_seconds + self.eval_seconds if s is not None]
        self.started = time.monotonic() - max(known, default=0.0)  # wall time goes on from the checkpoint's

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        elapsed = round(time.monotonic() - self.started, 2)
        if "loss" in logs:
            self.train.append((state.global_step, float(logs["loss"])))
            self.train_seconds.append(elapsed)
        if "eval_loss" in logs:
            self.eval.append((state.global_step, float(logs["eval_loss"])))
            self.eval_seconds.append(elapsed)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:  # the main process, or each machine's first with save_on_each_node
            self.draw()

    def on_train_end(self, args, state, control, **kwargs):
        if args.should_save:
            self.draw()

    def draw(self) -> Path | None:
        if not self.train and not self.eval:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if self.train:
            ax.plot(*zip(*self.train), label="training loss")
        if self.eval:
            ax.plot(*zip(*self.eval), marker="o", label="evaluation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.output_dir / "loss.png"
        fig.savefig(path)
        plt.close(fig)
        (self.output_dir / "loss_history.json").write_text(
            json.dumps({"train": self.train, "eval": self.eval, "train_seconds": self.train_seconds,
                        "eval_seconds": self.eval_seconds}, indent=1)
        )
        return path


class CompileNoticeCallback(TrainerCallback):
    """torch.compile traces and compiles on the first forward: minutes of silence on a CPU, at 0% of the
    bar. Say so before it starts, and how long the first step (with the compilation) took."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.first_step = state.global_step + 1
        if state.is_world_process_zero:
            logger.info("compiling the model (torch.compile, backend %s, mode %s): the first step compiles it and "
                        "takes longer%s", args.torch_compile_backend or "inductor", args.torch_compile_mode or "default",
                        " (minutes on a CPU)" if not torch.cuda.is_available() else "")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.first_step and state.is_world_process_zero:
            logger.info("first step with compilation: %.0f s", time.monotonic() - self.started)


class NonFiniteLossCallback(TrainerCallback):
    """Stops at the first logged NaN/inf loss, naming the step; the checkpoints written
    before it stay (Trainer only writes checkpoints at save steps, never on this stop)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            last = last_complete_checkpoint(args.output_dir)
            where = f"; last good checkpoint: {last}" if last else "; no checkpoint was written before it"
            raise NonFiniteLossError(
                f"training loss became {loss} at step {state.global_step}{where}. "
                "Lower train.learning_rate or use train.mixed_precision=bf16 instead of fp16."
            )


def training_arguments(recipe, do_eval: bool, args_class=TrainingArguments, **extra) -> TrainingArguments:
    kwargs = {**recipe.train.to_training_arguments_kwargs(do_eval=do_eval), **extra}
    kwargs["logging_first_step"] = True
    kwargs["remove_unused_columns"] = False  # hfpipe's collators read columns the model does not take
    kwargs["logging_nan_inf_filter"] = False  # a diverged loss must reach NonFiniteLossCallback
    if not torch.cuda.is_available():
        # Under `accelerate launch --multi_gpu` on a CPU machine this makes the processes use gloo.
        kwargs["use_cpu"] = True
    # Losses as in a single process when several run (environment.md: Trainer doubles them otherwise).
    if "average_tokens_across_devices" in TrainingArguments.__dataclass_fields__:
        kwargs["average_tokens_across_devices"] = False
    args = args_class(**kwargs)
    if args.world_size > 1 and not args.save_on_each_node and not output_dir_is_shared(args.output_dir,
                                                                                      args.distributed_state):
        # Machines that do not share a disk: Trainer's save_on_each_node has each machine's first process
        # write checkpoints (model, optimizer, trainer state) into its own output_dir, so every machine can
        # resume (each process writes its own RNG state and stream position either way). On a shared disk
        # it stays off: two machines would write the same files at once.
        args.save_on_each_node = True
        if args.should_save:
            logger.info("%s is not shared by all %d processes: each machine saves checkpoints and the final model "
                        "into its own (save_on_each_node)", args.output_dir, args.world_size)
    return args


def build_trainer(recipe, model, processing_class, train_dataset, eval_dataset, data_collator,
                  compute_metrics=None, preprocess_logits_for_metrics=None, trainer_class=Trainer,
                  args_class=TrainingArguments, extra_args=None, **trainer_kwargs) -> tuple[Trainer, LossCurveCallback]:
    args = training_arguments(recipe, eval_dataset is not None, args_class, **(extra_args or {}))
    if args.save_on_each_node and hasattr(model, "should_save_on_this_rank"):
        # transformers 5.24's save_pretrained writes weights on global rank 0 only, whatever is_main_process
        # Trainer passes (True on each machine's first process under save_on_each_node): the other machines'
        # checkpoints and final folder would hold no weights. The model then follows Trainer's choice.
        model.should_save_on_this_rank = lambda is_main_process: is_main_process
    curve = LossCurveCallback(args.output_dir)
    trainer_class = type(
        f"Hfpipe{trainer_class.__name__}", (CompleteCheckpointsMixin, FinalEvaluationMixin, LossCountsMixin,
                                            trainer_class), {}
    )
    budget_callbacks = []
    if recipe.train.time_budget is not None:
        budget = TimeBudget(parse_duration(recipe.train.time_budget))
        trainer_class = budget_trainer(trainer_class, budget, recipe.train.warmup_ratio, recipe.train.lr_scheduler_type,
                                       (recipe.train.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
        budget_callbacks.append(TimeBudgetCallback(budget))
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        processing_class=processing_class,
        compute_metrics=compute_metrics,
        # given only when set: trl's trainers (DPO) take no such argument
        **({"preprocess_logits_for_metrics": preprocess_logits_for_metrics} if preprocess_logits_for_metrics else {}),
        callbacks=[curve, NonFiniteLossCallback(), *budget_callbacks]
        + ([CompileNoticeCallback()] if args.torch_compile else [])
        + ([PushCheckpointsCallback(recipe)] if recipe.hub.push and recipe.hub.hub_strategy == "every_save" else []),
        **trainer_kwargs,
    )
    if budget_callbacks and not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BudgetProgressCallback(budget))
    return trainer, curve


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


class PushCheckpointsCallback(TrainerCallback):
    """``hub.hub_strategy: every_save``: push the folder with its checkpoints at every save, so a
    run can be resumed from the Hub."""

    def __init__(self, recipe):
        self.recipe = recipe

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            push_if_asked(self.recipe, args.output_dir, include_checkpoints=True)


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
