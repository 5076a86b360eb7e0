"""Masking whole words: the word-level masker behind SpanBERT's span masking and BERT's whole-word
masking (data/span_masking.py, data/collators.py).

transformers has no span-masking collator, and its whole-word masking drops random replacement,
so the masker is written here, once:

- :func:`word_continuation_table`: which vocabulary tokens continue the previous token's word;
- :func:`span_length_distribution`: P(span of k words), Geo(p) restricted to k in
  [1, max_span_length] and renormalised, as SpanBERT's ``len_distrib``; mean 3.80 words
  for (p=0.2, max=10);
- :func:`sample_word_spans`: spans of whole words drawn until ``mlm_probability`` of the
  maskable tokens are chosen (the budget rule is in its docstring);
- :func:`replace_per_span`: BERT's 80/10/10, decided once per span;
- :class:`WordSpanMasker`: the three together, with its own generator. Whole-word masking is
  spans of exactly one word.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from hfpipe.data.span_corruption import worker_seed
from hfpipe.errors import InputError

__all__ = [
    "WordSpanMasker",
    "WordSpans",
    "replace_per_span",
    "sample_word_spans",
    "span_length_distribution",
    "word_continuation_table",
    "word_starts",
]


def word_continuation_table(tokenizer: Any) -> torch.Tensor:
    """bool (len(tokenizer),): True where a vocabulary token continues the previous token's word.

    Whole-word and span masking need word boundaries; transformers reads them from offset
    mappings, which pre-tokenized ids no longer have. The vocabulary's own markers give them
    back for the usual fast tokenizers: WordPiece ``##`` pieces continue a word; with ByteLevel (``Ġ``) or
    Metaspace (``▁``) pre-tokenizers, a token without the marker does.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(f"whole_word_mask needs a fast tokenizer, got {type(tokenizer).__name__}")
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    prefix = getattr(backend.model, "continuing_subword_prefix", None)
    if prefix:
        return torch.tensor([tok is not None and tok.startswith(prefix) for tok in tokens])
    pre_tokenizer = repr(backend.pre_tokenizer)
    marker = "Ġ" if "ByteLevel" in pre_tokenizer else "▁" if "Metaspace" in pre_tokenizer else None
    if marker is None:
        raise InputError(
            f"whole_word_mask: cannot tell word pieces apart in {type(tokenizer).__name__} (needs a WordPiece "
            f"continuing_subword_prefix, or a ByteLevel or Metaspace pre-tokenizer; got {pre_tokenizer})"
        )
    return torch.tensor([tok is not None and not tok.startswith(marker) for tok in tokens])


def span_length_distribution(geometric_p: float, max_span_length: int) -> np.ndarray:
    """float64 (max_span_length,): entry k - 1 is P(a span of k words) = p (1 - p)^(k - 1) / Z.

    Z renormalises Geo(p) over [1, max_span_length] (SpanBERT's ``len_distrib``; the paper's
    "clipped at 10" with mean 3.8 for p = 0.2). Piling the tail mass on the maximum instead would
    give a mean of 4.46.
    """
    if not 0.0 < geometric_p < 1.0:
        raise InputError(f"geometric_p: expected a number in (0, 1), got {geometric_p!r}")
    if isinstance(max_span_length, bool) or not (isinstance(max_span_length, int) and max_span_length >= 1):
        raise InputError(f"max_span_length: expected an integer >= 1, got {max_span_length!r}")
    weights = geometric_p * (1 - geometric_p) ** np.arange(max_span_length, dtype=np.float64)
    return weights / weights.sum()


def word_starts(input_ids: np.ndarray, maskable: np.ndarray, continues_word: np.ndarray) -> np.ndarray:
    """bool (B, T): True on the first piece of each maskable word.

    A maskable token starts a word unless the vocabulary marks it as a continuation
    (``continues_word``, from :func:`~hfpipe.data.collators.word_continuation_table`) and the
    token before it is maskable too: a piece right after [CLS] or [SEP] starts a word.
    """
    continues = continues_word[np.clip(input_ids, 0, len(continues_word) - 1)]
    previous_maskable = np.zeros_like(maskable)
    previous_maskable[:, 1:] = maskable[:, :-1]
    return maskable & ~(continues & previous_maskable)


@dataclasses.dataclass
class WordSpans:
    """What :func:`sample_word_spans` drew.

    - ``chosen``: bool (B, T), the tokens to predict.
    - ``spans``: int64 (S, 4), one row per span drawn, in drawing order: batch row, first word
      (index among the row's words), drawn length in words, words it took (fewer at the end of
      the row or where the budget ran out; words chosen before count as taken).
    """

    chosen: np.ndarray
    spans: np.ndarray


def sample_word_spans(
    is_word_start: np.ndarray,
    maskable: np.ndarray,
    mlm_probability: float,
    span_lengths: np.ndarray,
    rng: np.random.Generator,
) -> WordSpans:
    """SpanBERT's span sampling over whole words, for a batch at once (one loop step per span).

    is_word_start, maskable: bool (B, T) (see :func:`word_starts`); span_lengths: (K,)
    probabilities of spans of 1..K words (:func:`span_length_distribution`).

    Per row, as SpanBERT's ``PairWithSpanMaskingScheme.mask``: while fewer than the budget
    b = ``mlm_probability * n`` of the row's n maskable tokens are chosen, draw a length k from
    ``span_lengths`` and a first word uniformly among the row's words not chosen yet (the
    reference redraws an anchor that is already masked, which amounts to the same), and take
    that word and the k - 1 words after it (fewer at the end of the row), word by word, until
    the budget is reached; the span that reaches it is the row's last. Two departures, both
    at the budget: the reference rounds b up (``math.ceil``), which masks up to one extra token
    per row (16.7% instead of 15% on 26-token rows); and it stops mid-word at exactly the
    budget, where here words are never split: the word that would cross the budget, needing r
    more tokens of its m new pieces, is taken whole with probability r / m. So each row's count
    is b in expectation, and above b by less than one word at most.
    """
    batch_size = maskable.shape[0]
    word_index = np.cumsum(is_word_start, axis=1) - 1  # (B, T): word of each maskable token
    num_words = is_word_start.sum(axis=1)  # (B,)
    longest = len(span_lengths)
    # Columns past a row's words absorb non-maskable tokens and spans that run off the end.
    columns = (int(num_words.max()) if batch_size else 0) + longest
    flat = np.where(maskable, word_index, columns - 1) + columns * np.arange(batch_size)[:, None]
    pieces = np.bincount(flat.ravel(), weights=maskable.ravel(), minlength=batch_size * columns)
    pieces = pieces.astype(np.int64).reshape(batch_size, columns)  # (B, C): pieces per word
    total = maskable.sum(axis=1)  # (B,)
    budget = mlm_probability * total  # (B,) float
    count = np.zeros(batch_size, dtype=np.int64)
    done = count >= budget
    offsets = np.arange(longest)
    exists = np.arange(columns) < num_words[:, None]  # (B, C)
    # One random priority per word (-1 once chosen); each span starts at the free word of highest
    # priority. Whatever earlier spans covered, the free words' priorities stay exchangeable, so
    # each start is uniform among the free words (one draw per batch, not one per span).
    priority = np.where(exists, rng.random((batch_size, columns)), -1.0)
    cumulative = np.cumsum(span_lengths)
    rows, spans = np.arange(batch_size), []
    while not done.all():
        length = np.minimum(np.searchsorted(cumulative, rng.random(batch_size) * cumulative[-1], side="right"),
                            longest - 1) + 1  # (B,)
        start = priority.argmax(axis=1)  # (B,)
        words = start[:, None] + offsets  # (B, K), all < C
        in_span = (offsets < length[:, None]) & (words < num_words[:, None]) & ~done[:, None]
        span_priority = np.take_along_axis(priority, words, axis=1)
        new = np.where(in_span & (span_priority >= 0), np.take_along_axis(pieces, words, axis=1), 0)
        need = (budget - count)[:, None] - (np.cumsum(new, axis=1) - new)  # still missing before each word
        take = in_span & (need > 0)
        crossing = take & (new > need)
        take &= ~crossing | (rng.random((batch_size, longest)) * new < need)
        np.put_along_axis(priority, words, np.where(take, -1.0, span_priority), axis=1)
        count += (new * take).sum(axis=1)
        spans.append(np.stack([rows, start, length, take.sum(axis=1)], axis=1)[~done])
        done |= (count >= budget) | crossing.any(axis=1) | (count >= total)  # the last: no free word left
    chosen = exists & (priority < 0)
    tokens = maskable & np.take_along_axis(chosen, np.maximum(word_index, 0), axis=1)
    return WordSpans(tokens, np.concatenate(spans) if spans else np.zeros((0, 4), dtype=np.int64))


def replace_per_span(
    input_ids: np.ndarray,
    chosen: np.ndarray,
    mask_token_id: int,
    vocab_size: int,
    mask_replace_prob: float,
    random_replace_prob: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 decided once per span: (masked input_ids, labels), both int64 (B, T).

    A span is a maximal run of chosen tokens, so spans that touch are one span, as the
    reference's ``merge_intervals``. With probability ``mask_replace_prob`` every token of the
    span becomes [MASK], with ``random_replace_prob`` every token becomes an independent random
    id in [0, vocab_size) (as transformers draws them), else the span stays. ``labels`` hold
    the original ids on chosen tokens, -100 elsewhere.
    """
    labels = np.where(chosen, input_ids, -100)
    span_start = chosen.copy()
    span_start[:, 1:] &= ~chosen[:, :-1]
    num_spans = int(span_start.sum())
    span_of = np.maximum(np.cumsum(span_start.ravel()).reshape(chosen.shape) - 1, 0)  # (B, T)
    draw = rng.random(num_spans)[span_of] if num_spans else np.ones(chosen.shape)  # one draw per span
    to_mask = chosen & (draw < mask_replace_prob)
    to_random = chosen & ~to_mask & (draw < mask_replace_prob + random_replace_prob)
    random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
    masked = np.where(to_mask, mask_token_id, np.where(to_random, random_ids, input_ids))
    return masked.astype(np.int64), labels.astype(np.int64)


class WordSpanMasker:
    """(input_ids, special_tokens_mask) -> (masked input_ids, labels): spans of whole words, 80/10/10 per span.

    Takes and returns (B, T) torch tensors. ``max_span_length=1`` gives BERT's whole-word
    masking with the 80/10/10 kept per word. Randomness: a private numpy generator from
    ``seed`` (offset by the DataLoader worker id); without a seed, one seeded from torch's global
    RNG per call, so that ``torch.manual_seed`` (Trainer, :class:`~hfpipe.data.collators.
    ReproducibleCollator`) fixes the masks. numpy, not torch: the loop runs once per span on
    small arrays, where numpy's per-call cost is lower.
    """

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, geometric_p: float = 0.2, max_span_length: int = 10,
                 seed: int | None = None):
        if tokenizer.mask_token_id is None:
            raise InputError(f"tokenizer {type(tokenizer).__name__} has no mask token: span masking needs one")
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.span_lengths = span_length_distribution(geometric_p, max_span_length)
        self.continues_word = word_continuation_table(tokenizer).numpy()
        self.seed = seed
        self._rng: np.random.Generator | None = None

    def rng(self) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(2**62, (1,))))
        if self._rng is None:  # created in the DataLoader worker that uses it
            self._rng = np.random.default_rng(worker_seed(self.seed))
        return self._rng

    def choose(self, input_ids: torch.Tensor, special_tokens_mask: torch.Tensor,
               rng: np.random.Generator | None = None) -> WordSpans:
        ids, maskable = input_ids.numpy(), ~special_tokens_mask.bool().numpy()
        starts = word_starts(ids, maskable, self.continues_word)
        return sample_word_spans(starts, maskable, self.mlm_probability, self.span_lengths, rng or self.rng())

    def __call__(self, input_ids: torch.Tensor, special_tokens_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng()
        chosen = self.choose(input_ids, special_tokens_mask, rng).chosen
        masked, labels = replace_per_span(
            input_ids.numpy(), chosen, self.tokenizer.mask_token_id, len(self.tokenizer),
            self.mask_replace_prob, self.random_replace_prob, rng,
        )
        return torch.from_numpy(masked), torch.from_numpy(labels)
