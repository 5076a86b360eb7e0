"""T5 (Raffel et al. 2020): spans replaced by sentinels in the encoder's input, spelled out by the decoder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hfpipe.recipes.engine import AT_LEAST_ONE, OPEN_UNIT, checked

from .base import Examples, Objective, register
from .examples import argmax_logits, lm_metrics, packed_blocks


@register
@dataclass
class SpanCorruptionObjectiveSection(Objective):
    """T5: spans replaced by sentinels in the input, the target spells them out."""

    family = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"

    name: Literal["span_corruption"]
    noise_density: float = checked(0.15, OPEN_UNIT)  # fraction of tokens corrupted (T5)
    mean_noise_span_length: float = checked(3.0, AT_LEAST_ONE)  # mean span length in tokens (T5)
    document_mask: bool = False  # keep attention and positions within each document of a packed block

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        from hfpipe.data.span_corruption import DataCollatorForSpanCorruption, span_corruption_lengths

        raw_length, _ = span_corruption_lengths(self.max_seq_length, self.noise_density, self.mean_noise_span_length)
        # T5 packs raw text with no separators; the collator appends EOS after corruption. With
        # document_mask the documents keep their EOS separators: the collator splits blocks at them.
        separator = tokenizer.eos_token_id if self.document_mask else None
        splits, counters = packed_blocks(recipe, corpus, tokenizer, raw_length, separator)
        collator = DataCollatorForSpanCorruption(tokenizer, noise_density=self.noise_density,
                                                 mean_noise_span_length=self.mean_noise_span_length,
                                                 input_length=self.max_seq_length, document_mask=self.document_mask)
        return Examples(splits["train"], splits.get("validation"), collator, lm_metrics(False), argmax_logits,
                        counters)
