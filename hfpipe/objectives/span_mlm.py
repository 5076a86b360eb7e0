"""SpanBERT (Joshi et al. 2020): masked LM on contiguous spans of whole words, single sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hfpipe.recipes.engine import AT_LEAST_ONE, OPEN_UNIT, checked

from .base import Examples, register
from .masking import MaskingObjectiveSection, framed_blocks


@register
@dataclass
class SpanMlmObjectiveSection(MaskingObjectiveSection):
    """SpanBERT: masked LM on contiguous spans of whole words."""

    auto_class = "AutoModelForMaskedLM"

    name: Literal["span_mlm"]
    geometric_p: float = checked(0.2, OPEN_UNIT)  # span length in words ~ Geometric(p) (SpanBERT)
    max_span_length: int = checked(10, AT_LEAST_ONE)  # longest span in words; 0.2 and 10: mean 3.8
    document_mask: bool = False  # keep attention and positions within each document of a packed block

    def collator(self, tokenizer):
        from hfpipe.data.span_masking import DataCollatorForSpanMasking

        return DataCollatorForSpanMasking(tokenizer, geometric_p=self.geometric_p,
                                          max_span_length=self.max_span_length, **self.masking())

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        return framed_blocks(self, recipe, corpus, tokenizer)
