"""SQuAD v1.1's official scoring (evaluate-v1.1.py, Rajpurkar et al. 2016), re-written.

Answers are compared after `normalize_answer`: lower-case, drop ASCII punctuation, drop the
articles a/an/the, collapse white space. Exact match is string equality of the normalised texts;
F1 is the harmonic mean of precision and recall of the bag of normalised tokens (Counter overlap).
Each question scores the maximum over its gold answers; totals are percentages (x100).

This file is also the one place the SQuAD v2.0 scorer (../squad_v2/compute_score.py) takes its
normalisation from, so the two metrics cannot drift apart.
"""

from __future__ import annotations

import logging
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as the official script: "«" or "–" stay
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (the official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 in [0, 1]; 0 when either side normalises to nothing (v1.1's rule, v2.0 differs)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(ground_truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(
    metric_fn: Callable[[str, str], float], prediction: str, ground_truths: Sequence[str]
) -> float:
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def gold_answers_by_id(references: Sequence[Mapping]) -> dict[str, list[str]]:
    """{"id", "answers": {"text": [...]}} references (the Hub layout) -> {id: gold texts}.

    A repeated id raises: the official scripts key everything by id, so a duplicate (e.g. from
    gathering padded batches across processes) would silently change the totals.
    """
    gold_answers: dict[str, list[str]] = {}
    for reference in references:
        if reference["id"] in gold_answers:
            raise ValueError(f"squad metric: question id {reference['id']!r} appears twice in references")
        gold_answers[reference["id"]] = list(reference["answers"]["text"])
    return gold_answers


def compute_score(gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """Official v1.1 totals.

    Args:
        gold_answers: question id -> its gold answer texts (at least one each).
        predictions: question id -> predicted text.

    Returns:
        {"exact_match", "f1"}: percentages over all questions in `gold_answers`; a question
        without a prediction scores 0 (and is logged), as in the official script.
    """
    exact_match = f1 = 0.0
    for qid, ground_truths in gold_answers.items():
        if not ground_truths:
            raise ValueError(f"squad metric: question {qid!r} has no gold answer; score SQuAD v2.0 with squad_v2")
        if qid not in predictions:
            logger.warning("Unanswered question %s will receive score 0.", qid)
            continue
        exact_match += metric_max_over_ground_truths(exact_match_score, predictions[qid], ground_truths)
        f1 += metric_max_over_ground_truths(f1_score, predictions[qid], ground_truths)
    total = len(gold_answers)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
