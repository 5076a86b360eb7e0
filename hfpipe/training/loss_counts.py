"""The counts transformers' Trainer does not give hfpipe's heads (see "The loss contract" in
hfpipe/models/blocks.py).

Trainer counts only ``labels != -100``. HfpipeTrainer adds, through these functions:

- extractive QA (``start_positions``, no ``labels``): the examples of the optimizer step, as
  ``num_items_in_batch``, so the loss is exact whatever the micro-batch sizes;
- MLM + NSP/SOP: the labelled sentence pairs of the optimizer step, passed to the model as
  ``num_sequences_in_batch`` next to Trainer's token count;
- ELECTRA: the non-padding tokens of the optimizer step (what its discriminator scores), passed as
  ``num_tokens_in_batch`` to a model whose forward takes it.

Each count goes through Trainer's own ``_get_num_items_in_batch`` (the ``count`` argument below), so
processes are gathered (``average_tokens_across_devices``) exactly as for its token count.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def unwrapped_model(trainer):
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


def declares_loss_contract(trainer) -> bool:
    """A model that declares the contract divides by the count of every process, which Trainer's
    averaging across devices provides (and then multiplies the loss back by the process count).
    hfpipe turns that averaging off for other models (trainer.training_arguments): one returning a
    per-process mean would see its loss multiplied."""
    return getattr(unwrapped_model(trainer), "accepts_loss_kwargs", None) is True


def answer_targets(trainer, batch_samples) -> list | None:
    """The start positions to count for extractive QA (no ``labels``), else None (Trainer's count)."""
    if (
        batch_samples
        and trainer.model_accepts_loss_kwargs
        and trainer.compute_loss_func is None
        and "labels" not in batch_samples[0]
        and "start_positions" in batch_samples[0]
    ):
        return [batch["start_positions"] for batch in batch_samples]
    return None


def add_pair_and_token_counts(trainer, batch_samples, num_items_in_batch, device, count: Callable) -> None:
    """Give each micro-batch the optimizer step's sentence-pair count and token count, where the
    model's forward takes them. ``count(targets, device)`` is Trainer's gathered count of entries
    != -100 (None where the release has none)."""
    if num_items_in_batch is None or not batch_samples or trainer.args.n_gpu > 1:
        # no count: Trainer divides the loss itself; DataParallel would split the count with the batch
        return
    parameters = inspect.signature(unwrapped_model(trainer).forward).parameters
    if "next_sentence_label" in batch_samples[0] and "num_sequences_in_batch" in parameters:
        pairs = count([batch["next_sentence_label"] for batch in batch_samples], device)
        for batch in batch_samples if pairs is not None else ():
            batch["num_sequences_in_batch"] = pairs
    if "attention_mask" in batch_samples[0] and "num_tokens_in_batch" in parameters:
        # padding (0) -> -100, so that Trainer's count of entries != -100 counts the tokens
        tokens = count([batch["attention_mask"].long() * 101 - 100 for batch in batch_samples], device)
        for batch in batch_samples if tokens is not None else ():
            batch["num_tokens_in_batch"] = tokens
