"""GPT (Radford et al. 2018): causal LM, every token predicted from those before it, on packed blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import Examples, Objective, register
from .examples import argmax_logits, lm_metrics, packed_blocks


@register
@dataclass
class ClmObjectiveSection(Objective):
    """GPT: causal LM on packed blocks."""

    family = "decoder"
    auto_class = "AutoModelForCausalLM"

    name: Literal["clm"]
    document_mask: bool = False  # keep attention and positions within each document of a packed block

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        from hfpipe.data.collators import DataCollatorForCausalLM

        splits, counters = packed_blocks(recipe, corpus, tokenizer, self.max_seq_length, tokenizer.eos_token_id)
        # not transformers' collator: with pad = EOS (GPT-2 style) it would drop every EOS label
        collator = DataCollatorForCausalLM(tokenizer, document_mask=self.document_mask)
        return Examples(splits["train"], splits.get("validation"), collator, lm_metrics(True), argmax_logits, counters)
