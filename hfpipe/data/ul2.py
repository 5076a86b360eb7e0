"""UL2's mixture of denoisers (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms").

Each example draws ONE denoiser, by weight, and its input starts with that denoiser's
paradigm token:

| paradigm | token   | what                                   | default denoisers (mean span, density) |
|----------|---------|----------------------------------------|----------------------------------------|
| r        | [NLU]   | regular T5 span corruption             | (3, 0.15), (8, 0.15)                   |
| x        | [NLG]   | extreme: long spans or heavy corruption | (3, 0.5), (8, 0.5), (64, 0.15), (64, 0.5) |
| s        | [S2S]   | sequential: prefix LM                  | the last 25% of the block is the target |

R and X are T5's span corruption exactly (:mod:`hfpipe.data.span_corruption`'s mask,
sentinels and length formula); S cuts the block at a fixed point. transformers has no UL2
collator, hence this module.

Lengths (:func:`ul2_lengths`). Every denoiser fills the encoder: for R and X, T5's
``random_spans_helper`` gives the raw length whose corrupted input (after the paradigm token)
is ``input_length - 1`` tokens, EOS included; for S, the prefix is ``input_length - 2`` raw
tokens. Raw lengths therefore differ by denoiser (at 512: 567, 587, 765, 906, 599, 1004 and
680 for the seven defaults), so the corpus is packed into blocks of the LARGEST of them and
each example takes the raw length its denoiser needs from the start of its block; the rest
of the block is dropped. The cost is corpus tokens, not compute: every encoder input is full
(512 or 511 tokens), but ``block_length - raw`` tokens per block go unused -- at 512 with the
uniform default mixture, 27.3% of the packed tokens (:meth:`UL2Lengths.unused_fraction`).
The other choice (one raw length, shorter inputs for X) would waste the same share as encoder
padding on every step instead; a streamed corpus such as C4 has tokens to spare.

Sentinels: X(3, 0.5) at 512 makes 127 noise spans, more than T5's 100 ``<extra_id_N>``
(T5 itself then counted down into ordinary vocabulary ids). :func:`add_ul2_tokens` adds the
paradigm tokens and any missing sentinels to the tokenizer; the collator looks sentinels up
by name, so the added ones need not continue T5's count-down id layout.

Example (one R example, raw ``a b c d e f``, noise spans ``c d`` and ``f``)::

    input_ids  [NLU] a b <extra_id_0> e <extra_id_1> </s>
    labels     <extra_id_0> c d <extra_id_1> f </s>

and one S example on ``a b c d e f g h``: ``[S2S] a b c d e f </s>`` -> ``g h </s>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from tokenizers import AddedToken

from hfpipe.data.span_corruption import (
    DataCollatorForSpanCorruption,
    _corrupted_lengths,
    _spans_to_sentinels,
    noise_span_counts,
    random_spans_noise_mask,
    shift_right,
    span_corruption_lengths,
)
from hfpipe.data.packing import fixed_length_rows
from hfpipe.errors import InputError

__all__ = [
    "PARADIGM_TOKENS",
    "UL2_DENOISERS",
    "DataCollatorForUL2",
    "Denoiser",
    "DenoiserLengths",
    "UL2Lengths",
    "add_ul2_tokens",
    "as_denoisers",
    "check_denoisers",
    "ul2_lengths",
]

PARADIGM_TOKENS = {"r": "[NLU]", "x": "[NLG]", "s": "[S2S]"}


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One denoiser of the mixture.

    r/x: T5 span corruption with ``noise_density`` of the tokens in spans of mean
    ``mean_noise_span_length`` tokens. s: prefix LM whose target is the last
    ``noise_density`` of the raw tokens (``mean_noise_span_length`` None: one span).
    ``weight``: relative share of examples, normalised over the mixture.
    """

    paradigm: Literal["r", "x", "s"]
    mean_noise_span_length: float | None
    noise_density: float
    weight: float = 1.0


# The paper's final mixture (Section 3.1.4), uniform weights.
UL2_DENOISERS: tuple[Denoiser, ...] = (
    Denoiser("r", 3.0, 0.15),
    Denoiser("r", 8.0, 0.15),
    Denoiser("x", 3.0, 0.5),
    Denoiser("x", 8.0, 0.5),
    Denoiser("x", 64.0, 0.15),
    Denoiser("x", 64.0, 0.5),
    Denoiser("s", None, 0.25),
)


class DenoiserLengths(NamedTuple):
    """Token counts of one denoiser's examples (all exact: every example has them)."""

    raw: int  # raw tokens taken from the start of the block
    inputs: int  # paradigm token + corrupted text (or prefix) + EOS
    targets: int  # one sentinel + span per noise span (S: the suffix), then EOS
    noise_tokens: int  # raw tokens moved to the target
    noise_spans: int  # sentinels used (S: 1, no sentinel)


@dataclasses.dataclass(frozen=True)
class UL2Lengths:
    """``block_length``: raw tokens per packed block (the largest ``raw``); one entry per denoiser."""

    block_length: int
    denoisers: tuple[DenoiserLengths, ...]

    def unused_fraction(self, weights: Sequence[float]) -> float:
        """Expected share of packed tokens no denoiser reads, for denoisers drawn with ``weights``."""
        p = np.asarray(weights, dtype=float) / sum(weights)
        raw = np.array([d.raw for d in self.denoisers], dtype=float)
        return float(p @ (self.block_length - raw) / self.block_length)


def _prefix_lm_targets(raw: int, noise_density: float) -> int:
    """S: how many of ``raw`` tokens form the target (T5's rounding and clipping, as noise_span_counts)."""
    return min(max(round(raw * noise_density), 1), raw - 1)


def _denoiser_lengths(input_length: int, d: Any) -> DenoiserLengths:
    body = input_length - 1  # after the paradigm token
    if d.paradigm == "s":
        prefix = body - 1  # and before EOS
        # raw - targets(raw) grows by 0 or 1 per raw token: start near prefix / (1 - density), then walk.
        raw = max(2, math.floor(prefix / (1 - d.noise_density)))
        while raw > 2 and raw - _prefix_lm_targets(raw, d.noise_density) > prefix:
            raw -= 1
        while raw + 1 - _prefix_lm_targets(raw + 1, d.noise_density) <= prefix:
            raw += 1
        targets = _prefix_lm_targets(raw, d.noise_density)
        return DenoiserLengths(raw, 1 + raw - targets + 1, targets + 1, targets, 1)
    raw, _ = span_corruption_lengths(body, d.noise_density, d.mean_noise_span_length)
    inputs, targets = _corrupted_lengths(raw, d.noise_density, d.mean_noise_span_length)
    return DenoiserLengths(raw, 1 + inputs, targets, *noise_span_counts(raw, d.noise_density, d.mean_noise_span_length))


def check_denoisers(denoisers: Sequence[Any], input_length: int, key: str = "denoisers") -> None:
    """InputError naming ``key[i].field`` for the first denoiser that is malformed or does not fit ``input_length``.

    Accepts :class:`Denoiser` or anything with its four attributes (the recipe's DenoiserSection).
    Targets may be at most ``input_length`` long, as UL2's 512 inputs / 512 targets.
    """
    if not denoisers:
        raise InputError(f"{key}: expected at least one denoiser")
    if input_length < 4:
        raise InputError(f"{key}: input_length {input_length} is too short for UL2; expected >= 4 "
                         "(paradigm token, a token, a sentinel and EOS)")
    for i, d in enumerate(denoisers):
        where = f"{key}[{i}]"
        if d.paradigm not in PARADIGM_TOKENS:
            raise InputError(f"{where}.paradigm: expected one of r, x, s, got {d.paradigm!r}")
        if not (isinstance(d.weight, (int, float)) and math.isfinite(d.weight) and d.weight > 0):
            raise InputError(f"{where}.weight: expected a positive number, got {d.weight!r}")
        if not 0.0 < d.noise_density < 1.0:
            raise InputError(f"{where}.noise_density: expected a fraction strictly between 0 and 1, "
                             f"got {d.noise_density!r}")
        if d.paradigm == "s":
            if d.mean_noise_span_length is not None:
                raise InputError(f"{where}.mean_noise_span_length: has no effect with paradigm s (the target is the "
                                 f"last noise_density of the block); remove it")
        elif d.mean_noise_span_length is None or not d.mean_noise_span_length >= 1:
            raise InputError(f"{where}.mean_noise_span_length: expected a number >= 1 for paradigm {d.paradigm}, "
                             f"got {d.mean_noise_span_length!r}")
        lengths = _denoiser_lengths(input_length, d)
        if lengths.targets > input_length:
            raise InputError(
                f"{where}.noise_density: {d.noise_density} makes targets of {lengths.targets} tokens at input length "
                f"{input_length} ({lengths.raw} raw tokens); UL2 keeps targets within the input length; expected a "
                "lower noise_density"
            )


def ul2_lengths(input_length: int, denoisers: Sequence[Any] = UL2_DENOISERS) -> UL2Lengths:
    """The block length to pack the corpus at and each denoiser's exact lengths (see the module docstring).

    (512, UL2_DENOISERS) -> block_length 1004; R(3, .15): raw 567, inputs 512, targets 114.
    """
    check_denoisers(denoisers, input_length)
    per_denoiser = tuple(_denoiser_lengths(input_length, d) for d in denoisers)
    return UL2Lengths(max(d.raw for d in per_denoiser), per_denoiser)


def as_denoisers(sections: Sequence[Any]) -> tuple[Denoiser, ...]:
    """The recipe's ``objective.denoisers`` as Denoisers; an empty list means UL2's seven."""
    if not sections:
        return UL2_DENOISERS
    return tuple(Denoiser(s.paradigm, s.mean_noise_span_length, s.noise_density, s.weight) for s in sections)


def _sentinel_names(count: int) -> list[str]:
    return [f"<extra_id_{j}>" for j in range(count)]


def _missing(tokenizer: Any, tokens: Sequence[str]) -> list[str]:
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    unk = tokenizer.unk_token_id
    return [t for t, i in zip(tokens, ids) if i is None or (i == unk and t != tokenizer.unk_token)]


def add_ul2_tokens(tokenizer: Any, denoisers: Sequence[Any] = UL2_DENOISERS, input_length: int = 512) -> int:
    """Add the paradigm tokens and the sentinels ``denoisers`` need at ``input_length`` that ``tokenizer`` lacks.

    Added as special tokens (never split, not normalised), paradigm tokens first, then
    sentinels in order, so the same tokenizer always gets the same ids. Returns how many were
    added: the model's embedding must then have ``len(tokenizer)`` rows.
    """
    lengths = ul2_lengths(input_length, denoisers)
    spans = max((n.noise_spans for d, n in zip(denoisers, lengths.denoisers) if d.paradigm != "s"), default=0)
    wanted = [PARADIGM_TOKENS[p] for p in ("r", "x", "s")] + _sentinel_names(spans)
    missing = _missing(tokenizer, wanted)
    if not missing:
        return 0
    added = [AddedToken(token, special=True, normalized=False) for token in missing]
    return tokenizer.add_special_tokens({"extra_special_tokens": added}, replace_extra_special_tokens=False)


@dataclasses.dataclass
class DataCollatorForUL2:
    """UL2's mixture of denoisers as a Trainer data collator.

    Takes examples whose ``input_ids`` hold exactly ``ul2_lengths(input_length, denoisers).block_length``
    raw ids (pack the corpus without separators to that size) and returns int64 tensors:

    - ``input_ids``, ``attention_mask``: (B, S), S = the longest input in the batch (at most
      ``input_length``), rounded up to ``pad_to_multiple_of``; padding is pad / 0;
    - ``labels``: (B, T), T = the longest target, rounded up likewise; -100 on padding;
    - ``decoder_input_ids``: (B, T), labels shifted right behind ``decoder_start_token_id``
      (default: the pad id, as T5), padding as pad.

    Randomness (which denoiser, which spans): with ``seed`` a private numpy Generator offset by
    the DataLoader worker id; without it, each batch seeds a fresh Generator from torch's global
    RNG, so ``transformers.set_seed`` and hfpipe's ReproducibleCollator govern it.
    """

    tokenizer: Any
    denoisers: Sequence[Denoiser] = UL2_DENOISERS
    input_length: int = 512
    decoder_start_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    # Derived in __post_init__.
    lengths: UL2Lengths = dataclasses.field(init=False)
    block_length: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.denoisers = tuple(self.denoisers)
        self.lengths = ul2_lengths(self.input_length, self.denoisers)
        self.block_length = self.lengths.block_length
        for name in ("eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise InputError(f"tokenizer {type(self.tokenizer).__name__} has no {name}: UL2 needs one")
        spans = max((n.noise_spans for d, n in zip(self.denoisers, self.lengths.denoisers) if d.paradigm != "s"),
                    default=0)
        needed = list(dict.fromkeys(PARADIGM_TOKENS[d.paradigm] for d in self.denoisers)) + _sentinel_names(spans)
        missing = _missing(self.tokenizer, needed)
        if missing:
            raise InputError(
                f"tokenizer {type(self.tokenizer).__name__} lacks {', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}: UL2 at input length {self.input_length} needs its paradigm "
                f"tokens and <extra_id_0>..<extra_id_{max(spans - 1, 0)}>; add them with hfpipe.data.ul2.add_ul2_tokens"
            )
        self._paradigm_ids = [self.tokenizer.convert_tokens_to_ids(PARADIGM_TOKENS[d.paradigm]) for d in self.denoisers]
        # Span j's sentinel is _sentinel_table[j]: looked up by name, so sentinels added after T5's 100
        # (at the top of the vocabulary, counting up) work as well as T5's own (counting down).
        self._sentinel_table = np.asarray(self.tokenizer.convert_tokens_to_ids(_sentinel_names(max(spans, 1))),
                                          dtype=np.int64)
        weights = np.asarray([d.weight for d in self.denoisers], dtype=float)
        self._probabilities = weights / weights.sum()
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.tokenizer.pad_token_id
        self._rng: np.random.Generator | None = None

    # Span corruption's randomness, as is: seed + DataLoader worker id, else torch's global RNG.
    _generator = DataCollatorForSpanCorruption._generator

    def _raw_tokens(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> np.ndarray:
        return fixed_length_rows(examples, self.block_length, "UL2",
                                 f"ul2_lengths({self.input_length}, denoisers).block_length")

    def _denoise(self, d: Denoiser, n: DenoiserLengths, paradigm_id: int, tokens: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(G, n.raw) raw tokens -> inputs (G, n.inputs), targets (G, n.targets)."""
        rows = tokens.shape[0]
        eos = np.full((rows, 1), self.tokenizer.eos_token_id, dtype=np.int64)
        paradigm = np.full((rows, 1), paradigm_id, dtype=np.int64)
        if d.paradigm == "s":
            cut = n.raw - n.noise_tokens
            return (np.concatenate([paradigm, tokens[:, :cut], eos], axis=1),
                    np.concatenate([tokens[:, cut:], eos], axis=1))
        mask = random_spans_noise_mask(n.raw, d.noise_density, d.mean_noise_span_length, rng, rows)
        # Sentinel -1 - j marks span j (no token id is negative); the table then names it.
        inputs = _spans_to_sentinels(tokens, mask, -1)
        targets = _spans_to_sentinels(tokens, ~mask, -1)
        inputs = np.where(inputs < 0, self._sentinel_table[np.maximum(-inputs - 1, 0)], inputs)
        targets = np.where(targets < 0, self._sentinel_table[np.maximum(-targets - 1, 0)], targets)
        return np.concatenate([paradigm, inputs, eos], axis=1), np.concatenate([targets, eos], axis=1)

    def _round_up(self, width: int) -> int:
        multiple = self.pad_to_multiple_of or 1
        return -(-width // multiple) * multiple

    def __call__(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> dict[str, torch.Tensor]:
        tokens = self._raw_tokens(examples)  # (B, block_length)
        batch_size = tokens.shape[0]
        rng = self._generator()
        chosen = rng.choice(len(self.denoisers), size=batch_size, p=self._probabilities)  # (B,)
        present = np.unique(chosen)
        width = self._round_up(max(self.lengths.denoisers[k].inputs for k in present))
        target_width = self._round_up(max(self.lengths.denoisers[k].targets for k in present))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, width), dtype=torch.long)
        labels = torch.full((batch_size, target_width), -100, dtype=torch.long)
        for k in present:
            rows = np.flatnonzero(chosen == k)
            n = self.lengths.denoisers[k]
            inputs, targets = self._denoise(self.denoisers[k], n, self._paradigm_ids[k], tokens[rows, : n.raw], rng)
            index = torch.from_numpy(rows)
            input_ids[index, : n.inputs] = torch.from_numpy(inputs)
            attention_mask[index, : n.inputs] = 1
            labels[index, : n.targets] = torch.from_numpy(targets)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "decoder_input_ids": shift_right(labels, self.decoder_start_token_id, pad),
        }
