"""The small callbacks every hfpipe run carries: the compile notice, the non-finite-loss stop and
pushing checkpoints to the Hub as they are saved."""

from __future__ import annotations

import logging
import math
import time

import torch
from transformers import TrainerCallback

from ..errors import NonFiniteLossError
from .output_dir import last_complete_checkpoint
from .results import push_if_asked

logger = logging.getLogger("hfpipe")


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


class PushCheckpointsCallback(TrainerCallback):
    """``hub.hub_strategy: every_save``: push the folder with its checkpoints at every save, so a
    run can be resumed from the Hub."""

    def __init__(self, recipe):
        self.recipe = recipe

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            push_if_asked(self.recipe, args.output_dir, include_checkpoints=True)
