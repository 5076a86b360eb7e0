"""SQuAD as text-to-text for the encoder-decoder: T5's format, windows, best-window answers.

    features = map_generative_features(examples, tokenizer, max_seq_length=512, doc_stride=128,
                                       training=True, version_2=False)
    # ... train a seq2seq model on features (input_ids, attention_mask, labels) ...
    predictions, no_answer = generate_answers(model, tokenizer, examples, max_seq_length=512,
                                              doc_stride=128, max_answer_length=30, batch_size=32)

The encoder reads ``question: <question> context: <context>`` (T5, Raffel et al. 2020, appendix D)
and the decoder writes the answer's text; SQuAD v2's questions without an answer have the target
:data:`UNANSWERABLE`. Contexts longer than the window are cut into overlapping windows exactly as
extractive SQuAD cuts them (:func:`hfpipe.tasks.squad_format.tokenize_windows`, ``doc_stride`` tokens
of overlap). In training a window that does not hold the whole answer learns
:data:`UNANSWERABLE` under v2 and is left out under v1 (whose model never says it); the count is
logged. At evaluation every window generates greedily and the question's answer is the
generation with the highest mean token log-probability (an answer and "unanswerable" compete on
the same scale); the official SQuAD scripts then score it (:mod:`hfpipe.metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import datasets
import torch

from hfpipe.tasks.squad_format import tokenize_windows

logger = logging.getLogger(__name__)

UNANSWERABLE = "unanswerable"
QUESTION_PREFIX = "question: "
CONTEXT_PREFIX = "context: "


def _windows(examples: Mapping[str, list], tokenizer, max_seq_length: int, doc_stride: int):
    """T5-formatted (question, context) pairs cut into windows: (encoding, context sequence id)."""
    formatted = {
        "id": examples["id"],
        "question": [QUESTION_PREFIX + q.strip() for q in examples["question"]],
        "context": [CONTEXT_PREFIX + c for c in examples["context"]],
    }
    return tokenize_windows(formatted, tokenizer, max_seq_length, doc_stride, pad_to_max_length=False)


def _window_target(offsets, sequence_ids, context_id: int, answers: Mapping[str, list], version_2: bool) -> str | None:
    """The answer's text if the window holds all of it; else UNANSWERABLE (v2) or None (v1: leave out)."""
    if not answers["text"]:
        return UNANSWERABLE
    start = answers["answer_start"][0] + len(CONTEXT_PREFIX)
    end = start + len(answers["text"][0])
    spans = [span for span, sid in zip(offsets, sequence_ids) if sid == context_id]
    if spans and spans[0][0] <= start and end <= spans[-1][1]:
        return answers["text"][0]
    return UNANSWERABLE if version_2 else None


def map_generative_features(
    examples: datasets.Dataset,
    tokenizer,
    *,
    max_seq_length: int,
    doc_stride: int,
    training: bool,
    version_2: bool,
) -> datasets.Dataset:
    """Windows as model inputs: ``input_ids``, ``attention_mask``, and ``labels`` (the target's
    ids) when ``training``, else ``example_id`` (the question id of each window)."""
    left_out = [0]

    def prepare(batch):
        encoded, context_id = _windows(batch, tokenizer, max_seq_length, doc_stride)
        out: dict[str, list] = {"input_ids": [], "attention_mask": []}
        targets, example_ids = [], []
        for i, origin in enumerate(encoded["overflow_to_sample_mapping"]):
            if training:
                target = _window_target(encoded["offset_mapping"][i], encoded.sequence_ids(i), context_id,
                                        batch["answers"][origin], version_2)
                if target is None:
                    left_out[0] += 1
                    continue
                targets.append(target)
            example_ids.append(batch["id"][origin])
            out["input_ids"].append(encoded["input_ids"][i])
            out["attention_mask"].append(encoded["attention_mask"][i])
        if training:
            out["labels"] = tokenizer(text_target=targets)["input_ids"]
        else:
            out["example_id"] = example_ids
        return out

    features = examples.map(prepare, batched=True, remove_columns=examples.column_names,
                            desc="text-to-text SQuAD windows")
    if left_out[0]:
        logger.info("text-to-text SQuAD: %d training window(s) without the whole answer left out (v1 has no "
                    "'unanswerable'); %d windows train", left_out[0], len(features))
    return features


def _mean_log_probability(model, sequences: torch.Tensor, scores: tuple, eos_token_id: int) -> torch.Tensor:
    """(B,) mean log-probability of each greedy generation's tokens up to and including its EOS."""
    transition = model.compute_transition_scores(sequences, scores, normalize_logits=True)  # (B, N)
    generated = sequences[:, -transition.shape[1]:]  # (B, N): the tokens the scores belong to
    finished_before = (generated == eos_token_id).long().cumsum(-1) - (generated == eos_token_id).long()
    counted = (finished_before == 0).float()  # (B, N): up to and including the first EOS
    return (transition.float() * counted).sum(-1) / counted.sum(-1).clamp(min=1)


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    examples: datasets.Dataset,
    *,
    max_seq_length: int,
    doc_stride: int,
    max_answer_length: int,
    batch_size: int,
    device: Any = None,
) -> tuple[dict[str, str], dict[str, float]]:
    """({question id: answer text, "" for UNANSWERABLE}, {question id: 1.0 if unanswerable else 0.0}).

    Each window generates greedily (at most ``max_answer_length`` tokens); the question's answer is
    the best-scoring window's (mean token log-probability)."""
    from transformers import DataCollatorForSeq2Seq

    features = map_generative_features(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                       training=False, version_2=True)
    collate = DataCollatorForSeq2Seq(tokenizer)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows, window_ids = features.remove_columns(["example_id"]), features["example_id"]
    scores, texts = [], []
    for begin in range(0, len(features), batch_size):
        batch = collate([rows[i] for i in range(begin, min(begin + batch_size, len(features)))])
        batch = {k: v.to(device) for k, v in batch.items() if v is not None}
        out = model.generate(**batch, max_new_tokens=max_answer_length, do_sample=False, num_beams=1,
                             output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        scores += _mean_log_probability(model, out.sequences, out.scores, tokenizer.eos_token_id).tolist()
        texts += tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
    model.train(was_training)
    return best_window_answers(examples["id"], window_ids, scores, texts)


def best_window_answers(question_ids, window_ids, scores, texts) -> tuple[dict[str, str], dict[str, float]]:
    """Per question, the text of its best-scoring window (ties: the first window); UNANSWERABLE
    (any case) becomes "" with no-answer probability 1.0, anything else probability 0.0."""
    best: dict[str, tuple[float, str]] = {}
    for example_id, score, text in zip(window_ids, scores, texts):
        if example_id not in best or score > best[example_id][0]:
            best[example_id] = (score, text.strip())
    predictions, no_answer = {}, {}
    for qid in question_ids:
        text = best[qid][1]
        unanswerable = text.lower() == UNANSWERABLE
        predictions[qid] = "" if unanswerable else text
        no_answer[qid] = float(unanswerable)
    return predictions, no_answer


__all__ = ["UNANSWERABLE", "best_window_answers", "map_generative_features", "generate_answers"]
