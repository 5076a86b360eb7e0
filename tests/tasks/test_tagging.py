"""Token tagging: CoNLL reading, label alignment on word pieces, windows, predictions back to words,
the embedded data and the recipe keys. Word pieces come from a fixed WordPiece vocabulary, so every
expected label is worked out by hand."""

import json

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hfpipe.tasks.embedded import TAGGING_NER_LABELS, TAGGING_POS_LABELS, embedded_tagging
from hfpipe.errors import InputError
from hfpipe.recipes import Recipe
from hfpipe.tasks.tagging import (
    check_tags,
    flat_scores,
    from_columns,
    inside_label,
    label_list,
    load_splits,
    load_tagging,
    read_conll,
    tags_from_predictions,
    tokenize_and_align,
    word_windows,
    write_predictions_jsonl,
)

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O"""

LABELS = ["O", "B-PER", "I-PER", "B-MISC", "I-MISC"]
LABEL2ID = {tag: i for i, tag in enumerate(LABELS)}


@pytest.fixture(scope="module")
def tokenizer():
    """BERT-style WordPiece over a fixed vocabulary: John -> jo ##hn, visited -> visit ##ed,
    Yorkers -> york ##ers, abcdef -> a ##b ##c ##d ##e ##f; [CLS] ... [SEP] around each input."""
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "new", "york", "##ers", "visit", "##ed", "paris", ".", "jo",
              "##hn", "a", "##b", "##c", "##d", "##e", "##f"]
    backend = Tokenizer(models.WordPiece({p: i for i, p in enumerate(pieces)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def sentences(*rows):
    return datasets.Dataset.from_dict({"tokens": [r[0] for r in rows], "tags": [r[1] for r in rows]})


JOHN = (["John", "visited", "New", "Yorkers", "."], ["B-PER", "O", "B-MISC", "I-MISC", "O"])


# ------------------------------------------------------------------------------------------ reading
def test_conll_reader_skips_docstart_and_blank_lines_and_reads_the_chosen_column(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    ner = read_conll(path)
    assert ner["tokens"] == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"],
                             ["BRUSSELS", "1996-08-22"]]
    assert ner["tags"] == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert ner["line"] == [3, 9, 15]  # each sentence's first word
    assert read_conll(path, tag_column=1)["tags"][0] == ["NNP", "VBZ", "JJ", "NN", "."]
    assert read_conll(path, tag_column=2)["tags"][1] == ["B-NP", "I-NP"]
    assert label_list(ner) == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER", "O"]  # sorted: no ClassLabel


def test_conll_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(InputError, match=r"bad.txt:2: expected a word and its tag in column -1 .* 1 column\(s\)"):
        read_conll(path)
    path.write_text("EU NNP B-NP B-ORG\n\nrejects VBZ B-VP\n")
    with pytest.raises(InputError, match=r"bad.txt:3: expected a word and its tag in column 3"):
        read_conll(path, tag_column=3)
    with pytest.raises(InputError, match="conll_tag_column 0 is the word itself"):
        read_conll(path, tag_column=0)
    for text in ("", "\n\n", "-DOCSTART- -X- -X- O\n\n"):
        path.write_text(text)
        with pytest.raises(InputError, match=r"bad.txt: no sentences"):
            read_conll(path)


def test_unknown_evaluation_tag_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text("Peter B-PER\nBlackburn I-PER\n\nin O\nBRUSSELS B-LOC\n")
    dev = read_conll(path)
    check_tags(dev.select([0]), LABELS, str(path))  # PER tags are known
    with pytest.raises(InputError, match=r"dev.txt:5: tag 'B-LOC' is not in the training label set \(O, B-PER"):
        check_tags(dev, LABELS, str(path))
    hub = sentences((["a", "b"], ["O", "B-X"]))
    with pytest.raises(InputError, match=r"hub \[validation\] row 0 word 1: tag 'B-X'"):
        check_tags(hub, LABELS, "hub [validation]")


def test_tables_with_classlabel_ids_become_tag_names_in_classlabel_order(tmp_path):
    features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=LABELS))})
    table = datasets.Dataset.from_dict({"id": ["0"], "tokens": [JOHN[0]], "ner_tags": [[1, 0, 3, 4, 0]]},
                                       features=features)
    out, names = from_columns(table, "tokens", "ner_tags", "t")
    assert out["tags"] == [JOHN[1]] and names == LABELS
    assert label_list(out, names) == LABELS
    with pytest.raises(InputError, match=r"t: no column 'labels' \(task.tags_column\); it has id, tokens, ner_tags"):
        from_columns(table, "tokens", "labels", "t")
    bad = datasets.Dataset.from_dict({"tokens": [["a"], ["a", "b"]], "tags": [["O"], ["O"]]})
    with pytest.raises(InputError, match=r"t row 1: 2 words but 1 tags"):
        from_columns(bad, "tokens", "tags", "t")
    # JSON lines with tag names, and a held-out validation split keeps the file as its source
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"words": JOHN[0], "labels": JOHN[1]}) + "\n" for _ in range(10)))
    rows, names = load_tagging(str(path), "train", tokens_column="words", tags_column="labels")
    assert names is None and rows["tags"] == [JOHN[1]] * 10
    splits, _, where = load_splits({"train": str(path)}, "words", "labels", holdout_percentage=20, seed=0)
    assert (len(splits["train"]), len(splits["validation"])) == (8, 2) and where["validation"] == str(path)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty.jsonl: empty file"):
        load_tagging(str(tmp_path / "empty.jsonl"), "train")


# ------------------------------------------------------------------------------------ word pieces
def test_label_on_first_piece_or_on_all_pieces(tokenizer):
    # [CLS] jo ##hn visit ##ed new york ##ers . [SEP]; words 0 0 1 1 2 3 3 4
    first = tokenize_and_align(sentences(JOHN), tokenizer, LABEL2ID, max_seq_length=32)[0]
    assert tokenizer.convert_ids_to_tokens(first["input_ids"]) == [
        "[CLS]", "jo", "##hn", "visit", "##ed", "new", "york", "##ers", ".", "[SEP]"]
    assert first["labels"] == [-100, 1, -100, 0, -100, 3, 4, -100, 0, -100]
    assert first["word_index"] == [-1, 0, -1, 1, -1, 2, 3, -1, 4, -1]
    assert first["sentence_index"] == 0
    every = tokenize_and_align(sentences(JOHN), tokenizer, LABEL2ID, max_seq_length=32, label_all_tokens=True)[0]
    # ##hn follows B-PER: I-PER (2), not a second B-PER; ##ers keeps I-MISC (4)
    assert every["labels"] == [-100, 1, 2, 0, 0, 3, 4, 4, 0, -100]
    assert inside_label("B-PER", LABELS) == "I-PER" and inside_label("B-LOC", LABELS) == "B-LOC"


def test_long_sentences_are_split_into_windows_of_whole_words(tokenizer):
    assert word_windows([2, 2, 1, 2, 1], budget=4) == [(0, 2), (2, 5)]
    assert word_windows([1, 6, 1], budget=4) == [(0, 1), (1, 2), (2, 3)]  # an over-long word stands alone
    assert word_windows([1, 1, 1], budget=4) == [(0, 3)]
    # max_seq_length 6 leaves 4 pieces between [CLS] and [SEP]: jo ##hn visit ##ed | new york ##ers .
    windows = tokenize_and_align(sentences(JOHN), tokenizer, LABEL2ID, max_seq_length=6)
    assert windows["sentence_index"] == [0, 0]
    assert [tokenizer.convert_ids_to_tokens(ids) for ids in windows["input_ids"]] == [
        ["[CLS]", "jo", "##hn", "visit", "##ed", "[SEP]"], ["[CLS]", "new", "york", "##ers", ".", "[SEP]"]]
    assert windows["labels"] == [[-100, 1, -100, 0, -100, -100], [-100, 3, 4, -100, 0, -100]]
    assert windows["word_index"] == [[-1, 0, -1, 1, -1, -1], [-1, 2, 3, -1, 4, -1]]
    # a word of 6 pieces (abcdef) in a window of 4 keeps its first 4; its label sits on the first
    long = tokenize_and_align(sentences((["abcdef", "."], ["B-PER", "O"])), tokenizer, LABEL2ID, max_seq_length=6)
    assert long["labels"] == [[-100, 1, -100, -100, -100, -100], [-100, 0, -100]]
    assert max(len(ids) for ids in long["input_ids"]) == 6


def test_a_word_without_pieces_becomes_the_unknown_token(tokenizer):
    # BERT's normaliser deletes a zero-width space: that word would get no prediction
    out = tokenize_and_align(sentences((["John", "\u200b", "."], ["B-PER", "O", "O"])), tokenizer, LABEL2ID, 32)[0]
    assert tokenizer.convert_ids_to_tokens(out["input_ids"]) == ["[CLS]", "jo", "##hn", "[UNK]", ".", "[SEP]"]
    assert out["labels"] == [-100, 1, -100, 0, 0, -100]


def test_predictions_go_back_to_one_tag_per_word(tokenizer, tmp_path):
    rows = sentences(JOHN, (["Paris", "."], ["O", "O"]))
    windows = tokenize_and_align(rows, tokenizer, LABEL2ID, max_seq_length=6)
    assert windows["sentence_index"] == [0, 0, 1]
    # ids at non-first pieces (2) and Trainer's padding (-100) must be ignored
    predicted = np.array([[2, 1, 2, 0, 2, 2], [2, 3, 4, 2, 1, 2], [2, 1, 0, -100, -100, -100]])
    expected = [["B-PER", "O", "B-MISC", "I-MISC", "B-PER"], ["B-PER", "O"]]
    assert tags_from_predictions(predicted, windows, LABELS, [5, 2]) == expected
    logits = np.eye(len(LABELS))[np.clip(predicted, 0, None)]  # (windows, T, labels): argmax first
    assert tags_from_predictions(logits, windows, LABELS, [5, 2]) == expected
    path = write_predictions_jsonl(tmp_path / "eval_predictions.jsonl", rows, expected)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"index": 0, "tokens": JOHN[0], "tags": JOHN[1], "predictions": expected[0]},
                     {"index": 1, "tokens": ["Paris", "."], "tags": ["O", "O"], "predictions": expected[1]}]


def test_flat_scores_for_trainer():
    scores = {"PER": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "number": 2}, "overall_precision": 1.0,
              "overall_recall": 0.5, "overall_f1": 2 / 3, "overall_accuracy": 0.9}
    assert flat_scores(scores, "ner") == {"overall_precision": 1.0, "overall_recall": 0.5, "overall_f1": 2 / 3,
                                          "overall_accuracy": 0.9, "PER_precision": 1.0, "PER_recall": 0.5,
                                          "PER_f1": 2 / 3, "PER_number": 2}
    assert flat_scores(scores, "pos") == {"overall_accuracy": 0.9}


# ------------------------------------------------------------------------------- embedded, recipes
def test_embedded_tagging_data_is_deterministic_bio_with_a_pos_tag_per_word():
    data = embedded_tagging(num_train=40, num_eval=16, seed=3)
    assert (len(data["train"]), len(data["validation"])) == (40, 16)
    assert data["train"].features["ner_tags"].feature.names == list(TAGGING_NER_LABELS)
    assert data["train"]["tokens"] == embedded_tagging(num_train=40, num_eval=16, seed=3)["train"]["tokens"]
    assert data["train"]["tokens"] != embedded_tagging(num_train=40, num_eval=16, seed=4)["train"]["tokens"]
    for row in data["train"]:
        ner = [TAGGING_NER_LABELS[t] for t in row["ner_tags"]]
        pos = [TAGGING_POS_LABELS[t] for t in row["pos_tags"]]
        assert len(ner) == len(pos) == len(row["tokens"])
        for previous, tag in zip(["O", *ner], ner):  # BIO: an I- continues an entity of its type
            assert not tag.startswith("I-") or previous[2:] == tag[2:]
        assert all(p == "NNP" for p, t in zip(pos, ner) if t[2:] in ("PER", "LOC", "ORG"))
    first = data["validation"][0]
    assert len(first["tokens"]) >= 5 and first["tokens"][-1] == "."


def finetune_recipe(**task):
    return {"kind": "finetune", "model": {"family": "encoder"}, "task": {"name": "ner", **task}}


def test_recipe_keys_for_tagging():
    recipe = Recipe.from_dict(finetune_recipe())
    task = recipe.task
    assert (task.tags_column, task.conll_tag_column, task.label_all_tokens) == ("ner_tags", -1, False)
    assert Recipe.from_dict({**finetune_recipe(), "task": {"name": "pos"}}).task.tags_column == "pos_tags"
    with pytest.raises(InputError, match=r"task.label_all_tokens: has no effect with task.name: sst2 \(it applies to "
                                         r"ner, pos\)"):
        Recipe.from_dict({**finetune_recipe(), "task": {"name": "sst2", "label_all_tokens": True}})
    with pytest.raises(InputError, match="model.family: ner .token tagging. needs an encoder to train from scratch, "
                                         "got decoder"):
        Recipe.from_dict({**finetune_recipe(), "model": {"family": "decoder"}})
    Recipe.from_dict({**finetune_recipe(), "model": {"family": "decoder", "name_or_path": "gpt2"}})
    with pytest.raises(InputError, match="task.name: unknown task 'ner'"):
        Recipe.from_dict({"kind": "icl", "model": {"family": "decoder"}, "task": {"name": "ner"}})


def test_checkpoints_without_a_tagging_head_or_tags_are_refused_before_training(tmp_path):
    import hfpipe
    from hfpipe.finetune import run_finetuning

    decoder, encoder = tmp_path / "decoder", tmp_path / "encoder"
    hfpipe.config_for("decoder", "tiny").save_pretrained(decoder)
    hfpipe.config_for("encoder", "tiny").save_pretrained(encoder)  # a pretrained encoder: no tags yet

    def recipe(family, path):
        r = Recipe.from_dict({**finetune_recipe(), "model": {"family": family, "name_or_path": str(path)},
                              "data": {"max_train_samples": 8, "max_eval_samples": 8}})
        r.train.output_dir = str(tmp_path / f"out-{family}")
        return r

    with pytest.raises(InputError, match=r"hfpipe_decoder has no token-classification head; ner needs one"):
        run_finetuning(recipe("decoder", decoder))
    with pytest.raises(InputError, match=r"config.json names no tags \(id2label\); evaluate a model finetuned on ner"):
        run_finetuning(recipe("encoder", encoder), do_train=False)
