"""SQuAD v2.0 metric as a local `evaluate` module: the Hub's `squad_v2` metric, usable offline.

    from hfpipe.metrics import load_metric          # or evaluate.load("path/to/hfpipe/metrics/squad_v2")
    load_metric("squad_v2").compute(
        predictions=[{"id": "q1", "prediction_text": "", "no_answer_probability": 0.9}],
        references=[{"id": "q1", "answers": {"text": [], "answer_start": []}}])
    # {'exact': 100.0, 'f1': 100.0, 'total': 1, 'NoAns_exact': 100.0, ..., 'best_f1_thresh': 0.0}

Scoring is the official evaluate-v2.0.py (see compute_score.py) with the Hub metric's inputs and
result keys. Two small differences from the Hub module: `no_answer_probability` is float64 (the
Hub rounds it to float32, so the best thresholds it reports are not the values passed in, while
the official script reads them as doubles), and `no_answer_threshold` (default 1.0) is a compute()
argument (evaluate 0.4 has no metric config classes). Pass no_answer_probability 0.0 everywhere to
score as the official script does without --na-prob-file.
"""

import datasets
import evaluate

from hfpipe.metrics.squad.info import squad_metric_info

from .compute_score import compute_score, gold_answers_by_id

_CITATION = """\
@inproceedings{Rajpurkar2018SQuAD2,
  title={Know What You Don't Know: Unanswerable Questions for {SQuAD}},
  author={Pranav Rajpurkar and Robin Jia and Percy Liang},
  booktitle={ACL},
  year={2018}
}
"""

_DESCRIPTION = """\
The official scoring of the Stanford Question Answering Dataset v2.0, where about a third of the
questions have no answer in the paragraph: exact match and token F1 as in v1.1, with the empty
answer as the only right answer to an unanswerable question, broken down into answerable (HasAns)
and unanswerable (NoAns) questions, plus the best scores over no-answer probability thresholds.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id", "prediction_text" ("" to abstain), "no_answer_probability" (any
        score where higher means "more likely unanswerable"; 0.0 when the model gives none)}.
    references: list of {"id", "answers": {"text": [...], "answer_start": [...]}}; empty lists for
        an unanswerable question.
    no_answer_threshold: predictions whose no_answer_probability exceeds it count as abstentions.
Returns:
    exact, f1 (percentages), total; HasAns_exact, HasAns_f1, HasAns_total and NoAns_exact,
    NoAns_f1, NoAns_total (when such questions exist); best_exact, best_exact_thresh, best_f1,
    best_f1_thresh (the best totals over thresholds on no_answer_probability).
Examples:
    >>> squad_v2_metric = load_metric("squad_v2")
    >>> squad_v2_metric.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "1976", "no_answer_probability": 0.0}],
    ...     references=[{"id": "q1", "answers": {"text": ["1976"], "answer_start": [97]}}])
    {'exact': 100.0, 'f1': 100.0, 'total': 1, 'HasAns_exact': 100.0, 'HasAns_f1': 100.0, 'HasAns_total': 1, 'best_exact': 100.0, 'best_exact_thresh': 0.0, 'best_f1': 100.0, 'best_f1_thresh': 0.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV2(evaluate.Metric):
    def _info(self):
        predictions_feature = {
            "id": datasets.Value("string"),
            "prediction_text": datasets.Value("string"),
            "no_answer_probability": datasets.Value("float64"),
        }
        return squad_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, predictions_feature)

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        gold_answers = gold_answers_by_id(references)
        return compute_score(gold_answers, predicted, na_probs, no_answer_threshold=no_answer_threshold)
