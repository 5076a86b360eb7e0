"""BERT's masking, shared by mlm_nsp, sop, mlm, span_mlm and electra: the section's keys, their check,
and RoBERTa's framed blocks."""

from __future__ import annotations

from dataclasses import dataclass

from hfpipe.recipes.engine import PROBABILITY, checked, error

from .base import Examples, Objective
from .examples import argmax_logits, lm_metrics, map_options, packed_blocks


@dataclass
class MaskingObjectiveSection(Objective):
    """BERT's masking: which tokens are chosen, and what each becomes."""

    family = "encoder"

    mlm_probability: float = checked(0.15, PROBABILITY)  # fraction of tokens chosen for prediction (BERT)
    mask_replace_prob: float = checked(0.8, PROBABILITY)  # of those: -> [MASK]
    random_replace_prob: float = checked(0.1, PROBABILITY)  # of those: -> random token (the rest unchanged)

    def check(self, where: str) -> None:
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise error(where, "objective.random_replace_prob", "mask_replace_prob + random_replace_prob must be <= 1")

    def masking(self) -> dict:
        """The collator's masking arguments."""
        return dict(mlm_probability=self.mlm_probability, mask_replace_prob=self.mask_replace_prob,
                    random_replace_prob=self.random_replace_prob,
                    document_mask=getattr(self, "document_mask", False))  # packed blocks: mlm, span_mlm, electra

    def collator(self, tokenizer):
        raise NotImplementedError(f"objective {self.name}: collator()")


@dataclass
class WordPieceMaskingObjectiveSection(MaskingObjectiveSection):
    """Masking that may choose word pieces or whole words (span_mlm always masks whole words)."""

    whole_word_mask: bool = False  # choose whole words rather than word pieces

    def collator(self, tokenizer):
        """transformers' masking, or whole-word masking on ids that have no offset mappings."""
        from hfpipe.data.collators import DataCollatorForBertPretraining

        return DataCollatorForBertPretraining(tokenizer, whole_word_mask=self.whole_word_mask, **self.masking())


def framed_blocks(objective: MaskingObjectiveSection, recipe, corpus, tokenizer) -> Examples:
    """RoBERTa's FULL-SENTENCES: packed blocks of max_seq_length - 2, framed by CLS/SEP (SpanBERT's
    single sequences and ELECTRA's too: they differ in their collator and model)."""
    splits, counters = packed_blocks(recipe, corpus, tokenizer, objective.max_seq_length - 2, tokenizer.sep_token_id)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def frame(batch):
        return {"input_ids": [[cls, *block, sep] for block in batch["input_ids"]]}

    splits = {k: v.map(frame, batched=True, **map_options(v, "framing")) for k, v in splits.items()}
    return Examples(splits["train"], splits.get("validation"), objective.collator(tokenizer), lm_metrics(False),
                    argmax_logits, counters)
