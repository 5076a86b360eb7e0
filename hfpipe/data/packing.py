"""Pack tokenized documents into fixed-length blocks (``Dataset.map(batched=True)``).

transformers' ``run_clm`` example (``group_texts``) concatenates a map batch and silently
drops the remainder that does not fill a whole block. hfpipe keeps that layout, because
fixed-length blocks are what span corruption (exactly ``raw_tokens_length`` tokens) and
full-sentence MLM/CLM packing need, but it never drops silently:

- :func:`pack_sequences` (the map function) drops the remainder of each map batch by default
  and logs the count at DEBUG; with ``drop_remainder=False`` it keeps the remainder as a
  shorter last block instead (collators with dynamic padding pad it; span corruption will
  reject it with an InputError naming the length).
- :func:`pack_dataset` runs the map over a whole ``datasets.Dataset`` and returns exact
  totals (:class:`PackingStats`), logging a warning with the number of dropped tokens. On a
  ``datasets.IterableDataset`` (a stream) the totals cannot be known up front: it returns a
  :class:`PackingCounter` that counts them as the stream is read, for the end-of-run report.
  Both paths cut the same blocks in the same order from the same documents (same map batches).

The loss is at most ``block_size - 1`` tokens per map batch: with 1000 documents per batch
and blocks of 512, well under 1% of a typical corpus.

Documents stay apart in a block only by their separator (EOS for causal LM, [SEP] for MLM):
:func:`document_position_ids` turns the separators into ``position_ids`` that restart at 0 at
each document start, which the collators emit with ``document_mask=True`` and from which the
models build a block-diagonal attention mask (as transformers' DataCollatorWithFlattening).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hfpipe.errors import InputError

__all__ = ["PackingCounter", "PackingStats", "document_position_ids", "pack_dataset", "pack_sequences"]

logger = logging.getLogger(__name__)


def input_id_rows(examples: Sequence[Mapping[str, Any] | Sequence[int]], collator: str) -> list[Sequence[int]]:
    """The token ids of each example given to a collator: a mapping's ``input_ids``, or the ids themselves."""
    rows = []
    for i, example in enumerate(examples):
        row = example.get("input_ids") if isinstance(example, Mapping) else example
        if row is None:
            raise InputError(f"{collator}: example {i} has no 'input_ids' (keys: {sorted(example)})")
        rows.append(row)
    return rows


def fixed_length_rows(examples: Sequence[Mapping[str, Any] | Sequence[int]], length: int, collator: str,
                      why: str) -> np.ndarray:
    """(B, length) int64 token ids of blocks that must be exactly ``length`` long (T5's and UL2's raw
    blocks, sized so that corruption gives their exact lengths); ``why`` says where the length comes from."""
    rows = input_id_rows(examples, collator)
    for i, row in enumerate(rows):
        if len(row) != length:
            raise InputError(f"{collator} example {i}: input_ids holds {len(row)} tokens, expected exactly {length} "
                             f"({why}); pack the corpus into blocks of that size")
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), length)


def _check_block_size(block_size: int) -> None:
    if not isinstance(block_size, int) or block_size < 1:
        raise InputError(f"block_size: expected a positive integer, got {block_size!r}")


def document_separator(tokenizer: Any, attribute: str) -> int:
    """The id that ends each packed document, the tokenizer's ``attribute`` (``sep_token_id`` for BERT's
    blocks, ``eos_token_id`` for GPT's and T5's), or one error line when it has none."""
    separator = getattr(tokenizer, attribute)
    if separator is None:
        raise InputError(f"document_mask: {type(tokenizer).__name__} has no {attribute}; give document_separator_id")
    return separator


def document_position_ids(input_ids, separator_id: int):
    """input_ids (B, T) of packed blocks -> position_ids (B, T) restarting at 0 after each separator.

    A separator ends its document (it belongs to the document before it), so the token after it
    starts the next one at position 0; a block's first token is at 0 too, whatever document it
    continues. The models read a restart as a document boundary (hfpipe.models.attention_patterns).
    """
    import torch

    input_ids = torch.as_tensor(input_ids)
    length = input_ids.shape[-1]
    positions = torch.arange(length, device=input_ids.device).expand_as(input_ids)  # (B, T)
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[..., 0] = True
    starts[..., 1:] = input_ids[..., :-1] == separator_id
    # position of the latest document start at or before each token
    latest_start = torch.where(starts, positions, 0).cummax(dim=-1).values
    return positions - latest_start


def pack_sequences(
    batch: Mapping[str, Sequence[Sequence[int]]],
    block_size: int,
    eos_token_id: int | None = None,
    column: str = "input_ids",
    drop_remainder: bool = True,
) -> dict[str, Any]:
    """Concatenate the batch's documents (each followed by ``eos_token_id`` when given) and cut blocks.

    Returns ``{column: blocks}``: an int64 array (num_blocks, block_size), or, when
    ``drop_remainder=False`` and a remainder exists, a list of rows whose last one is shorter.
    Other columns are not carried (their rows no longer line up with documents): pass
    ``remove_columns=dataset.column_names`` to ``map``.
    """
    _check_block_size(block_size)
    if column not in batch:
        raise InputError(f"packing: the dataset has no column {column!r} (columns: {sorted(batch)})")
    documents = batch[column]
    eos = [] if eos_token_id is None else [eos_token_id]
    num_tokens = sum(len(document) for document in documents) + len(eos) * len(documents)
    stream = np.fromiter(
        itertools.chain.from_iterable(itertools.chain(document, eos) for document in documents),
        dtype=np.int64,
        count=num_tokens,
    )
    num_blocks, remainder = divmod(num_tokens, block_size)
    blocks = stream[: num_blocks * block_size].reshape(num_blocks, block_size)
    if remainder and not drop_remainder:
        return {column: [*blocks, stream[num_blocks * block_size :]]}
    if remainder:
        logger.debug("packing: dropped the last %d of %d tokens of a map batch", remainder, num_tokens)
    return {column: blocks}


@dataclasses.dataclass(frozen=True)
class PackingStats:
    """Totals of one :func:`pack_dataset` call; token counts include the EOS separators."""

    num_documents: int
    num_tokens: int
    num_blocks: int
    num_dropped_tokens: int

    @property
    def dropped_fraction(self) -> float:
        return self.num_dropped_tokens / self.num_tokens if self.num_tokens else 0.0


@dataclasses.dataclass
class PackingCounter:
    """Running totals of a streamed packing (same fields as :class:`PackingStats`); also the
    ``IterableDataset.map`` function that packs each batch and counts it as the stream is read."""

    block_size: int
    eos_token_id: int | None = None
    column: str = "input_ids"
    drop_remainder: bool = True
    num_documents: int = 0
    num_tokens: int = 0
    num_blocks: int = 0
    num_dropped_tokens: int = 0

    def __deepcopy__(self, memo: dict) -> PackingCounter:
        return self  # datasets copies map functions when it iterates; the counts must stay shared

    def __call__(self, batch: Mapping[str, Sequence[Sequence[int]]]) -> dict[str, Any]:
        packed = pack_sequences(batch, self.block_size, self.eos_token_id, self.column, self.drop_remainder)
        blocks = packed[self.column]
        documents = batch[self.column]
        tokens = sum(len(d) for d in documents) + (0 if self.eos_token_id is None else len(documents))
        self.num_documents += len(documents)
        self.num_tokens += tokens
        self.num_blocks += len(blocks)
        self.num_dropped_tokens += tokens - sum(len(b) for b in blocks)
        return packed

    @property
    def dropped_fraction(self) -> float:
        return self.num_dropped_tokens / self.num_tokens if self.num_tokens else 0.0

    def stats(self) -> PackingStats:
        return PackingStats(self.num_documents, self.num_tokens, self.num_blocks, self.num_dropped_tokens)

    def state(self) -> dict[str, int]:
        """The four counts (JSON), for a checkpoint; `load_state` restores them."""
        return dataclasses.asdict(self.stats())

    def load_state(self, state: Mapping[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


def pack_dataset(
    dataset: Any,
    block_size: int,
    eos_token_id: int | None = None,
    column: str = "input_ids",
    drop_remainder: bool = True,
    **map_kwargs: Any,
) -> tuple[Any, PackingStats]:
    """Pack a ``datasets.Dataset`` with :func:`pack_sequences`; returns (blocks dataset, stats).

    On a ``datasets.IterableDataset`` returns (blocks stream, :class:`PackingCounter`), the counts
    growing as the stream is read.

    ``map_kwargs`` go to ``Dataset.map`` (``batch_size``, ``num_proc``, ``desc``, ...). The
    dropped-token count is exact: input tokens are counted with Arrow, output tokens from
    the blocks.
    """
    import pyarrow.compute as pc

    _check_block_size(block_size)
    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):
        counter = PackingCounter(block_size, eos_token_id, column, drop_remainder)
        map_kwargs.pop("desc", None)  # IterableDataset.map takes no progress-bar description
        map_kwargs.pop("num_proc", None)  # a stream is mapped lazily, in the process that reads it
        columns = dataset.column_names
        if columns is not None and column not in columns:
            raise InputError(f"packing: the dataset has no column {column!r} (columns: {columns})")
        packed = dataset.map(counter, batched=True, remove_columns=columns or [column], **map_kwargs)
        return packed, counter
    if column not in dataset.column_names:
        raise InputError(f"packing: the dataset has no column {column!r} (columns: {dataset.column_names})")
    packed = dataset.map(
        pack_sequences,
        batched=True,
        remove_columns=dataset.column_names,
        fn_kwargs={"block_size": block_size, "eos_token_id": eos_token_id, "column": column,
                   "drop_remainder": drop_remainder},
        **map_kwargs,
    )
    lengths_in = pc.list_value_length(dataset.with_format("arrow")[column])
    lengths_out = pc.list_value_length(packed.with_format("arrow")[column])
    num_tokens = int(pc.sum(lengths_in).as_py() or 0) + (0 if eos_token_id is None else len(dataset))
    stats = PackingStats(
        num_documents=len(dataset),
        num_tokens=num_tokens,
        num_blocks=len(packed),
        num_dropped_tokens=num_tokens - int(pc.sum(lengths_out).as_py() or 0),
    )
    if stats.num_dropped_tokens:
        logger.warning(
            "packing into blocks of %d dropped %d of %d tokens (%.3f%%): the remainder of each map batch",
            block_size, stats.num_dropped_tokens, stats.num_tokens, 100 * stats.dropped_fraction,
        )
    return packed, stats
