"""Training on a stream: a position that travels in checkpoints, one part of the stream per process.

    stream = split_for_this_process(documents)               # datasets.distributed.split_dataset_by_node
    examples = ResumableStream(tokenized_and_packed, batch_size=8, counters={"packing": counter})
    HfpipeTrainer(train_dataset=examples, ...)               # writes stream-<rank>.json into checkpoint-N/

Why not Trainer alone: on resume Trainer fast-forwards an IterableDataset by reading (and
tokenizing, packing, collating) every batch it already trained on, which on C4 means hours, and
it starts a new epoch when the stream ends, which its resume arithmetic (global_step //
max_steps) does not know about. Here:

- the stream repeats itself (epoch after epoch, ``set_epoch``) so Trainer sees one endless epoch;
- the position is datasets' own ``IterableDataset.state_dict()``, snapshot at every batch
  boundary as the examples are yielded, so the checkpoint gets the state after exactly the batches
  the optimizer consumed (accelerate reads one batch ahead; Trainer reads a whole accumulation
  step ahead: a state read at save time would be ahead of the weights);
- on resume the state is loaded and Trainer's own skipping is turned off (``ignore_data_skip``);
- each process reads its own part (``split_dataset_by_node``: whole files when the number of
  shards divides by the number of processes, else every n-th example), so HfpipeTrainer
  keeps accelerate from sharding the stream a second time (``stream_loader``).

The snapshots live in the process that iterates the stream: with ``dataloader_num_workers > 0``
the stream is read in worker processes, no state can be taken, and resuming falls back to
Trainer's skipping (exact too, since the stream is one endless epoch; just slower).
"""

from __future__ import annotations

import collections
import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from datasets import IterableDataset

from hfpipe.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["ResumableStream", "process_rank_and_count", "split_for_this_process", "save_stream_position", "stream_loader",
           "stream_state_path"]

STATE_FILE = "stream-{rank}.json"


def stream_state_path(checkpoint: str | Path, rank: int) -> Path:
    return Path(checkpoint) / STATE_FILE.format(rank=rank)


def process_rank_and_count() -> tuple[int, int]:
    """(this process's rank, number of processes), from the launcher's environment (accelerate launch,
    torchrun). Not PartialState(): before TrainingArguments sets use_cpu, a CPU machine's PartialState
    reports a single process."""
    import os

    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def split_for_this_process(dataset: IterableDataset) -> IterableDataset:
    """This process's part of `dataset` (all of it in a single process)."""
    from datasets.distributed import split_dataset_by_node

    rank, count = process_rank_and_count()
    if count == 1:
        return dataset
    if dataset.n_shards % count:
        logger.warning("the stream has %d shards, not a multiple of %d processes: each process reads every "
                       "shard and keeps every %d-th example (give a multiple of %d files to read disjoint files)",
                       dataset.n_shards, count, count, count)
    return split_dataset_by_node(dataset, rank=rank, world_size=count)


class ResumableStream(torch.utils.data.IterableDataset):
    """An endless torch view of a ``datasets.IterableDataset`` whose position can be saved per batch.

    ``batch_size``: examples per DataLoader batch of this process. ``counters``: objects with
    ``state()`` / ``load_state()`` (e.g. packing counts) saved and restored with the position.
    ``state_after(n)`` is the position after the first ``n`` batches yielded in this run (or
    since the loaded state); the last ``history`` batch boundaries are kept.
    """

    def __init__(self, dataset: IterableDataset, batch_size: int, counters: dict[str, Any] | None = None,
                 history: int = 64) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.counters = counters or {}
        self.epoch = 0
        self.batches = 0  # batch boundaries passed since the start (or the loaded state)
        self._snapshots: collections.deque = collections.deque(maxlen=history)
        self._resumed_from: dict | None = None
        self.tracking = True

    def _snapshot(self) -> dict:
        return {"dataset": self.dataset.state_dict(), "epoch": self.epoch, "batches": self.batches,
                "counters": {name: c.state() for name, c in self.counters.items()}}

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            self.tracking = False  # a worker's copy: its snapshots never reach the main process
        if self._resumed_from is None:
            self.dataset.set_epoch(self.epoch)
        in_batch = 0
        while True:
            yielded = 0
            for example in self.dataset:
                yielded += 1
                in_batch += 1
                if in_batch == self.batch_size:
                    in_batch = 0
                    self.batches += 1
                    if self.tracking:
                        # deepcopy: datasets updates its state dict in place as it reads on
                        self._snapshots.append(copy.deepcopy(self._snapshot()))
                yield example
            if yielded == 0:
                raise InputError("data: the training stream yielded no examples (for this process); expected "
                                 "more text than one block, or fewer processes")
            self.epoch += 1
            # a new epoch number also stops datasets from re-applying a loaded starting state
            self.dataset.set_epoch(self.epoch)
            logger.info("the training stream ended; starting pass %d over it", self.epoch + 1)

    def state_after(self, num_batches: int) -> dict | None:
        """The position after `num_batches` batches, or None when it is no longer (or not) kept."""
        for snapshot in reversed(self._snapshots):
            if snapshot["batches"] == num_batches:
                return snapshot
        if num_batches == 0 and not self._snapshots:
            return self._resumed_from
        return None

    def load_state(self, state: dict) -> None:
        self.dataset.load_state_dict(state["dataset"])
        self.epoch = int(state["epoch"])
        self.dataset.set_epoch(self.epoch)
        self.batches = int(state["batches"])
        for name, values in state.get("counters", {}).items():
            if name in self.counters:
                self.counters[name].load_state(values)
        self._resumed_from = state


def stream_loader(trainer, stream: ResumableStream):
    """The train DataLoader of a ResumableStream, left unsharded (it is already this process's part).
    HfpipeTrainer.get_train_dataloader returns it."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    args = trainer.args
    # Its own generator: a DataLoader iterator otherwise draws its base seed from torch's global
    # RNG, and a resumed run (RNG restored before the iterator exists) would draw dropout differently.
    loader = DataLoader(stream, batch_size=trainer._train_batch_size, collate_fn=trainer.data_collator,
                        generator=torch.Generator().manual_seed(args.seed),
                        num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
                        persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0)
    # num_processes=1: accelerate would otherwise shard (or dispatch) the stream again
    # across processes, on top of split_dataset_by_node.
    return prepare_data_loader(loader, device=args.device, num_processes=1, process_index=0,
                               put_on_device=True, dispatch_batches=False)


def save_stream_position(stream: ResumableStream, checkpoint: Path, global_step: int, args) -> None:
    """Write stream-<rank>.json into ``checkpoint``: the stream's position after the batches the
    optimizer consumed by ``global_step``. HfpipeTrainer._save_checkpoint calls it."""
    consumed = global_step * args.gradient_accumulation_steps
    state = stream.state_after(consumed) if stream.tracking else None
    if state is None:
        logger.warning("no stream position after %d batches was kept; a resume from this checkpoint "
                       "re-reads the stream up to it", consumed)
        return
    checkpoint.mkdir(parents=True, exist_ok=True)
    # with the number of processes: on machines that share no disk, each sees only its own files
    stream_state_path(checkpoint, args.process_index).write_text(json.dumps({**state, "processes": args.world_size}))


def resumable_stream(examples, batch_size: int, counters: dict, resume_from: str | None):
    """Wrap streamed training examples; load their position from the checkpoint when resuming.
    Returns (ResumableStream, TrainingArguments overrides)."""
    stream = ResumableStream(examples, batch_size, counters)
    if not resume_from:
        return stream, {}
    rank, count = process_rank_and_count()
    path = stream_state_path(resume_from, rank)
    state = json.loads(path.read_text()) if path.is_file() else None
    # A machine that shares no disk with the others holds only its own processes' positions: the
    # number of processes that wrote them is in each (older checkpoints: count the files).
    saved = state.get("processes", len(list(Path(resume_from).glob("stream-*.json")))) if state else 0
    if saved != count:
        logger.warning("%s holds the stream positions of %d processes, not this process's of %d; re-reading the "
                       "stream up to the checkpoint", resume_from, saved, count)
        return stream, {}
    stream.load_state(state)
    logger.info("resuming the stream at the position saved in %s (pass %d, batch %d)", path, stream.epoch + 1,
                stream.batches)
    return stream, {"ignore_data_skip": True}  # the position is loaded: Trainer must not skip batches again


def stream_report(stream, consumed_batches: int) -> dict:
    """Counts of the training stream up to the last batch trained on (flat, for train_results.json)."""
    snapshot = stream.state_after(consumed_batches)
    counters = snapshot["counters"] if snapshot else {name: c.state() for name, c in stream.counters.items()}
    report = {"train_stream_passes": (snapshot or {"epoch": stream.epoch})["epoch"] + 1}
    for key, value in counters.get("packing", {}).items():
        report[f"train_packing_{key.removeprefix('num_')}"] = value
    mixture = stream.counters.get("mixture")
    if mixture is not None and "mixture" in counters:
        mixture.load_state(counters["mixture"])
        for name, fraction in mixture.realised().items():
            report[f"train_mixture_{name}"] = round(fraction, 6)
        logger.info("%s", mixture.report())
    return report
