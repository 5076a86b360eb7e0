"""Training on a wall-clock budget, as Cramming does (Geiping & Goldstein 2022).

With ``train.time_budget`` a run stops when its time is spent, not after a step count, and the
learning-rate schedule is a function of the budget's spent fraction rather than of the step: the
warm-up and the decay to zero fit the budget whatever the machine's speed. ``max_steps`` stays an
upper bound.

transformers has a step-based scheduler only and no clock (its ``max_steps`` and schedules are in
steps), hence this module: a ``TimeBudget`` (the clock), a LambdaLR factor that reads it, and a
callback that keeps every process on the same fraction, stops all of them at the same step and
carries the spent time across a resume (in the checkpoint's trainer_state.json).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

logger = logging.getLogger("hfpipe.budget")

STATE_KEY = "TimeBudget"  # its entry in TrainerState.stateful_callbacks, saved with every checkpoint
SCHEDULES = ("linear", "cosine", "cosine_with_min_lr", "constant")


class TimeBudget:
    """``seconds`` of training; ``spent`` counts from ``start()`` plus what a resumed run had spent.

    ``fraction`` is the value the schedule reads: it changes only when ``update`` is called (once
    per optimizer step, by the callback), so every process and every read within a step agree.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic, spent_before: float = 0.0):
        if not seconds > 0:
            raise ValueError(f"a time budget must be positive, got {seconds!r} s")
        self.seconds = float(seconds)
        self.clock = clock
        self.spent_before = float(spent_before)
        self.started_at: float | None = None
        self.fraction = min(1.0, self.spent_before / self.seconds)

    def start(self) -> None:
        self.started_at = self.clock()

    def restore(self, spent_seconds: float) -> None:
        """Continue a resumed run: ``spent_seconds`` were spent before, the clock restarts now."""
        self.spent_before = spent_seconds
        self.fraction = min(1.0, spent_seconds / self.seconds)
        self.start()

    @property
    def spent(self) -> float:
        running = 0.0 if self.started_at is None else self.clock() - self.started_at
        return self.spent_before + running

    def update(self, fraction: float | None = None) -> float:
        """Advance ``fraction`` to the clock's (or to ``fraction``, a value agreed between processes)."""
        self.fraction = min(1.0, self.spent / self.seconds) if fraction is None else min(1.0, fraction)
        return self.fraction


def lr_factor(budget: TimeBudget, warmup_fraction: float, schedule: str = "linear",
              min_lr_rate: float = 0.0) -> Callable[[int], float]:
    """A ``LambdaLR`` factor over the budget's spent fraction f (the step argument is ignored):
    linear warm-up to 1 over ``warmup_fraction`` of the budget, then ``schedule`` down to 0 at f = 1
    (Cramming's one-cycle is ``linear``); ``cosine_with_min_lr`` ends at ``min_lr_rate`` instead, as
    transformers' schedule of that name does over steps."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")

    def factor(_step: int) -> float:
        f = budget.fraction
        if f < warmup_fraction:
            return f / warmup_fraction
        if schedule == "constant":
            return 1.0
        progress = (f - warmup_fraction) / (1 - warmup_fraction)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "cosine_with_min_lr":
            return min_lr_rate + (1 - min_lr_rate) * 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)

    return factor


class TimeBudgetCallback(TrainerCallback):
    """Moves the budget's fraction once per step, the same on every process, and stops training
    on all of them at the step that spends the budget; writes the spent time into checkpoints."""

    def __init__(self, budget: TimeBudget):
        self.budget = budget

    def on_train_begin(self, args, state, control, **kwargs):
        self.restored = False
        self.budget.start()

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.restored:
            # Trainer loads a resumed run's state after on_train_begin: the spent time is read here
            saved = state.stateful_callbacks.get(STATE_KEY)
            if saved:
                self.budget.restore(float(saved["spent_seconds"]))
            self.restored = True

    def on_optimizer_step(self, args, state, control, **kwargs):
        # after the optimizer's step and before the scheduler's: the next step's rate is the
        # schedule at the time spent so far
        fraction = self.budget.update()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # clocks differ between processes: the main process's fraction is everyone's, so
            # learning rates stay equal and all processes stop at the same step (no hang)
            agreed = torch.tensor([fraction], dtype=torch.float64, device=_collective_device())
            torch.distributed.broadcast(agreed, src=0)
            self.budget.update(agreed.item())

    def on_step_end(self, args, state, control, **kwargs):
        # before any checkpoint of this step is written: the time of the step (the agreed fraction)
        state.stateful_callbacks[STATE_KEY] = {"spent_seconds": self.budget.fraction * self.budget.seconds,
                                               "budget_seconds": self.budget.seconds}
        if self.budget.fraction >= 1.0:
            control.should_training_stop = True
        return control


class BudgetProgressCallback(ProgressCallback):
    """Trainer's progress bar, drawn over the budget instead of over ``max_steps`` (a budgeted run's
    max_steps is only an upper bound, often 1,000,000): seconds spent of the budget, the steps so far
    and their rate. Says so when the budget, not the step count, ends the run."""

    def __init__(self, budget: TimeBudget):
        super().__init__()
        self.budget = budget

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=round(self.budget.seconds), unit="s", dynamic_ncols=True,
                                     bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of the time budget{postfix}")
        self.current_step = 0
        self.first_step = None

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None:
            return
        spent = min(self.budget.fraction, 1.0) * self.budget.seconds
        if self.first_step is None:
            self.first_step = (state.global_step, spent)  # a resumed run's rate counts from here
        steps, seconds = state.global_step - self.first_step[0], spent - self.first_step[1]
        rate = f", {steps / seconds:.2f} steps/s" if steps and seconds > 0 else ""
        self.training_bar.set_postfix_str(f"step {state.global_step}{rate}", refresh=False)
        self.training_bar.update(max(0.0, spent - self.training_bar.n))
        self.current_step = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None
            if self.budget.fraction >= 1.0:
                logger.info("time budget of %s spent: stopped after %d optimizer steps (train.max_steps %d not "
                            "reached)", _duration(self.budget.seconds), state.global_step, state.max_steps)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``1800``, ``"1800s"``, ``"30m"``, ``"1.5h"`` or ``"1h30m"``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    rest, total = str(text).strip().lower(), 0.0
    if not rest:
        raise ValueError("a duration such as 30m, 1.5h or 1800s")
    try:
        return float(rest)
    except ValueError:
        pass
    number = ""
    for char in rest:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise ValueError(f"a duration such as 30m, 1.5h or 1800s, got {text!r}")
    if number:
        raise ValueError(f"a duration such as 30m, 1.5h or 1800s, got {text!r} (a number without its unit)")
    return total


@dataclass(frozen=True)
class BudgetSchedule:
    """A time budget and the learning-rate schedule that runs over it: HfpipeTrainer builds its
    scheduler from this instead of from max_steps, and adds the budget's callbacks."""

    budget: TimeBudget
    warmup_fraction: float
    schedule: str = "linear"
    min_lr_rate: float = 0.0

    def scheduler(self, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_factor(self.budget, self.warmup_fraction, self.schedule, self.min_lr_rate))
