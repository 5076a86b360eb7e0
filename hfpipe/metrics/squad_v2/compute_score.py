"""SQuAD v2.0's official scoring (evaluate-v2.0.py, Rajpurkar, Jia and Liang 2018), re-written.

Differences from v1.1: a question whose gold answers all normalise to nothing is scored against
[""] (the only right answer is to abstain); F1 is 1 when prediction and gold are both empty and 0
when only one is; a question counts as "HasAns" when its raw answer list is non-empty. A
prediction whose no-answer probability exceeds `no_answer_threshold` is read as an abstention.
`find_best_thresh` sweeps that threshold over the predicted probabilities and reports the best
total, as the official script does with --na-prob-file.

The normalisation, exact match and v1.1 F1 come from hfpipe's squad metric. evaluate copies only
this folder into its module cache, so they are imported from the installed hfpipe package rather
than by a relative import (which would need a copy of ../squad/compute_score.py here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hfpipe.metrics.squad.compute_score import (  # noqa: F401 (gold_answers_by_id: re-exported for squad_v2.py)
    exact_match_score,
    f1_score,
    gold_answers_by_id,
    normalize_answer,
)


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(exact_match_score(a_pred, a_gold))


def compute_f1(a_gold: str, a_pred: str) -> float:
    """Token F1 in [0, 1]; when either side is empty (no answer), 1 if both are, else 0."""
    if not normalize_answer(a_gold) or not normalize_answer(a_pred):
        return float(normalize_answer(a_gold) == normalize_answer(a_pred))
    return f1_score(a_pred, a_gold)


def get_raw_scores(
    gold_answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question exact (0/1) and F1 ([0, 1]) before any no-answer threshold, max over gold answers."""
    missing = [qid for qid in gold_answers if qid not in predictions]
    if missing:
        # The official script skips them here and then fails on the HasAns/NoAns totals.
        raise ValueError(f"squad_v2 metric: no prediction for {len(missing)} question(s), e.g. {missing[0]!r}")
    exact_scores, f1_scores = {}, {}
    for qid, answers in gold_answers.items():
        golds = [a for a in answers if normalize_answer(a)] or [""]
        exact_scores[qid] = max(compute_exact(a, predictions[qid]) for a in golds)
        f1_scores[qid] = max(compute_f1(a, predictions[qid]) for a in golds)
    return exact_scores, f1_scores


def apply_no_ans_threshold(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, float]:
    """Questions with no-answer probability > threshold score 1 if unanswerable, else 0."""
    return {
        qid: float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else score
        for qid, score in scores.items()
    }


def make_eval_dict(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], qid_list: Sequence[str] | None = None
) -> dict[str, float]:
    """{"exact", "f1", "total"} over `qid_list` (all questions when None), as percentages."""
    qids = list(exact_scores) if qid_list is None else qid_list
    total = len(qids)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qids) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qids) / total,
        "total": total,
    }


def merge_eval(main_eval: dict, new_eval: Mapping, prefix: str) -> None:
    for key, value in new_eval.items():
        main_eval[f"{prefix}_{key}"] = value


def find_best_thresh(
    predictions: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """The best total (percentage) over thresholds, and the threshold that reaches it.

    Start from "abstain on everything" (every NoAns question right), then admit questions in
    increasing no-answer probability: an answerable one adds its score, an unanswerable one
    costs 1 if the model gave a non-empty answer. Ties keep the lowest threshold; 0.0 when
    abstaining everywhere is best.
    """
    cur_score = best_score = sum(1 for has_ans in qid_to_has_ans.values() if not has_ans)
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            cur_score += scores[qid]
        elif predictions[qid]:
            cur_score -= 1
        if cur_score > best_score:
            best_score, best_thresh = cur_score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(
    main_eval: dict,
    predictions: Mapping[str, str],
    exact_raw: Mapping[str, float],
    f1_raw: Mapping[str, float],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> None:
    main_eval["best_exact"], main_eval["best_exact_thresh"] = find_best_thresh(
        predictions, exact_raw, na_probs, qid_to_has_ans
    )
    main_eval["best_f1"], main_eval["best_f1_thresh"] = find_best_thresh(predictions, f1_raw, na_probs, qid_to_has_ans)


def compute_score(
    gold_answers: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float],
    no_answer_threshold: float = 1.0,
) -> dict[str, float]:
    """Official v2.0 totals, keyed as the Hub's squad_v2 metric.

    Args:
        gold_answers: question id -> gold answer texts ([] for an unanswerable question).
        predictions: question id -> predicted text ("" to abstain).
        na_probs: question id -> the model's no-answer probability (or any score where higher
            means "more likely unanswerable", e.g. null-score differences).
        no_answer_threshold: abstain where na_probs > this (1.0: probabilities never do).

    Returns:
        exact, f1, total, then HasAns_* and NoAns_* (each only when such questions exist), then
        best_exact, best_exact_thresh, best_f1, best_f1_thresh.
    """
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold_answers.items()}
    exact_raw, f1_raw = get_raw_scores(gold_answers, predictions)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, no_answer_threshold)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, no_answer_threshold)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    for prefix, has_ans in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, v in qid_to_has_ans.items() if v == has_ans]
        if qids:
            merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=qids), prefix)
    find_all_best_thresh(out_eval, predictions, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return out_eval
