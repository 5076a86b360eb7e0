"""GLUE metric as a local `evaluate` module: the Hub's `glue` metric, usable offline.

    import evaluate
    metric = evaluate.load("path/to/hfpipe/metrics/glue", "mrpc")
    metric.compute(predictions=[1, 0, 1], references=[1, 1, 1])
    # {'accuracy': 0.666..., 'f1': 0.8}

The evaluate 0.4 wheel ships no metric scripts and the Hub is not always reachable, so this
module re-creates the Hub metric's contract (same config names, same result keys, values as
plain floats in [0, 1], not scaled by 100) on top of scikit-learn and scipy.

Kept free of hfpipe imports on purpose: evaluate copies this file into its module cache and
imports it from there.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = """\
GLUE (General Language Understanding Evaluation, Wang et al. 2018) metrics per task:
CoLA Matthews correlation; SST-2, MNLI (matched and mismatched), QNLI, RTE, WNLI and HANS
accuracy; MRPC and QQP accuracy and binary F1 of the positive class (label 1); STS-B Pearson
and Spearman correlation.
"""

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations},
  year={2019}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N,) predicted class ids (int; -1 for an unparseable generation counts as
        wrong), or (N,) predicted similarity scores (float) for "stsb".
    references: (N,) gold class ids, or gold scores for "stsb".
Returns: a dict of floats in [0, 1] ([-1, 1] for correlations):
    "cola": {"matthews_correlation"}
    "stsb": {"pearson", "spearmanr"}
    "mrpc", "qqp": {"accuracy", "f1"}
    "sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans": {"accuracy"}
Examples:
    >>> glue_metric = evaluate.load("hfpipe/metrics/glue", "mrpc")
    >>> glue_metric.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    {'accuracy': 0.75, 'f1': 0.8}
"""

ACCURACY_CONFIGS = ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans")
CONFIG_NAMES = ("cola", "stsb", "mrpc", "qqp", *ACCURACY_CONFIGS)


def accuracy(predictions, references):
    return float(np.mean(np.asarray(predictions) == np.asarray(references)))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIG_NAMES:
            # KeyError, as the Hub's glue metric raises, so callers written for it keep working.
            raise KeyError(
                f"glue metric: unknown configuration {self.config_name!r}; expected one of {', '.join(CONFIG_NAMES)}"
            )
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            homepage="https://gluebenchmark.com/",
            format="numpy",
        )

    def _compute(self, predictions, references):
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        if self.config_name in ("mrpc", "qqp"):
            # F1 of the positive class (paraphrase / duplicate = 1), as GLUE reports it. An invalid
            # prediction (-1, an unparseable generation) counts as the wrong class, as T5's
            # f1_score_with_invalid does; plain sklearn would reject the third label.
            valid_predictions = np.where(np.isin(predictions, (0, 1)), predictions, 1 - np.asarray(references))
            return {
                "accuracy": accuracy(predictions, references),
                "f1": float(f1_score(references, valid_predictions, pos_label=1, average="binary")),
            }
        return {"accuracy": accuracy(predictions, references)}
