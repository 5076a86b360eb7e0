"""UL2 (Tay et al. 2023): a mixture of denoisers, each example marked by its paradigm's token."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from hfpipe.errors import InputError
from hfpipe.recipes.engine import AT_LEAST_ONE, OPEN_UNIT, POSITIVE, checked

from .base import Examples, Objective, register
from .examples import argmax_logits, lm_metrics, packed_blocks

logger = logging.getLogger("hfpipe.pretrain")


@dataclass(kw_only=True)  # keyword-only: noise_density is required yet follows an optional key
class DenoiserSection:
    """One denoiser of UL2's mixture (``objective.denoisers``; see hfpipe.data.ul2)."""

    paradigm: Literal["r", "x", "s"]  # r: span corruption, [NLU]; x: extreme, [NLG]; s: prefix LM, [S2S]; required
    mean_noise_span_length: float | None = checked(None, AT_LEAST_ONE)  # r/x: mean span in tokens (required); s: none
    noise_density: float = checked(check=OPEN_UNIT)  # r/x: fraction of tokens corrupted; s: fraction that is target
    weight: float = checked(1.0, POSITIVE)  # relative share of examples; normalised over the denoisers


@register
@dataclass
class Ul2ObjectiveSection(Objective):
    """UL2: a mixture of denoisers."""

    family = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"

    name: Literal["ul2"]
    denoisers: list[DenoiserSection] = field(default_factory=list)  # the mixture; []: UL2's seven, uniform

    def check(self, where: str) -> None:
        """Each denoiser's lengths must fit max_seq_length, before any data is read."""
        from hfpipe.data.ul2 import UL2_DENOISERS, check_denoisers

        try:
            check_denoisers(self.denoisers or UL2_DENOISERS, self.max_seq_length, "objective.denoisers")
        except InputError as e:
            raise InputError(f"{where}: {e}" if where else str(e)) from None

    def add_tokens(self, tokenizer) -> int:
        """The paradigm tokens and sentinels, before the embedding is sized."""
        from hfpipe.data.ul2 import add_ul2_tokens, as_denoisers

        return add_ul2_tokens(tokenizer, as_denoisers(self.denoisers), self.max_seq_length)

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        """Raw blocks as long as the most demanding denoiser needs (no separators, as T5)."""
        from hfpipe.data.ul2 import DataCollatorForUL2, as_denoisers, ul2_lengths

        denoisers = as_denoisers(self.denoisers)
        lengths = ul2_lengths(self.max_seq_length, denoisers)
        unused = lengths.unused_fraction([d.weight for d in denoisers])
        logger.info("ul2: %d denoisers; raw blocks of %d tokens, %.1f%% of them unused on average (raw per "
                    "denoiser: %s)", len(denoisers), lengths.block_length, 100 * unused,
                    ", ".join(str(n.raw) for n in lengths.denoisers))
        splits, counters = packed_blocks(recipe, corpus, tokenizer, lengths.block_length, None)
        collator = DataCollatorForUL2(tokenizer, denoisers, input_length=self.max_seq_length)
        return Examples(splits["train"], splits.get("validation"), collator, lm_metrics(False), argmax_logits,
                        counters)
