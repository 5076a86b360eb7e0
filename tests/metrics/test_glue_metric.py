"""The local GLUE evaluate module: the Hub metric's configs and keys, values worked out by hand."""

import math
from pathlib import Path

import evaluate
import pytest

import hfpipe

GLUE_METRIC_DIR = Path(hfpipe.__file__).parent / "metrics" / "glue"


def glue_metric(config_name):
    return evaluate.load(str(GLUE_METRIC_DIR), config_name)


def test_cola_matthews_correlation():
    references = [1, 1, 1, 0, 0, 1, 0, 1]
    predictions = [1, 0, 1, 0, 1, 1, 0, 1]
    # TP 4, FN 1, TN 2, FP 1: (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 7 / 15
    result = glue_metric("cola").compute(predictions=predictions, references=references)
    assert result == {"matthews_correlation": pytest.approx(7 / 15)}
    assert type(result["matthews_correlation"]) is float


@pytest.mark.parametrize("config_name", ["mrpc", "qqp"])
def test_accuracy_and_f1_of_the_positive_class(config_name):
    references = [1, 0, 0, 1, 1, 0]
    predictions = [1, 0, 1, 1, 0, 0]
    # 4/6 correct; TP 2, FP 1, FN 1: precision 2/3, recall 2/3, F1 2/3
    result = glue_metric(config_name).compute(predictions=predictions, references=references)
    assert result == {"accuracy": pytest.approx(4 / 6), "f1": pytest.approx(2 / 3)}


def test_invalid_predictions_count_as_wrong():
    # -1 (an unparseable generation) on a positive row is a false negative, on a negative row a
    # false positive (T5's f1_score_with_invalid): TP 1, FP 1, FN 1 -> F1 1/2; accuracy 2/4.
    result = glue_metric("mrpc").compute(predictions=[1, -1, -1, 0], references=[1, 1, 0, 0])
    assert result == {"accuracy": pytest.approx(0.5), "f1": pytest.approx(0.5)}
    result = glue_metric("rte").compute(predictions=[-1, 0, 1], references=[0, 0, 1])
    assert result == {"accuracy": pytest.approx(2 / 3)}


def test_stsb_pearson_and_spearman():
    predictions = [1.0, 2.0, 3.0, 4.0, 10.0]
    references = [2.0, 1.0, 4.0, 3.0, 5.0]
    # Pearson: deviations (-3,-2,-1,0,6) and (-1,-2,1,0,2): 18 / sqrt(50 · 10).
    # Spearman: rank differences (-1,1,-1,1,0): 1 − 6·4 / (5·(25−1)) = 0.8.
    result = glue_metric("stsb").compute(predictions=predictions, references=references)
    assert set(result) == {"pearson", "spearmanr"}
    assert result["pearson"] == pytest.approx(18 / math.sqrt(500), abs=1e-6)
    assert result["spearmanr"] == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize(
    "config_name", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans"]
)
def test_accuracy_configs(config_name):
    result = glue_metric(config_name).compute(predictions=[0, 1, 2, 1, 0], references=[0, 1, 1, 1, 2])
    assert result == {"accuracy": pytest.approx(3 / 5)}


def test_unknown_config_is_rejected_like_the_hub_metric():
    with pytest.raises(KeyError, match="unknown configuration 'mprc'"):
        glue_metric("mprc")
