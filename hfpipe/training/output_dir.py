"""Where a run writes, and what it resumes from: decided before any heavy work.

A folder holding a finished run is never overwritten without ``train.overwrite``; a run killed while
saving leaves a checkpoint without its completion marker, which resuming skips; machines that share
no disk are found with a probe file (each then saves into its own folder).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainingArguments

from ..errors import InputError
from ..hub import CHECKPOINT_MARKER as COMPLETE_MARKER  # written last into checkpoint-N/ (and pushed with it)
from ..hub import pull_checkpoint

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


__all__ = ["COMPLETE_MARKER", "distributed_state", "last_complete_checkpoint", "output_dir_is_shared",
           "prepare_evaluation_dir", "prepare_output_dir"]
