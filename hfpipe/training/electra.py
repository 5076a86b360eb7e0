"""The Trainer of ELECTRA's generator + discriminator pair (hfpipe/objectives/electra.py)."""

from __future__ import annotations

from pathlib import Path

from .trainer import HfpipeTrainer


class ElectraTrainer(HfpipeTrainer):
    """Trainer for ELECTRA's pair (models/electra.py): logs the generator and discriminator losses
    apart, writes the tokenizer beside the generator too, and resumes both parts from a checkpoint
    (whose folder holds the discriminator and generator/, not one state dict of the pair)."""

    _electra_sums = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            if self._electra_sums is None:  # the first micro-batch since the last log
                self._electra_sums = {"generator_loss": 0.0, "discriminator_loss": 0.0}
                self._electra_first_step = self.state.global_step
            for key in self._electra_sums:  # each micro-batch's share of its optimizer step's loss
                self._electra_sums[key] = self._electra_sums[key] + outputs[key].detach()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._electra_sums is not None:
            steps = max(self.state.global_step - self._electra_first_step, 1)  # optimizer steps since the last log
            for key, total in self._electra_sums.items():
                logs[key] = round(float(total) / steps, 4)
            self._electra_sums = None
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # the two scalar losses do not concatenate over batches; electra_metrics has the per-token outputs
        ignore = [*(ignore_keys or []), "generator_loss", "discriminator_loss"]
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        from ..models.electra import GENERATOR_FOLDER

        if self.args.should_save and self.processing_class is not None:
            self.processing_class.save_pretrained(Path(output_dir or self.args.output_dir) / GENERATOR_FOLDER)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self.accelerator.unwrap_model(model or self.model).load_saved(resume_from_checkpoint)

    def _load_best_model(self):
        self.accelerator.unwrap_model(self.model).load_saved(self.state.best_model_checkpoint)
