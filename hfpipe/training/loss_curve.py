"""loss.png and loss_history.json: the run's training and evaluation losses, drawn at every save."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


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
