"""The embedded GLUE / SQuAD stand-ins: load_glue's and load_squad's exact layout, honest labels,
balance, exact answer offsets, determinism and speed."""

import random
import re
import time
from collections import Counter

import numpy as np
import pytest

from hfpipe.tasks import embedded
from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.tasks.embedded import embedded_glue, embedded_squad, shuffle_words, word_jaccard
from hfpipe.errors import InputError
from hfpipe.tasks.glue import GLUE_TASKS, glue_features
from hfpipe.tasks.squad import SQUAD_FEATURES

CUE = re.compile(r'What follows "(.+)" in the text\?')


@pytest.fixture(scope="module")
def pools():
    return embedded._pools()


@pytest.fixture(scope="module")
def doc_of(pools):
    """sentence -> the set of document ids holding it (a sentence may recur across docstrings)."""
    docs = {}
    for pool in pools.values():
        for doc_id, sentence in pool.sentences:
            docs.setdefault(sentence, set()).add(doc_id)
    return docs


def _words(text):
    return sorted(re.findall(r"\w+", text.lower()))


@pytest.mark.parametrize("task", list(GLUE_TASKS))
def test_glue_layout_matches_load_glue(task):
    ds = embedded_glue(task, num_train=30, num_eval=12)
    mnli_splits = ["train", "validation_matched", "validation_mismatched"]
    assert list(ds) == (mnli_splits if task == "mnli" else ["train", "validation"])
    for split, dataset in ds.items():
        assert dataset.features == glue_features(task)  # what load_glue gives every split
        assert dataset.num_rows == (30 if split == "train" else 12)
        assert dataset["idx"] == list(range(dataset.num_rows))
        for field in GLUE_TASKS[task].text_fields:
            assert all(isinstance(text, str) and len(text.split()) >= 1 for text in dataset[field])


@pytest.mark.parametrize("task", [name for name, spec in GLUE_TASKS.items() if not spec.is_regression])
def test_glue_labels_balanced(task):
    ds = embedded_glue(task, num_train=256, num_eval=64)
    k = GLUE_TASKS[task].num_labels
    for dataset in ds.values():
        counts = Counter(dataset["label"])
        assert sorted(counts) == list(range(k))
        assert max(counts.values()) - min(counts.values()) <= 1
    if task == "mnli":
        assert sorted(Counter(ds["train"]["label"]).values()) == [85, 85, 86]  # 256 = 86 + 85 + 85


@pytest.mark.parametrize("task", ["cola", "sst2"])
def test_single_sentence_labels(task, doc_of):
    ds = embedded_glue(task, num_train=200, num_eval=8)["train"]
    corpus_word_lists = {tuple(_words(s)) for s in doc_of}
    for sentence, label in zip(ds["sentence"], ds["label"]):
        if label == 1:  # acceptable / positive: a corpus sentence, verbatim
            assert sentence in doc_of
        else:  # unacceptable / negative: the same words in another order
            assert sentence not in doc_of
            assert tuple(_words(sentence)) in corpus_word_lists
            assert sentence[0].isupper() and sentence[-1] in ".!?"


def test_mnli_relations(pools, doc_of):
    ds = embedded_glue("mnli", num_train=240, num_eval=30)
    train = ds["train"]
    next_pairs, far_pairs = set(pools["train"].next_pairs), set(pools["train"].far_pairs)
    for premise, hypothesis, label in zip(train["premise"], train["hypothesis"], train["label"]):
        name = train.features["label"].int2str(label)
        if name == "entailment":
            assert (premise, hypothesis) in next_pairs
        elif name == "neutral":
            assert (premise, hypothesis) in far_pairs and (premise, hypothesis) not in next_pairs
            assert doc_of[premise] & doc_of[hypothesis]
        else:  # contradiction: sentences of two different docstrings
            assert (premise, hypothesis) not in next_pairs and (premise, hypothesis) not in far_pairs


@pytest.mark.parametrize("task, positive", [("mrpc", 1), ("qqp", 1), ("rte", 0), ("qnli", 0), ("wnli", 1)])
def test_pair_positive_is_next_sentence(task, positive, pools):
    spec = GLUE_TASKS[task]
    assert spec.label_names[positive] in ("equivalent", "duplicate", "entailment")  # the Hub's order
    train = embedded_glue(task, num_train=64, num_eval=8)["train"]
    next_pairs = {(a.rstrip(".!?"), b.rstrip(".!?")) for a, b in pools["train"].next_pairs}
    a_field, b_field = spec.text_fields
    for a, b, label in zip(train[a_field], train[b_field], train["label"]):
        if a_field.startswith("question"):
            assert a.endswith("?")
        is_next = (a.rstrip(".!?"), b.rstrip(".!?")) in next_pairs
        assert is_next == (label == positive)


def test_splits_come_from_disjoint_documents(pools):
    docs = {name: {doc_id for doc_id, _ in pool.sentences} for name, pool in pools.items()}
    assert not docs["train"] & docs["validation"]
    assert not docs["train"] & docs["validation_mismatched"]
    assert not docs["validation"] & docs["validation_mismatched"]


def test_stsb_scores_are_five_times_word_jaccard():
    train = embedded_glue("stsb", num_train=400, num_eval=8)["train"]
    scores = np.array(train["label"])
    expected = [5 * word_jaccard(a, b) for a, b in zip(train["sentence1"], train["sentence2"])]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert scores.min() >= 0.0 and scores.max() <= 5.0
    # p ~ U(0, 1) spreads the scores: both ends are reached and the middle is populated
    assert (scores < 1).mean() > 0.1 and (scores > 4).mean() > 0.1
    assert 1.5 < scores.mean() < 3.5 and scores.std() > 1.0


def test_word_jaccard_hand_worked():
    assert word_jaccard("A b c.", "b c d") == pytest.approx(2 / 4)
    assert word_jaccard("x", "y") == 0.0
    assert word_jaccard("Same words", "same, WORDS!") == 1.0


def test_shuffle_words_keeps_edges():
    class NoShuffle(random.Random):
        def shuffle(self, x):
            pass

    # an identity shuffle is rotated: the output always differs from the input
    assert shuffle_words("The cat sat.", NoShuffle()) == "Cat sat the."
    assert shuffle_words("TypeError is raised here!", NoShuffle()) == "Is raised here TypeError!"
    out = shuffle_words("Return the value of the named attribute.", random.Random(3))
    assert out != "Return the value of the named attribute."
    assert out[0].isupper() and out.endswith(".")
    assert _words(out) == _words("Return the value of the named attribute.")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_squad_layout_and_exact_answers(version):
    ds = embedded_squad(num_train=128, num_eval=32, version=version)
    assert list(ds) == ["train", "validation"]
    for split, dataset in ds.items():
        assert dataset.features == SQUAD_FEATURES
        assert dataset.num_rows == (128 if split == "train" else 32)
        assert len(set(dataset["id"])) == dataset.num_rows
        unanswerable = 0
        for row in dataset:
            cue = CUE.fullmatch(row["question"]).group(1)
            texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
            if not texts:
                unanswerable += 1
                assert cue not in row["context"]
                continue
            assert len(texts) == len(starts) == 1
            context, text, start = row["context"], texts[0], starts[0]
            assert context[start:].startswith(text) and text
            assert row["context"].count(cue) == 1
            after_cue = context.index(cue) + len(cue)
            # the answer is the 1-3 words right after the cue, edge punctuation aside
            assert context[after_cue:start].strip(" .,;:!?()\"'") == ""
            assert 1 <= len(text.split()) <= 3
        # v2: every third question (balanced, shuffled) is unanswerable: 128 -> 43, 32 -> 11
        expected = {"train": 43, "validation": 11}[split] if version == "v2" else 0
        assert unanswerable == expected


def test_deterministic_for_a_seed():
    assert embedded_glue("rte", seed=1)["train"].to_dict() == embedded_glue("rte", seed=1)["train"].to_dict()
    assert embedded_glue("rte", seed=1)["train"].to_dict() != embedded_glue("rte", seed=2)["train"].to_dict()
    assert embedded_squad(version="v2", seed=4)["validation"].to_dict() == \
        embedded_squad(version="v2", seed=4)["validation"].to_dict()
    assert embedded_squad(seed=4)["train"]["question"] != embedded_squad(seed=5)["train"]["question"]


def test_bad_arguments_raise_input_error():
    with pytest.raises(InputError, match="unknown GLUE task 'mrcp'"):
        embedded_glue("mrcp")
    with pytest.raises(InputError, match="num_train must be a positive integer, got 0"):
        embedded_glue("cola", num_train=0)
    with pytest.raises(InputError, match="num_eval"):
        embedded_squad(num_eval=-1)
    with pytest.raises(InputError, match="SQuAD version 'v3'"):
        embedded_squad(version="v3")


def test_fast_from_a_cold_start():
    embedded_corpus()  # parsing the standard library (seconds, cached per process) is corpus.py's cost
    embedded._pools.cache_clear()
    start = time.perf_counter()
    embedded_glue("mnli")
    cold = time.perf_counter() - start
    start = time.perf_counter()
    for task in GLUE_TASKS:
        embedded_glue(task)
    embedded_squad(version="v2")
    warm = time.perf_counter() - start
    assert cold < 2.0, f"first embedded_glue call took {cold:.2f} s"
    assert warm < 2.0, f"nine GLUE tasks and SQuAD v2 took {warm:.2f} s once the corpus is cached"
