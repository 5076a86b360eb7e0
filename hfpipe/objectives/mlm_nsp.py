"""BERT (Devlin et al. 2019): masked LM + next-sentence prediction on pairs of segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hfpipe.data.sources import is_stream
from hfpipe.recipes.engine import PROBABILITY, checked

from .base import Examples, register
from .examples import argmax_logits, map_options, token_accuracy
from .masking import WordPieceMaskingObjectiveSection


def pair_metrics(eval_pred):
    mlm_predictions, nsp_predictions = eval_pred.predictions[:2]
    labels, nsp_labels = eval_pred.label_ids
    return {
        "mlm_accuracy": token_accuracy(mlm_predictions, labels),
        "nsp_accuracy": float((nsp_predictions == nsp_labels).mean()),
    }


def sentence_pairs(objective, recipe, corpus, tokenizer) -> Examples:
    """BERT's pairs of segments from documents' sentences: B follows A, or (NSP) a random segment or
    (SOP) the two swapped, with the objective's masking."""
    from hfpipe.data.nsp import BertPretrainingPairs
    from hfpipe.data.tokenized import sentences_dataset

    builder = BertPretrainingPairs(
        tokenizer,
        max_seq_length=objective.max_seq_length,
        nsp_probability=objective.nsp_probability,
        short_seq_probability=objective.short_seq_probability,
        sentence_order=objective.name == "sop",
        seed=recipe.train.seed,
    )
    splits = {}
    for split, dataset in corpus.items():
        documents = sentences_dataset(dataset, tokenizer, text_column=recipe.data.text_column)
        if not is_stream(documents):
            # A stream is read in order: datasets' shuffle buffer is not restored by load_state_dict,
            # so shuffling it would break exact resumes; streamed corpora are usually shuffled at rest.
            documents = documents.shuffle(seed=recipe.train.seed)
        splits[split] = documents.map(
            builder, batched=True, with_indices=True, remove_columns=documents.column_names or ["sentences"],
            **map_options(documents, f"{objective.name} pairs ({split})"),
        )
    return Examples(splits["train"], splits.get("validation"), objective.collator(tokenizer), pair_metrics,
                    argmax_logits)


@register
@dataclass
class MlmNspObjectiveSection(WordPieceMaskingObjectiveSection):
    """BERT: masked LM + next-sentence prediction on sentence pairs."""

    auto_class = "AutoModelForPreTraining"

    name: Literal["mlm_nsp"]
    nsp_probability: float = checked(0.5, PROBABILITY)  # chance that segment B is a random one
    short_seq_probability: float = checked(0.1, PROBABILITY)  # chance of a shorter target length (BERT)

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        return sentence_pairs(self, recipe, corpus, tokenizer)
