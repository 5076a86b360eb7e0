"""RoBERTa (Liu et al. 2019): masked LM on packed blocks, no next-sentence prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import Examples, register
from .masking import WordPieceMaskingObjectiveSection, framed_blocks


@register
@dataclass
class MlmObjectiveSection(WordPieceMaskingObjectiveSection):
    """RoBERTa: masked LM on packed blocks."""

    auto_class = "AutoModelForMaskedLM"

    name: Literal["mlm"]
    document_mask: bool = False  # keep attention and positions within each document of a packed block

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        return framed_blocks(self, recipe, corpus, tokenizer)
