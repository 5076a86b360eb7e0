"""Examples most objectives share: tokenized text packed into blocks, and token-level metrics."""

from __future__ import annotations

import logging

import numpy as np

from hfpipe.data.sources import is_stream
from hfpipe.errors import InputError

logger = logging.getLogger("hfpipe.pretrain")


def token_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    chosen = labels != -100
    return float((predictions[chosen] == labels[chosen]).mean()) if chosen.any() else float("nan")


def argmax_logits(logits, labels):
    """Keep only argmaxes on the way to compute_metrics: full vocab logits would not fit."""
    if isinstance(logits, tuple):
        return tuple(x.argmax(-1) for x in logits if x is not None and x.dim() >= 2)
    return logits.argmax(-1)


def lm_metrics(shift: bool):
    """Token accuracy of the (argmax) predictions; ``shift``: a causal LM predicts the next token."""

    def compute(eval_pred):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        labels = labels[0] if isinstance(labels, tuple) else labels
        if shift:
            predictions, labels = predictions[:, :-1], labels[:, 1:]
        return {"token_accuracy": token_accuracy(predictions, labels)}

    return compute


def map_options(dataset, desc: str) -> dict:
    """IterableDataset.map takes no progress-bar description."""
    return {} if is_stream(dataset) else {"desc": desc}


def tokenized(recipe, corpus, tokenizer) -> dict:
    from hfpipe.data.tokenized import tokenize_dataset

    return {
        split: tokenize_dataset(dataset, tokenizer, text_column=recipe.data.text_column,
                                num_proc=recipe.data.preprocessing_num_workers)
        for split, dataset in corpus.items()
    }


def packed_blocks(recipe, corpus, tokenizer, block_size: int, eos: int | None):
    """(blocks per split, {"packing": PackingCounter} when the training split is streamed)."""
    from hfpipe.data.packing import pack_dataset

    out, counters = {}, {}
    for split, dataset in tokenized(recipe, corpus, tokenizer).items():
        packed, stats = pack_dataset(dataset, block_size, eos_token_id=eos, desc=f"packing {split}")
        if is_stream(packed):  # counted as the stream is read; reported at the end of the run
            logger.info("%s: packing a stream into blocks of %d; counts are reported at the end", split, block_size)
            if split == "train":
                counters["packing"] = stats
            out[split] = packed
            continue
        logger.info("%s: %d documents, %d tokens -> %d blocks of %d (%d tokens dropped, %.2f%%)", split,
                    stats.num_documents, stats.num_tokens, stats.num_blocks, block_size,
                    stats.num_dropped_tokens, 100 * stats.dropped_fraction)
        if len(packed) == 0:
            raise InputError(
                f"data: the {split} text holds {stats.num_tokens} tokens, fewer than one block of {block_size}; "
                "give more text or lower objective.max_seq_length"
            )
        out[split] = packed
    return out, counters
