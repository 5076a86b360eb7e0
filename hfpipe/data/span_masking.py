"""SpanBERT's span masking (Joshi et al. 2020): :class:`DataCollatorForSpanMasking`, BERT's
collator with the word-level masker of :mod:`hfpipe.data.word_masking` drawing spans of whole words
(``DataCollatorForBertPretraining(whole_word_mask=True)`` uses the same masker with spans of exactly
one word).

Example (words ``the`` ``Den ##ver`` ``Bron ##cos`` ``won``; one span of 2 words drawn at ``Den``)::

    input_ids  [CLS] the  Den    ##ver  Bron   ##cos  won [SEP]
    masked     [CLS] the  [MASK] [MASK] [MASK] [MASK] won [SEP]    (80%: all [MASK]; 10%: all random; 10%: kept)
    labels     -100  -100 Den    ##ver  Bron   ##cos  -100 -100

SpanBERT's span boundary objective (SBO) is a model head and is not part of this collator.
"""

from __future__ import annotations

import dataclasses

from hfpipe.data.collators import DataCollatorForBertPretraining
from hfpipe.data.word_masking import WordSpanMasker

__all__ = ["DataCollatorForSpanMasking"]


@dataclasses.dataclass
class DataCollatorForSpanMasking(DataCollatorForBertPretraining):
    """SpanBERT masking on [CLS] block [SEP] examples (as the ``mlm`` objective packs them).

    Returns int64 (B, T) ``input_ids``, ``attention_mask``, ``token_type_ids`` (zeros) and
    ``labels`` (original ids on chosen tokens, -100 elsewhere), padded as
    :class:`~hfpipe.data.collators.DataCollatorForBertPretraining` pads. Spans of whole words,
    lengths from :func:`~hfpipe.data.word_masking.span_length_distribution` (``geometric_p``,
    ``max_span_length``), are
    drawn until ``mlm_probability`` of the maskable tokens are chosen (:func:`~hfpipe.data.word_masking.sample_word_spans`);
    each span then becomes all [MASK] (``mask_replace_prob``), all random tokens
    (``random_replace_prob``) or stays (:func:`~hfpipe.data.word_masking.replace_per_span`). Special tokens and padding
    are never chosen. ``seed``: a private generator, offset per DataLoader worker; else torch's
    global RNG.
    """

    geometric_p: float = 0.2
    max_span_length: int = 10
    whole_word_mask: bool = dataclasses.field(default=True, init=False)  # spans are always whole words

    def _make_word_masker(self) -> WordSpanMasker:
        return WordSpanMasker(
            self.tokenizer, self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
            geometric_p=self.geometric_p, max_span_length=self.max_span_length, seed=self.seed,
        )

