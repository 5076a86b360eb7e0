"""ALBERT (Lan et al. 2020): masked LM + sentence-order prediction on pairs of segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hfpipe.recipes.engine import PROBABILITY, checked

from .base import Examples, register
from .masking import WordPieceMaskingObjectiveSection
from .mlm_nsp import sentence_pairs


@register
@dataclass
class SopObjectiveSection(WordPieceMaskingObjectiveSection):
    """ALBERT: masked LM + sentence-order prediction on sentence pairs."""

    auto_class = "AutoModelForPreTraining"

    name: Literal["sop"]
    short_seq_probability: float = checked(0.1, PROBABILITY)  # chance of a shorter target length (BERT)

    @property
    def nsp_probability(self) -> float:
        """Not a key: the pair builder takes one, but sentence order swaps the segments at 0.5 regardless."""
        return 0.5

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        return sentence_pairs(self, recipe, corpus, tokenizer)
