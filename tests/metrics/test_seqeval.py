"""The local seqeval evaluate module: conlleval's chunking, the Hub metric's keys, values worked out by hand.

Entities are written (type, first word, last word) with word positions counted over the sentences
joined by one O, as get_entities returns them.
"""

from pathlib import Path

import evaluate
import pytest

import hfpipe
from hfpipe.metrics import load_metric

SEQEVAL_DIR = Path(hfpipe.__file__).parent / "metrics" / "seqeval"
OVERALL = ["overall_precision", "overall_recall", "overall_f1", "overall_accuracy"]


@pytest.fixture(scope="module")
def seqeval():
    return load_metric("seqeval")


@pytest.fixture(scope="module")
def get_entities(seqeval):
    import importlib

    return importlib.import_module(type(seqeval).__module__).get_entities


def scores(p, r, f1, number):
    return {"precision": pytest.approx(p), "recall": pytest.approx(r), "f1": pytest.approx(f1), "number": number}


def test_bio_per_type_and_micro_average(seqeval):
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG", "O"]]
    predictions = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-ORG", "I-ORG", "O", "O"]]
    # gold: PER(0-1), LOC(3), ORG(6-8); predicted: PER(0-1) right, ORG(3) wrong type, ORG(6-7) wrong end.
    # PER 1/1, 1/1; LOC: nothing predicted (0/0 -> 0), 0/1; ORG: 0/2, 0/1.
    # overall: 1 right of 3 predicted and 3 gold -> P = R = F1 = 1/3; words: 3/4 + 4/5 right = 7/9.
    result = seqeval.compute(predictions=predictions, references=references)
    assert list(result) == ["LOC", "ORG", "PER", *OVERALL]
    assert result["PER"] == scores(1, 1, 1, 1)
    assert result["LOC"] == scores(0, 0, 0, 1)
    assert result["ORG"] == scores(0, 0, 0, 1)
    assert [result[k] for k in OVERALL] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 7 / 9])
    assert type(result["overall_f1"]) is float and type(result["PER"]["number"]) is int


def test_per_type_numbers_differ_from_the_micro_average(seqeval):
    references = [["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"], ["B-LOC", "O", "B-PER"]]
    predictions = [["B-PER", "I-PER", "O", "B-PER", "O", "O"], ["B-LOC", "O", "B-LOC"]]
    # gold PER(0-1), PER(3), PER(9), LOC(5), LOC(7); predicted PER(0-1), PER(3), LOC(7), LOC(9).
    # PER: 2 right, 2 predicted, 3 gold -> P 1, R 2/3, F1 2·(2/3)/(5/3) = 0.8.
    # LOC: 1 right (7), 2 predicted, 2 gold -> 1/2 each.
    # overall: 3 right, 4 predicted, 5 gold -> P 3/4, R 3/5, F1 0.9/1.35 = 2/3; words 7/9.
    result = seqeval.compute(predictions=predictions, references=references)
    assert result["PER"] == scores(1, 2 / 3, 0.8, 3)
    assert result["LOC"] == scores(0.5, 0.5, 0.5, 2)
    assert [result[k] for k in OVERALL] == pytest.approx([3 / 4, 3 / 5, 2 / 3, 7 / 9])


def test_iob1_an_i_tag_starts_an_entity_and_b_separates_neighbours(seqeval, get_entities):
    # IOB1: I- starts an entity; B- only marks the second of two adjacent entities of one type.
    references = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    predictions = [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]]
    assert get_entities(references) == [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]
    assert get_entities(predictions) == [("PER", 0, 2), ("LOC", 4, 4)]
    # PER: 0 right of 1 predicted / 2 gold; LOC 1/1. overall: 1 right, 2 predicted, 3 gold:
    # P 1/2, R 1/3, F1 (1/3)/(5/6) = 2/5; words 4/5.
    result = seqeval.compute(predictions=predictions, references=references)
    assert result["PER"] == scores(0, 0, 0, 2)
    assert result["LOC"] == scores(1, 1, 1, 1)
    assert [result[k] for k in OVERALL] == pytest.approx([1 / 2, 1 / 3, 2 / 5, 4 / 5])


def test_broken_sequences_start_new_entities_as_conlleval_does(seqeval, get_entities):
    # I-LOC after O starts a LOC; I-LOC right after B-PER ends the PER and starts a LOC.
    assert get_entities([["O", "I-LOC", "I-LOC", "O", "B-PER", "I-LOC"]]) == [
        ("LOC", 1, 2), ("PER", 4, 4), ("LOC", 5, 5)]
    assert get_entities([["B-PER", "I-ORG", "I-ORG", "B-ORG"]]) == [("PER", 0, 0), ("ORG", 1, 2), ("ORG", 3, 3)]
    # so a prediction with broken tags can still name every entity exactly: P = R = F1 = 1, while
    # token accuracy sees the two differing tags: 4/6.
    references = [["O", "B-LOC", "I-LOC", "O", "B-PER", "B-LOC"]]
    predictions = [["O", "I-LOC", "I-LOC", "O", "B-PER", "I-LOC"]]
    result = seqeval.compute(predictions=predictions, references=references)
    assert [result[k] for k in OVERALL] == pytest.approx([1, 1, 1, 4 / 6])


def test_entities_never_cross_sentences(get_entities):
    assert get_entities([["B-PER"], ["I-PER", "I-PER"]]) == [("PER", 0, 0), ("PER", 2, 3)]


def test_all_o_gives_zero_entity_scores_and_full_accuracy(seqeval):
    # No entity anywhere: every ratio is 0/0, which seqeval reports as 0; every tag is right.
    result = seqeval.compute(predictions=[["O", "O"], ["O"]], references=[["O", "O"], ["O"]])
    assert result == {"overall_precision": 0.0, "overall_recall": 0.0, "overall_f1": 0.0, "overall_accuracy": 1.0}


def test_empty_predictions_score_zero_recall(seqeval):
    # The tagger finds nothing: PER precision 0/0 -> 0, recall 0/1; words right: the O only, 1/3.
    result = seqeval.compute(predictions=[["O", "O", "O"]], references=[["B-PER", "I-PER", "O"]])
    assert result["PER"] == scores(0, 0, 0, 1)
    assert [result[k] for k in OVERALL] == pytest.approx([0, 0, 0, 1 / 3])
    # and an entity predicted where the gold has none gets its own row with number 0
    result = seqeval.compute(predictions=[["B-MISC", "O"]], references=[["O", "O"]])
    assert result["MISC"] == scores(0, 0, 0, 0)
    assert result["overall_accuracy"] == pytest.approx(1 / 2)


def test_suffix_tags(seqeval):
    result = seqeval.compute(predictions=[["PER-B", "PER-I", "O"]], references=[["PER-B", "PER-I", "O"]], suffix=True)
    assert result["PER"] == scores(1, 1, 1, 1)


def test_loads_with_plain_evaluate_and_checks_lengths():
    metric = evaluate.load(str(SEQEVAL_DIR))
    assert metric.compute(predictions=[["B-PER"]], references=[["B-PER"]])["overall_f1"] == 1.0
    with pytest.raises(ValueError, match="sentence 0 has 1 predicted tags but 2 gold tags"):
        metric.compute(predictions=[["O"]], references=[["O", "O"]])
