"""The local SQuAD v1.1 / v2.0 evaluate modules: the official scoring, worked out by hand."""

import logging

import pytest

from hfpipe.errors import InputError
from hfpipe.metrics import available_metrics, load_metric
from hfpipe.metrics.squad.compute_score import compute_score, exact_match_score, f1_score, normalize_answer
from hfpipe.metrics.squad_v2.compute_score import compute_f1
from hfpipe.metrics.squad_v2.compute_score import compute_score as compute_score_v2

# The Hub's squad_v2 result keys, in its order.
SQUAD_V2_KEYS = [
    "exact", "f1", "total",
    "HasAns_exact", "HasAns_f1", "HasAns_total",
    "NoAns_exact", "NoAns_f1", "NoAns_total",
    "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
]


def reference(qid, *texts):
    return {"id": qid, "answers": {"text": list(texts), "answer_start": [0] * len(texts)}}


@pytest.fixture(scope="module")
def squad():
    return load_metric("squad")


@pytest.fixture(scope="module")
def squad_v2():
    return load_metric("squad_v2")


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Quick, brown fox!", "quick brown fox"),  # case, punctuation, article, spaces
        ("\tNew\nYork  ", "new york"),  # any white space collapses
        ("an apple and a pear", "apple and pear"),  # all three articles
        ("theory of another anthem", "theory of another anthem"),  # articles only as whole words
        ("the-end", "theend"),  # punctuation goes first, so "the" is no longer a word
        ("U.S.-led", "usled"),
        ("«Élan» – 5%", "«élan» – 5"),  # only ASCII punctuation is removed; lower() is Unicode
        ("The", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_token_f1_by_hand():
    # pred [denver, broncos, team] vs gold [denver, broncos]: P 2/3, R 1 -> F1 2*(2/3)/(5/3) = 0.8
    assert f1_score("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    # Counter overlap: pred [cat, cat, cat] vs gold [cat, cat, dog]: 2 shared, P = R = 2/3
    assert f1_score("the cat cat cat", "cat cat dog") == pytest.approx(2 / 3)
    assert f1_score("Carolina", "Denver Broncos") == 0.0
    assert f1_score("", "") == 0.0  # v1.1: nothing shared is 0, even when both are empty
    assert compute_f1("", "") == 1.0  # v2.0: both empty = a right abstention
    assert compute_f1("Denver", "") == 0.0
    assert compute_f1("The", "a") == 1.0  # both normalise to nothing
    assert exact_match_score("  the DENVER broncos.", "Denver Broncos")


def test_squad_metric_max_over_gold_answers(squad):
    references = [
        reference("q1", "Denver Broncos", "Broncos"),
        reference("q2", "Denver Broncos"),
        reference("q3", "10th and 11th centuries", "in the 10th and 11th centuries"),
        reference("q4", "Santa Clara"),
    ]
    predictions = [
        {"id": "q1", "prediction_text": "broncos"},  # exact against the second gold answer
        {"id": "q2", "prediction_text": "the Denver Broncos team"},  # F1 0.8
        {"id": "q3", "prediction_text": "in 10th and 11th centuries"},  # exact against the second
        {"id": "q4", "prediction_text": "Levi's Stadium"},  # 0
    ]
    result = squad.compute(predictions=predictions, references=references)
    assert result == {"exact_match": pytest.approx(50.0), "f1": pytest.approx(100 * 2.8 / 4)}


def test_squad_metric_one_answer():
    metric = load_metric("squad")
    result = metric.compute(
        predictions=[{"id": "56e10a3be3433e1400422b22", "prediction_text": "1976"}],
        references=[{"id": "56e10a3be3433e1400422b22", "answers": {"text": ["1976"], "answer_start": [97]}}],
    )
    assert result == {"exact_match": 100.0, "f1": 100.0}


def test_unanswered_question_scores_zero_and_counts(caplog):
    with caplog.at_level(logging.WARNING):
        result = compute_score({"q1": ["Denver"], "q2": ["Carolina"]}, {"q1": "Denver"})
    assert result == {"exact_match": 50.0, "f1": 50.0}
    assert "Unanswered question q2" in caplog.text


def test_squad_rejects_duplicate_ids_and_questions_without_answers(squad):
    with pytest.raises(ValueError, match="'q1' appears twice"):
        squad.compute(
            predictions=[{"id": "q1", "prediction_text": "a"}, {"id": "q1", "prediction_text": "a"}],
            references=[reference("q1", "a"), reference("q1", "a")],
        )
    with pytest.raises(ValueError, match="'q2' has no gold answer"):
        compute_score({"q2": []}, {"q2": ""})


def v2_case():
    references = [
        reference("q1", "Denver Broncos"),
        reference("q2", "Carolina Panthers", "Panthers"),
        reference("q3"),  # unanswerable
        reference("q4"),  # unanswerable
    ]
    predictions = [
        {"id": "q1", "prediction_text": "Denver Broncos", "no_answer_probability": 0.1},  # EM 1, F1 1
        {"id": "q2", "prediction_text": "the Carolina", "no_answer_probability": 0.2},  # EM 0, F1 2/3
        {"id": "q3", "prediction_text": "", "no_answer_probability": 0.9},  # right abstention: 1, 1
        {"id": "q4", "prediction_text": "Broncos", "no_answer_probability": 0.3},  # 0, 0
    ]
    return predictions, references


def test_squad_v2_scores_and_breakdown(squad_v2):
    predictions, references = v2_case()
    result = squad_v2.compute(predictions=predictions, references=references)
    assert list(result) == SQUAD_V2_KEYS
    expected = {
        "exact": 50.0,
        "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4,
        "total": 4,
        "HasAns_exact": 50.0,
        "HasAns_f1": 100 * (1 + 2 / 3) / 2,
        "HasAns_total": 2,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
        # Admitting answers in increasing no-answer probability from "abstain everywhere" (2 right):
        # exact: q1 (0.1) +1 -> 3, q2 (0.2) +0, q4 (0.3) -1, q3 (0.9) +0 -> best 3/4 at 0.1;
        # F1: q1 +1 -> 3, q2 +2/3 -> 3 2/3 (best, at 0.2), q4 -1, q3 +0.
        "best_exact": 75.0,
        "best_exact_thresh": 0.1,
        "best_f1": 100 * (3 + 2 / 3) / 4,
        "best_f1_thresh": 0.2,
    }
    assert result == pytest.approx(expected)


def test_squad_v2_no_answer_threshold(squad_v2):
    predictions, references = v2_case()
    # Above 0.25 counts as abstaining: q4 (0.3) becomes a right abstention, q3 (0.9) stays one.
    result = squad_v2.compute(predictions=predictions, references=references, no_answer_threshold=0.25)
    assert result["exact"] == pytest.approx(75.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 1) / 4)
    assert result["NoAns_exact"] == 100.0
    # Below 0.1 every answer is withdrawn: only the unanswerable questions are right.
    result = squad_v2.compute(predictions=predictions, references=references, no_answer_threshold=0.05)
    assert (result["exact"], result["HasAns_exact"], result["NoAns_exact"]) == (50.0, 0.0, 100.0)


def test_squad_v2_hub_example(squad_v2):
    result = squad_v2.compute(
        predictions=[{"id": "56e10a3be3433e1400422b22", "prediction_text": "1976", "no_answer_probability": 0.0}],
        references=[{"id": "56e10a3be3433e1400422b22", "answers": {"text": ["1976"], "answer_start": [97]}}],
    )
    assert result == {
        "exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": 1,
        "best_exact": 100.0, "best_exact_thresh": 0.0, "best_f1": 100.0, "best_f1_thresh": 0.0,
    }


def test_squad_v2_gold_that_normalises_to_nothing():
    # Counted as HasAns (its raw answer list is not empty) but scored against [""], as officially.
    result = compute_score_v2({"q1": ["The"], "q2": ["Denver"]}, {"q1": "", "q2": "a"}, {"q1": 0.0, "q2": 0.0})
    assert (result["exact"], result["f1"], result["HasAns_total"]) == (50.0, 50.0, 2)
    assert "NoAns_total" not in result


def test_squad_v2_missing_prediction_is_an_error():
    with pytest.raises(ValueError, match="no prediction for 1 question"):
        compute_score_v2({"q1": ["a"], "q2": []}, {"q1": "a"}, {"q1": 0.0})


def test_load_metric_names():
    assert {"squad", "squad_v2"} <= set(available_metrics())
    with pytest.raises(InputError, match="metric 'squad_v3'"):
        load_metric("squad_v3")
