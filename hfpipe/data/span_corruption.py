"""T5's span-corruption objective, vectorised over the batch with numpy.

transformers ships no PyTorch span-corruption collator (only a Flax example script), so
hfpipe writes its own, following T5's ``t5/data/preprocessors.py`` exactly:

- :func:`span_corruption_lengths` is T5's ``random_spans_helper``: how many raw tokens to
  feed so that the corrupted inputs fill ``input_length`` without padding, and how long the
  targets then are. (512, .15, 3) -> (568, 114).
- :func:`random_spans_noise_mask` is T5's ``random_spans_noise_mask`` (without the
  optional roll): spans alternate non-noise / noise, starting with non-noise, and every mask
  with the prescribed numbers of noise tokens and spans is equally likely.
- :class:`DataCollatorForSpanCorruption` replaces each noise span by one sentinel in the
  inputs (``<extra_id_0>``, ``<extra_id_1>``, ... counting down from the highest id) and
  writes sentinel + span tokens per span into the targets; EOS ends both.

Example (input_length=8, one noise span ``c d`` and one ``f``)::

    raw      a b c d e f
    inputs   a b <extra_id_0> e <extra_id_1> </s>
    labels   <extra_id_0> c d <extra_id_1> f </s>

With ``document_mask=True`` the raw blocks hold documents separated by EOS (hfpipe.pretrain
packs them so), and each document is corrupted on its own, as if it were a block of its own:
see :class:`DataCollatorForSpanCorruption`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from hfpipe.data.packing import fixed_length_rows
from hfpipe.errors import InputError

# The one shift_right (models and collators alike): it lives with the model files, which travel
# with checkpoints and import nothing from hfpipe; re-exported here for the collators.
from hfpipe.models.attention_patterns import shift_right

__all__ = [
    "DataCollatorForSpanCorruption",
    "noise_span_counts",
    "random_spans_noise_mask",
    "shift_right",
    "span_corruption_lengths",
]


def noise_span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) for a sequence of ``length`` tokens, as T5's mask computes them.

    Python's ``round`` rounds half to even, like ``tf.round`` in T5. Spans are also capped
    at the number of non-noise tokens, which only binds where T5's own mask breaks down.
    """
    num_noise_tokens = round(length * noise_density)
    # T5: avoid degeneracy by ensuring positive numbers of noise and non-noise tokens and spans.
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_noise_spans = max(round(num_noise_tokens / mean_noise_span_length), 1)
    # Every non-noise span needs a token too. T5 lacks this bound and, for noise_density
    # above ~0.5 with short spans, segments its non-noise tokens into fewer spans than asked.
    num_noise_spans = min(num_noise_spans, length - num_noise_tokens)
    return num_noise_tokens, num_noise_spans


def _corrupted_lengths(raw_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(inputs_length, targets_length) that ``raw_length`` raw tokens become, EOS included."""
    num_noise_tokens, num_noise_spans = noise_span_counts(raw_length, noise_density, mean_noise_span_length)
    # inputs: every non-noise token + one sentinel per noise span + EOS;
    # targets: one sentinel per noise span + every noise token + EOS.
    return raw_length - num_noise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1


def _check_noise_arguments(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise InputError(f"noise_density: expected a fraction strictly between 0 and 1, got {noise_density!r}")
    if not mean_noise_span_length >= 1.0:
        raise InputError(f"mean_noise_span_length: expected a number >= 1, got {mean_noise_span_length!r}")


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """T5's ``random_spans_helper``: (raw_tokens_length, targets_length) for a given ``inputs_length``.

    ``raw_tokens_length`` is the largest number of raw tokens whose corrupted inputs (EOS
    included) still fit in ``inputs_length``; ``targets_length`` counts sentinels, noise tokens
    and EOS. (512, .15, 3) -> (568, 114); (128, .15, 3) -> (141, 29); (568, .15, 3) -> (630, 126).

    One deliberate difference: T5's helper counts noise tokens and spans without the
    clipping to >= 1 that its mask applies, so in degenerate settings (fewer than one span)
    its inputs overflowed; here both use :func:`noise_span_counts`, so the lengths are exact.
    They agree whenever ``round(n * noise_density / mean_noise_span_length) >= 1``.
    """
    _check_noise_arguments(noise_density, mean_noise_span_length)
    if inputs_length < 3:
        raise InputError(f"input_length: expected >= 3 (a token, a sentinel and EOS), got {inputs_length}")
    tokens_length = inputs_length - 1
    while _corrupted_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = _corrupted_lengths(tokens_length, noise_density, mean_noise_span_length)
    # T5's "minor hack to get the targets length to be equal to inputs length, which is more
    # likely to have been set to a nice round number".
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator, batch_size: int) -> np.ndarray:
    """Uniformly random compositions of ``num_items`` into ``num_segments`` positive parts.

    Returns int64 (batch_size, num_segments), each row summing to ``num_items``. As T5:
    shuffle ``num_segments - 1`` segment starts among the ``num_items - 1`` gaps.
    """
    is_start = np.zeros((batch_size, num_items - 1), dtype=bool)
    is_start[:, : num_segments - 1] = True
    is_start = rng.permuted(is_start, axis=1)
    # Every row holds exactly num_segments - 1 starts, so the row-major nonzero reshapes.
    starts = np.nonzero(is_start)[1].reshape(batch_size, num_segments - 1) + 1
    bounds = np.concatenate(
        [np.zeros((batch_size, 1), np.int64), starts, np.full((batch_size, 1), num_items, np.int64)], axis=1
    )
    return np.diff(bounds, axis=1)


def random_spans_noise_mask(
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
    rng: np.random.Generator,
    batch_size: int,
) -> np.ndarray:
    """T5's random-spans noise mask for ``batch_size`` sequences at once: bool (batch_size, length).

    Each row holds exactly ``noise_span_counts(length, ...)`` noise tokens in that many noise
    spans; spans alternate non-noise / noise, the first is non-noise; all such masks are
    equally likely.
    """
    _check_noise_arguments(noise_density, mean_noise_span_length)
    if length < 2:
        raise InputError(f"span corruption needs sequences of at least 2 tokens, got {length}")
    num_noise_tokens, num_noise_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, rng, batch_size)
    nonnoise_span_lengths = _random_segmentation(length - num_noise_tokens, num_noise_spans, rng, batch_size)
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=2).reshape(batch_size, -1)
    span_starts = np.cumsum(interleaved, axis=1)[:, :-1]  # (B, 2 * spans - 1), all < length
    span_start_indicator = np.zeros((batch_size, length), dtype=np.int32)
    np.put_along_axis(span_start_indicator, span_starts, 1, axis=1)
    return np.cumsum(span_start_indicator, axis=1) % 2 == 1


def _spans_to_sentinels(tokens: np.ndarray, span_mask: np.ndarray, first_sentinel_id: int) -> np.ndarray:
    """Replace each span of ``span_mask`` by one sentinel, counting down from ``first_sentinel_id``.

    tokens, span_mask: (B, L) with the same number of kept tokens in every row (true for T5
    masks); returns (B, L') where L' = L - masked tokens + spans. T5's
    ``noise_span_to_unique_sentinel``.
    """
    previous_in_span = np.pad(span_mask[:, :-1], ((0, 0), (1, 0)))
    first_in_span = span_mask & ~previous_in_span
    sentinels = first_sentinel_id + 1 - np.cumsum(first_in_span, axis=1)
    kept = np.where(first_in_span, sentinels, tokens)[~(span_mask & previous_in_span)]
    return kept.reshape(tokens.shape[0], -1)


def _sentinel_ids(tokenizer: Any, num_sentinels: int) -> int:
    """The id of ``<extra_id_0>``, after checking the next ``num_sentinels - 1`` count down from it."""
    first = tokenizer.convert_tokens_to_ids("<extra_id_0>")
    for i in range(1, max(num_sentinels, 2)):
        sentinel = tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>")
        if first is None or first == tokenizer.unk_token_id or sentinel != first - i:
            raise InputError(
                f"tokenizer {type(tokenizer).__name__} lacks T5 sentinels: span corruption needs "
                f"<extra_id_0>..<extra_id_{max(num_sentinels, 2) - 1}> on consecutive ids counting down "
                f"from <extra_id_0> (got <extra_id_0>={first}, <extra_id_{i}>={sentinel})"
            )
    return first


def worker_seed(seed: int) -> int:
    """``seed`` offset by the DataLoader worker id, so workers don't repeat each other's masks."""
    worker = torch.utils.data.get_worker_info()
    return seed if worker is None else seed + worker.id


@dataclasses.dataclass
class DataCollatorForSpanCorruption:
    """T5 span corruption as a Trainer data collator.

    Takes examples whose ``input_ids`` hold exactly ``raw_tokens_length`` ids (see
    :func:`span_corruption_lengths`; pack the corpus to that block size) and returns int64
    torch tensors:

    - ``input_ids``, ``attention_mask``: (B, input_length)
    - ``labels``, ``decoder_input_ids``: (B, targets_length); ``decoder_input_ids`` are the
      labels shifted right behind ``decoder_start_token_id`` (default: the pad id, as T5).

    Randomness: with ``seed`` the collator owns a numpy Generator (offset by the DataLoader
    worker id); without it, every batch seeds a fresh Generator from torch's global RNG, so
    ``transformers.set_seed`` / Trainer's seed make runs reproducible, and a resumed run
    (Trainer restores torch's RNG state) draws the same masks as an uninterrupted one.

    ``document_mask=True``: packed documents stay apart, so that a block computes exactly what
    its documents compute one by one. The raw block (still ``raw_tokens_length`` ids) holds
    documents separated by ``document_separator_id`` (default EOS; pack with EOS between
    documents). The block is split at the separators (which are dropped; empty documents are
    skipped; the block's first and last pieces may be parts of documents cut by the packing) and
    each document is corrupted on its own: T5's mask at the document's own length, noise density
    and mean span length, sentinels restarting at ``<extra_id_0>`` per document, EOS ending its
    inputs and its targets (so every document has at least one target; a one-token document gets
    no noise: inputs ``t </s>``, targets ``</s>``). The documents' inputs are concatenated on the
    encoder side and their targets on the decoder side, each document's decoder inputs starting
    with ``decoder_start_token_id`` (never the previous document's last label). Besides the keys
    above the batch then holds

    - ``position_ids`` (B, S) and ``decoder_position_ids`` (B, T): 0, 1, ... restarting at each
      document's first input / target token (padding continues the last document). Document k
      of the encoder side is document k of the decoder side, which is all the model needs for
      the cross-attention mask (hfpipe.models.seq2seq).

    T5's exact lengths (e.g. 568 raw -> 512 inputs / 114 targets) hold only without
    ``document_mask``: per-document rounding of the noise counts and the EOS per document make
    the lengths vary from block to block, so S and T are the batch's longest (rounded up to
    ``pad_to_multiple_of``), padded with pad / attention_mask 0 and labels -100; they may
    exceed ``input_length`` / ``targets_length`` by a few tokens.
    """

    tokenizer: Any
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    input_length: int = 512
    decoder_start_token_id: int | None = None
    seed: int | None = None
    document_mask: bool = False
    document_separator_id: int | None = None
    pad_to_multiple_of: int | None = None  # document_mask only: the fixed T5 lengths need none
    # Derived in __post_init__: T5's lengths and the id of <extra_id_0>.
    raw_tokens_length: int = dataclasses.field(init=False)
    targets_length: int = dataclasses.field(init=False)
    sentinel_id: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.raw_tokens_length, self.targets_length = span_corruption_lengths(
            self.input_length, self.noise_density, self.mean_noise_span_length
        )
        self._num_noise_tokens, self._num_noise_spans = noise_span_counts(
            self.raw_tokens_length, self.noise_density, self.mean_noise_span_length
        )
        # The corrupted lengths are fixed by raw_tokens_length; they fall short of
        # (input_length, targets_length) only after T5's noise_density == 0.5 adjustment,
        # and the shortfall is padded (attention_mask 0, labels -100), as T5 pads.
        corrupted_inputs, corrupted_targets = _corrupted_lengths(
            self.raw_tokens_length, self.noise_density, self.mean_noise_span_length
        )
        assert corrupted_inputs <= self.input_length and corrupted_targets <= self.targets_length
        for name in ("eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise InputError(f"tokenizer {type(self.tokenizer).__name__} has no {name}: span corruption needs one")
        self.sentinel_id = _sentinel_ids(self.tokenizer, self._num_noise_spans)
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.tokenizer.pad_token_id
        if self.document_mask and self.document_separator_id is None:
            self.document_separator_id = self.tokenizer.eos_token_id
        self._rng: np.random.Generator | None = None

    def _generator(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        if self._rng is None:
            self._rng = np.random.default_rng(worker_seed(self.seed))
        return self._rng

    def _raw_tokens(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> np.ndarray:
        return fixed_length_rows(
            examples, self.raw_tokens_length, "span corruption",
            f"raw_tokens_length for input_length={self.input_length}, noise_density={self.noise_density}, "
            f"mean_noise_span_length={self.mean_noise_span_length}",
        )

    def _corrupt_document(self, document: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One document (n,) -> (inputs, targets), EOS-terminated, as a block of n tokens alone."""
        eos = np.asarray([self.tokenizer.eos_token_id], dtype=np.int64)
        if len(document) < 2:  # T5's mask needs a noise and a non-noise token
            return np.concatenate([document, eos]), eos
        mask = random_spans_noise_mask(len(document), self.noise_density, self.mean_noise_span_length, rng, 1)
        inputs = _spans_to_sentinels(document[None], mask, self.sentinel_id)[0]
        targets = _spans_to_sentinels(document[None], ~mask, self.sentinel_id)[0]
        return np.concatenate([inputs, eos]), np.concatenate([targets, eos])

    def _round_up(self, width: int) -> int:
        multiple = self.pad_to_multiple_of or 1
        return -(-width // multiple) * multiple

    def _documents_call(self, tokens: np.ndarray) -> dict[str, torch.Tensor]:
        """document_mask: each document of each block corrupted on its own (see the class docstring)."""
        rng = self._generator()
        rows = []  # per block: [(inputs, targets) per document]
        for block in tokens:
            pieces = np.split(block, np.flatnonzero(block == self.document_separator_id) + 1)
            documents = [p[:-1] if p[-1] == self.document_separator_id else p for p in pieces if len(p)]
            rows.append([self._corrupt_document(d, rng) for d in documents if len(d)])
        pad = self.tokenizer.pad_token_id

        def side(index: int, fill: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """-> ids (B, W) padded with ``fill``, valid (B, W), positions (B, W) restarting per document."""
            lengths = [sum(len(doc[index]) for doc in row) for row in rows]
            width = self._round_up(max(lengths))
            ids = torch.full((len(rows), width), fill, dtype=torch.long)
            positions = torch.zeros((len(rows), width), dtype=torch.long)
            for i, row in enumerate(rows):
                if row:
                    ids[i, : lengths[i]] = torch.from_numpy(np.concatenate([doc[index] for doc in row]))
                    starts = np.concatenate([np.arange(len(doc[index])) for doc in row])
                    # padding continues the last document: masked as keys, ignored as queries
                    tail = starts[-1] + 1 + np.arange(width - len(starts))
                    positions[i] = torch.from_numpy(np.concatenate([starts, tail]))
                else:  # a block of separators only: all padding
                    positions[i] = torch.arange(width)
            valid = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
            return ids, valid, positions

        input_ids, attention_mask, position_ids = side(0, pad)
        labels, _, decoder_position_ids = side(1, -100)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask.long(),
            "labels": labels,
            "decoder_input_ids": shift_right(labels, self.decoder_start_token_id, pad, decoder_position_ids),
            "position_ids": position_ids,
            "decoder_position_ids": decoder_position_ids,
        }

    def __call__(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> dict[str, torch.Tensor]:
        tokens = self._raw_tokens(examples)  # (B, raw_tokens_length)
        if self.document_mask:
            return self._documents_call(tokens)
        batch_size = tokens.shape[0]
        noise_mask = random_spans_noise_mask(
            self.raw_tokens_length, self.noise_density, self.mean_noise_span_length, self._generator(), batch_size
        )
        eos = np.full((batch_size, 1), self.tokenizer.eos_token_id, dtype=np.int64)
        # Inputs: noise spans -> sentinels; targets: the non-noise spans -> the same sentinels
        # (the sentinel of noise span j precedes it), exactly T5's inputs_fn / targets_fn.
        inputs = np.concatenate([_spans_to_sentinels(tokens, noise_mask, self.sentinel_id), eos], axis=1)
        targets = np.concatenate([_spans_to_sentinels(tokens, ~noise_mask, self.sentinel_id), eos], axis=1)

        input_ids = torch.full((batch_size, self.input_length), self.tokenizer.pad_token_id, dtype=torch.long)
        input_ids[:, : inputs.shape[1]] = torch.from_numpy(inputs)
        attention_mask = torch.zeros_like(input_ids)
        attention_mask[:, : inputs.shape[1]] = 1
        labels = torch.full((batch_size, self.targets_length), -100, dtype=torch.long)
        labels[:, : targets.shape[1]] = torch.from_numpy(targets)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "decoder_input_ids": shift_right(labels, self.decoder_start_token_id, self.tokenizer.pad_token_id),
        }

