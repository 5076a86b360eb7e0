"""HfpipeTrainer: transformers' Trainer with what hfpipe's runs need, and the function that builds it.

Trainer (on Accelerate) runs the loop, mixed precision, gradient accumulation, checkpoints, rotation
and resuming. HfpipeTrainer adds, each from its own module:
- checkpoints marked complete once every process has written its part (output_dir.py), so resuming
  never starts from a half-written one;
- the stream's position inside every checkpoint (data/streaming.py);
- the loss counts Trainer does not make for hfpipe's heads (loss_counts.py);
- a learning-rate schedule over a wall-clock budget (budget.py);
- the final evaluation's output kept, so results and predictions need no second pass;
build_trainer adds the callbacks: loss.png (loss_curve.py), the non-finite-loss stop, the compile
notice and Hub pushes (callbacks.py). What a finished run writes is results.py's.

Trainer's private methods overridden here, all checked against transformers 5.19 (the floor) to 5.25:

| method | why |
|---|---|
| ``_save_checkpoint`` | write the stream position and the completion marker into checkpoint-N/ after Trainer's save |
| ``_get_num_items_in_batch`` | count extractive QA's examples (``start_positions``), which Trainer does not |
| ``evaluation_loop`` (public name, internal loop) | keep the last evaluation's output for ``evaluate_once`` |

ElectraTrainer (training/electra.py), for ELECTRA's pair of models saved as two folders:

| method | why |
|---|---|
| ``_save`` | the tokenizer written beside the generator too |
| ``_load_from_checkpoint``, ``_load_best_model`` | a checkpoint holds the discriminator and generator/, not one state dict |

Public methods overridden: ``get_train_dataloader`` (a ResumableStream is read unsharded),
``create_scheduler`` (the budget's schedule), ``get_batch_samples`` (pair and token counts); in
ElectraTrainer ``compute_loss``, ``log`` and ``prediction_step`` (the two losses logged apart).
HfpipeSeq2SeqTrainer (here) and HfpipeDPOTrainer (training/dpo.py) put HfpipeTrainer on transformers'
Seq2SeqTrainer and trl's DPOTrainer, and override nothing more.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Seq2SeqTrainer, Trainer, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from ..data.streaming import ResumableStream, save_stream_position, stream_loader
from . import loss_counts
from .budget import BudgetProgressCallback, BudgetSchedule, TimeBudget, TimeBudgetCallback, parse_duration
from .callbacks import CompileNoticeCallback, NonFiniteLossCallback, PushCheckpointsCallback
from .loss_curve import LossCurveCallback
from .output_dir import COMPLETE_MARKER, output_dir_is_shared

logger = logging.getLogger("hfpipe")


class HfpipeTrainer(Trainer):
    """transformers' Trainer for hfpipe's runs (see the module docstring). ``budget``: a learning-rate
    schedule over a time budget instead of over max_steps; the trainer then stops when it is spent
    and draws its progress bar over it."""

    last_evaluation = None  # (global step, dataset, EvalLoopOutput)

    def __init__(self, *args, budget: BudgetSchedule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget
        if budget is not None:
            self.add_callback(TimeBudgetCallback(budget.budget))
            if not self.args.disable_tqdm:
                self.remove_callback(ProgressCallback)
                self.add_callback(BudgetProgressCallback(budget.budget))
        if loss_counts.declares_loss_contract(self):
            self.args.average_tokens_across_devices = True

    # ------------------------------------------------------------------ checkpoints and saving
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        if isinstance(self.train_dataset, ResumableStream):
            save_stream_position(self.train_dataset, folder, self.state.global_step, self.args)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            (folder / COMPLETE_MARKER).write_text(f"{self.state.global_step}\n")

    # ------------------------------------------------------------------ data, counts and schedule
    def get_train_dataloader(self):
        if isinstance(self.train_dataset, ResumableStream):
            return stream_loader(self, self.train_dataset)
        return super().get_train_dataloader()

    def _count_entries(self, targets, device):
        """Trainer's count (gathered as it gathers) of the entries != -100 of ``targets``."""
        return super()._get_num_items_in_batch([{"labels": target} for target in targets], device)

    def _get_num_items_in_batch(self, batch_samples, device):
        answers = loss_counts.answer_targets(self, batch_samples)
        if answers is not None:
            return self._count_entries(answers, device)
        return super()._get_num_items_in_batch(batch_samples, device)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        loss_counts.add_pair_and_token_counts(self, batch_samples, num_items_in_batch, device, self._count_entries)
        return batch_samples, num_items_in_batch

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.budget is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = self.budget.scheduler(optimizer or self.optimizer)
        return self.lr_scheduler

    # ------------------------------------------------------------------ evaluation
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


class HfpipeSeq2SeqTrainer(HfpipeTrainer, Seq2SeqTrainer):
    """HfpipeTrainer on transformers' Seq2SeqTrainer (evaluation by generation: generative QA, SFT)."""


def _follows_the_caller_when_saving(model) -> bool:
    """Whether save_pretrained writes wherever Trainer asks: peft's adapters, hfpipe's models (their
    own should_save_on_this_rank), and every model before transformers 5.24."""
    if hasattr(model, "get_base_model"):
        return True  # peft saves on is_main_process
    narrowed = getattr(PreTrainedModel, "should_save_on_this_rank", None)
    return narrowed is None or getattr(type(model), "should_save_on_this_rank", None) is not narrowed


def _same_rows(evaluated, dataset) -> bool:
    """Whether Trainer's evaluation dataset (possibly wrapped by the dataloader) is ``dataset``."""
    return evaluated is dataset or getattr(evaluated, "dataset", None) is dataset


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
                  compute_metrics=None, preprocess_logits_for_metrics=None, trainer_class=HfpipeTrainer,
                  args_class=TrainingArguments, extra_args=None, **trainer_kwargs) -> tuple[HfpipeTrainer, LossCurveCallback]:
    """``trainer_class`` (HfpipeTrainer or a subclass) on the recipe's arguments, with hfpipe's callbacks."""
    args = training_arguments(recipe, eval_dataset is not None, args_class, **(extra_args or {}))
    if args.save_on_each_node and args.world_size > 1 and not _follows_the_caller_when_saving(model):
        logger.warning("%s is not an hfpipe model: transformers >= 5.24 writes its weights on the first machine "
                       "only, so the other machines' folders get no weights; give every machine the same "
                       "output folder (a shared disk) to resume anywhere", type(model).__name__)
    curve = LossCurveCallback(args.output_dir)
    budget = None
    if recipe.train.time_budget is not None:
        budget = BudgetSchedule(TimeBudget(parse_duration(recipe.train.time_budget)), recipe.train.warmup_ratio,
                                recipe.train.lr_scheduler_type,
                                (recipe.train.lr_scheduler_kwargs or {}).get("min_lr_rate", 0.0))
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
        callbacks=[curve, NonFiniteLossCallback()]
        + ([CompileNoticeCallback()] if args.torch_compile else [])
        + ([PushCheckpointsCallback(recipe)] if recipe.hub.push and recipe.hub.hub_strategy == "every_save" else []),
        budget=budget,
        **trainer_kwargs,
    )
    return trainer, curve


__all__ = ["HfpipeSeq2SeqTrainer", "HfpipeTrainer", "build_trainer", "training_arguments"]
