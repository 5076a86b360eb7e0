"""The counts transformers' Trainer does not give hfpipe's heads (see "The loss contract" in
hfpipe/models/blocks.py).

Trainer counts only ``labels != -100``. Mixed into every Trainer hfpipe builds, this adds:

- extractive QA (``start_positions``, no ``labels``): the examples of the optimizer step, as
  ``num_items_in_batch``, so the loss is exact whatever the micro-batch sizes;
- MLM + NSP/SOP: the labelled sentence pairs of the optimizer step, passed to the model as
  ``num_sequences_in_batch`` next to Trainer's token count;
- ELECTRA: the non-padding tokens of the optimizer step (what its discriminator scores), passed as
  ``num_tokens_in_batch`` to a model whose forward takes it.

Each count goes through Trainer's own ``_get_num_items_in_batch``, so processes are gathered
(``average_tokens_across_devices``) exactly as for its token count.
"""

from __future__ import annotations

import inspect


def _unwrapped(trainer):
    model = trainer.accelerator.unwrap_model(trainer.model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft


class LossCountsMixin:
    """For ``type(name, (LossCountsMixin, Trainer), {})``: see the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(_unwrapped(self), "accepts_loss_kwargs", None) is True:
            # A model that declares the contract divides by the count of every process, which
            # Trainer's averaging across devices provides (and then multiplies the loss back by
            # the process count). hfpipe turns it off for other models (train.training_arguments):
            # one returning a per-process mean would see its loss multiplied.
            self.args.average_tokens_across_devices = True

    def _count(self, targets, device):
        """Trainer's count (gathered as it gathers) of the entries != -100 of ``targets``; None
        where this transformers release has no ``_get_num_items_in_batch``."""
        count = getattr(super(), "_get_num_items_in_batch", None)
        return count([{"labels": target} for target in targets], device) if count else None

    def _get_num_items_in_batch(self, batch_samples, device):
        if (
            batch_samples
            and self.model_accepts_loss_kwargs
            and self.compute_loss_func is None
            and "labels" not in batch_samples[0]
            and "start_positions" in batch_samples[0]
        ):
            return self._count([batch["start_positions"] for batch in batch_samples], device)
        return super()._get_num_items_in_batch(batch_samples, device)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if (
            num_items_in_batch is not None  # the loss counts as normalised: Trainer will not divide it
            and batch_samples
            and "next_sentence_label" in batch_samples[0]
            and self.args.n_gpu <= 1  # DataParallel would split the count along with the batch
            and "num_sequences_in_batch" in inspect.signature(_unwrapped(self).forward).parameters
        ):
            count = self._count([batch["next_sentence_label"] for batch in batch_samples], device)
            for batch in batch_samples if count is not None else ():
                batch["num_sequences_in_batch"] = count
        if (
            num_items_in_batch is not None
            and batch_samples
            and "attention_mask" in batch_samples[0]
            and self.args.n_gpu <= 1
            and "num_tokens_in_batch" in inspect.signature(_unwrapped(self).forward).parameters
        ):
            # padding (0) -> -100, so that Trainer's count of entries != -100 counts the tokens
            count = self._count([batch["attention_mask"].long() * 101 - 100 for batch in batch_samples], device)
            for batch in batch_samples if count is not None else ():
                batch["num_tokens_in_batch"] = count
        return batch_samples, num_items_in_batch
