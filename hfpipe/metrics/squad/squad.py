"""SQuAD v1.1 metric as a local `evaluate` module: the Hub's `squad` metric, usable offline.

    from hfpipe.metrics import load_metric          # or evaluate.load("path/to/hfpipe/metrics/squad")
    load_metric("squad").compute(
        predictions=[{"id": "q1", "prediction_text": "the Denver Broncos"}],
        references=[{"id": "q1", "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}])
    # {'exact_match': 100.0, 'f1': 100.0}

Scoring is the official evaluate-v1.1.py (see compute_score.py): same inputs, result keys and
x100 scale as the Hub's metric.
"""

import datasets
import evaluate

from .compute_score import compute_score, gold_answers_by_id
from .info import squad_metric_info

_CITATION = """\
@inproceedings{Rajpurkar2016SQuAD10,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Pranav Rajpurkar and Jian Zhang and Konstantin Lopyrev and Percy Liang},
  booktitle={EMNLP},
  year={2016}
}
"""

_DESCRIPTION = """\
The official scoring of the Stanford Question Answering Dataset v1.1: exact match and token F1
between the predicted answer and each gold answer after normalisation (lower-case, no
punctuation, no articles, single spaces), the maximum over gold answers, averaged x100.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": question id, "prediction_text": answer text}.
    references: list of {"id": question id, "answers": {"text": [gold texts], "answer_start": [ints]}};
        answer_start is not used for scoring.
Returns:
    "exact_match": percentage of questions whose normalised prediction equals a gold answer.
    "f1": mean over questions of the best token F1, x100.
Examples:
    >>> squad_metric = load_metric("squad")
    >>> squad_metric.compute(predictions=[{"id": "q1", "prediction_text": "1976"}],
    ...                      references=[{"id": "q1", "answers": {"text": ["1976"], "answer_start": [97]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        predictions_feature = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        return squad_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION, predictions_feature)

    def _compute(self, predictions, references):
        predicted = {pred["id"]: pred["prediction_text"] for pred in predictions}
        return compute_score(gold_answers_by_id(references), predicted)
