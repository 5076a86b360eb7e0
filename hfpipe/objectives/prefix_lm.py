"""Prefix LM (T5's and UL2's S-denoiser): an encoder-decoder continues a block's prefix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import Examples, Objective, register
from .examples import argmax_logits, lm_metrics, packed_blocks


@register
@dataclass
class PrefixLmObjectiveSection(Objective):
    """An encoder-decoder continues a block's prefix."""

    family = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"

    name: Literal["prefix_lm"]

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        from hfpipe.data.collators import DataCollatorForPrefixLM

        splits, counters = packed_blocks(recipe, corpus, tokenizer, self.max_seq_length, tokenizer.eos_token_id)
        return Examples(splits["train"], splits.get("validation"), DataCollatorForPrefixLM(tokenizer),
                        lm_metrics(False), argmax_logits, counters)
