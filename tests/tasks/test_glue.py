"""GLUE task table, loading from GLUE's original TSV files, input formats, predictions, GLUE score."""

import json

import numpy as np
import pytest

from hfpipe.errors import InputError
from hfpipe.tasks.glue import (
    GLUE_TASKS,
    GPT_SPECIAL_TOKENS,
    encoder_inputs,
    get_glue_task,
    glue_average,
    gpt_pair_text,
    label_from_text,
    labels_from_texts,
    load_glue,
    predictions_from_logits,
    text_to_text,
    write_predictions_jsonl,
)

# nyu-mll/glue's features, copied from its dataset card: (text columns, ClassLabel names).
HUB_FEATURES = {
    "cola": (("sentence",), ("unacceptable", "acceptable")),
    "sst2": (("sentence",), ("negative", "positive")),
    "mrpc": (("sentence1", "sentence2"), ("not_equivalent", "equivalent")),
    "qqp": (("question1", "question2"), ("not_duplicate", "duplicate")),
    "stsb": (("sentence1", "sentence2"), None),
    "mnli": (("premise", "hypothesis"), ("entailment", "neutral", "contradiction")),
    "qnli": (("question", "sentence"), ("entailment", "not_entailment")),
    "rte": (("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": (("sentence1", "sentence2"), ("not_entailment", "entailment")),
}


def test_task_table_matches_the_hub_and_the_glue_metric():
    assert list(GLUE_TASKS) == list(HUB_FEATURES)
    for name, (text_fields, label_names) in HUB_FEATURES.items():
        task = GLUE_TASKS[name]
        assert (task.text_fields, task.label_names) == (text_fields, label_names)
        assert task.num_labels == (1 if label_names is None else len(label_names))
        assert task.hub_config == task.t5_prefix == name
    metric_keys = {name: set(task.metric_keys) for name, task in GLUE_TASKS.items()}
    assert metric_keys == {
        "cola": {"matthews_correlation"}, "sst2": {"accuracy"}, "mrpc": {"f1", "accuracy"},
        "qqp": {"f1", "accuracy"}, "stsb": {"pearson", "spearmanr"}, "mnli": {"accuracy"},
        "qnli": {"accuracy"}, "rte": {"accuracy"}, "wnli": {"accuracy"},
    }
    assert GLUE_TASKS["mnli"].score_keys == ("accuracy", "accuracy_mm")
    assert GLUE_TASKS["stsb"].is_regression and not GLUE_TASKS["rte"].is_regression


def test_task_names_accept_glue_spellings_and_suggest_the_closest():
    assert get_glue_task("SST-2").name == "sst2"
    assert get_glue_task("STS-B").name == "stsb"
    assert get_glue_task("MNLI").name == "mnli"
    with pytest.raises(InputError, match=r"unknown GLUE task 'mrcp' \(did you mean 'mrpc'\?\)"):
        get_glue_task("mrcp")
    with pytest.raises(InputError, match="did you mean 'qnli'"):
        load_glue("qnlii")


# --------------------------------------------------------------------------------------------
# Small files in GLUE's original layout, one set per task.

STSB_COLUMNS = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
MNLI_COLUMNS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
PAIR = ["index", "sentence1", "sentence2"]

# task: (labelled-file columns (None: CoLA's header-less files), test-file columns,
#        TSV text columns, TSV label column, label cells of rows 0..2, expected labels)
LAYOUTS = {
    "cola": (None, ["index", "sentence"], ["sentence"], "label", ["1", "0", "1"], [1, 0, 1]),
    "sst2": (["sentence", "label"], ["index", "sentence"], ["sentence"], "label", ["1", "0", "1"], [1, 0, 1]),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["#1 String", "#2 String"], "Quality", ["1", "0", "1"], [1, 0, 1]),
    "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["id", "question1", "question2"],
            ["question1", "question2"], "is_duplicate", ["0", "1", "0"], [0, 1, 0]),
    "stsb": (STSB_COLUMNS + ["score"], STSB_COLUMNS, ["sentence1", "sentence2"], "score",
             ["5.000", "3.800", "0.000"], [5.0, 3.8, 0.0]),
    "mnli": (MNLI_COLUMNS + ["label1", "label2", "label3", "label4", "label5", "gold_label"], MNLI_COLUMNS,
             ["sentence1", "sentence2"], "gold_label", ["neutral", "contradiction", "entailment"], [1, 2, 0]),
    "qnli": (["index", "question", "sentence", "label"], ["index", "question", "sentence"],
             ["question", "sentence"], "label", ["entailment", "not_entailment", "entailment"], [0, 1, 0]),
    "rte": (PAIR + ["label"], PAIR, ["sentence1", "sentence2"], "label",
            ["not_entailment", "entailment", "not_entailment"], [1, 0, 1]),
    "wnli": (PAIR + ["label"], PAIR, ["sentence1", "sentence2"], "label", ["1", "0", "1"], [1, 0, 1]),
}
# GLUE's quirks in the texts: unbalanced quotes, SST-2's trailing space.
TEXTS = [
    ('He said "the pie business does not fit.', "It doesn't fit our growth strategy."),
    ("it 's a charming and often affecting journey . ", '"100 percent behind George Bush'),
    ("The cat sat.", "A cat was sitting."),
]
# MNLI's train.tsv has one annotator label before gold_label; its dev files have five.
MNLI_TRAIN_COLUMNS = MNLI_COLUMNS + ["label1", "gold_label"]
COLA_LABELLED = [["gj04", "1", "", TEXTS[0][0]], ["gj04", "0", "*", TEXTS[1][0]], ["cj99", "1", "", TEXTS[2][0]]]


def _tsv_line(columns, cells):
    return "\t".join(cells.get(column, f"{column}-x") for column in columns)


def write_glue_folder(folder, task, n_rows=3):
    """Write the task's train/dev/test files as GLUE's download script lays them out."""
    labelled, test_columns, text_columns, label_column, label_cells, _ = LAYOUTS[task]
    folder.mkdir(parents=True, exist_ok=True)
    rows = [dict(zip(text_columns, TEXTS[i]), index=str(i)) for i in range(n_rows)]
    if labelled is None:  # CoLA: no header, columns source, label, original label, sentence
        labelled_text = "".join("\t".join(cells) + "\n" for cells in COLA_LABELLED[:n_rows])
    else:
        lines = [_tsv_line(labelled, {**row, label_column: label_cells[i]}) for i, row in enumerate(rows)]
        labelled_text = "\n".join(["\t".join(labelled), *lines]) + "\n"
    test_text = "\n".join(["\t".join(test_columns), *(_tsv_line(test_columns, row) for row in rows)]) + "\n"
    bom = "\ufeff" if task == "mrpc" else ""  # GLUE's MRPC train/dev files start with a UTF-8 BOM
    names = GLUE_TASKS[task].tsv.split_files
    for split, name in names.items():
        (folder / name).write_text(test_text if split.startswith("test") else bom + labelled_text, encoding="utf-8")
    if task == "mnli":
        lines = [_tsv_line(MNLI_TRAIN_COLUMNS, {**row, "gold_label": label_cells[i]}) for i, row in enumerate(rows)]
        (folder / "train.tsv").write_text("\n".join(["\t".join(MNLI_TRAIN_COLUMNS), *lines]) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("task", list(LAYOUTS))
def test_each_task_loads_from_glue_tsv_files(tmp_path, task):
    folder = write_glue_folder(tmp_path / task, task)
    ds = load_glue(task, data_dir=folder)
    spec = GLUE_TASKS[task]
    expected_splits = (["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
                       if task == "mnli" else ["train", "validation", "test"])
    assert list(ds) == expected_splits
    expected_labels = LAYOUTS[task][5]
    for split, data in ds.items():
        assert data.column_names == [*spec.text_fields, "label", "idx"]
        assert data["idx"] == [0, 1, 2]
        for i, field in enumerate(spec.text_fields):
            assert data[field] == [TEXTS[row][i] for row in range(3)]  # quotes and spaces kept as is
        if split.startswith("test"):
            assert data["label"] == [-1, -1, -1]
        else:
            assert data["label"] == pytest.approx(expected_labels)
    if spec.is_regression:
        assert ds["train"].features["label"].dtype == "float32"
    else:
        assert ds["train"].features["label"].names == list(spec.label_names)


def test_mnli_explicit_files_give_matched_and_mismatched_validation(tmp_path):
    folder = write_glue_folder(tmp_path / "MNLI", "mnli")
    (folder / "dev_mismatched.tsv").write_text(
        "\t".join(LAYOUTS["mnli"][0]) + "\n"
        + _tsv_line(LAYOUTS["mnli"][0], {"sentence1": "P.", "sentence2": "H.", "gold_label": "contradiction"}) + "\n",
        encoding="utf-8",
    )
    ds = load_glue("mnli", train_file=folder / "train.tsv", validation_file=folder / "dev_matched.tsv",
                   validation_mismatched_file=folder / "dev_mismatched.tsv")
    assert list(ds) == ["train", "validation_matched", "validation_mismatched"]
    assert ds["validation_mismatched"][0] == {"premise": "P.", "hypothesis": "H.", "label": 2, "idx": 0}
    assert ds["validation_matched"].num_rows == 3
    # Only the files given are read: a validation file alone gives one split.
    assert list(load_glue("mnli", validation_file=folder / "dev_matched.tsv")) == ["validation_matched"]


def test_explicit_file_overrides_the_data_dir(tmp_path):
    folder = write_glue_folder(tmp_path / "SST-2", "sst2")
    other = tmp_path / "other_dev.tsv"
    other.write_text("sentence\tlabel\ngood .\t1\nbad .\t0\nfine .\t1\nmeh .\t0\n", encoding="utf-8")
    ds = load_glue("sst2", data_dir=folder, validation_file=other)
    assert ds["validation"]["sentence"] == ["good .", "bad .", "fine .", "meh ."]
    assert ds["train"].num_rows == 3


# --------------------------------------------------------------------------------------------
# The real GLUE files in ../shared/data/glue

REAL = {
    # folder: (task, {split: (rows, rows with label 1)})
    "SST-2": ("sst2", {"train": (67_349, 37_569), "validation": (872, 444)}),
    "MRPC": ("mrpc", {"train": (3_668, 2_474), "validation": (408, 279), "test": (1_725, 0)}),
    "QNLI": ("qnli", {"validation": (5_463, 2_761)}),
    "WNLI": ("wnli", {"train": (635, 312), "validation": (71, 31)}),
}


@pytest.mark.parametrize("folder", list(REAL))
def test_real_glue_files_row_counts_and_label_balance(shared_data, folder):
    task, expected = REAL[folder]
    ds = load_glue(task, data_dir=shared_data / "glue" / folder)
    labels = {split: np.array(data["label"]) for split, data in ds.items()}
    assert {split: (len(y), int((y == 1).sum())) for split, y in labels.items()} == expected
    for split, y in labels.items():
        assert (y == -1).all() if split == "test" else set(y.tolist()) == {0, 1}
    # The published balances: SST-2 train 55.8% positive, MRPC train 67.4% paraphrases.
    if task == "sst2":
        assert labels["train"].mean() == pytest.approx(0.558, abs=5e-4)
    if task == "mrpc":
        assert labels["train"].mean() == pytest.approx(0.674, abs=5e-4)
        assert ds["train"][0]["sentence1"].startswith("Amrozi accused his brother")


def test_real_stsb_scores_match_the_raw_column(shared_data):
    folder = shared_data / "glue" / "STS-B"
    ds = load_glue("stsb", data_dir=folder)
    assert {split: data.num_rows for split, data in ds.items()} == {"train": 5_749, "validation": 1_500}
    for split, name in (("train", "train.tsv"), ("validation", "dev.tsv")):
        lines = (folder / name).read_text(encoding="utf-8").splitlines()[1:]  # after the header
        raw = [float(line.split("\t")[-1]) for line in lines]
        scores = np.array(ds[split]["label"])
        assert scores.mean() == pytest.approx(np.mean(raw), abs=1e-5)
        assert (scores.min(), scores.max()) == (0.0, 5.0)
    assert np.mean(ds["train"]["label"]) == pytest.approx(2.701, abs=1e-3)


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file, line and value


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match=r"GLUE sst2 train file .*nope\.tsv does not exist"):
        load_glue("sst2", train_file=tmp_path / "nope.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(InputError, match=r"empty\.tsv is empty"):
        load_glue("sst2", validation_file=tmp_path / "empty.tsv")
    (tmp_path / "header_only.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(InputError, match=r"header_only\.tsv: no data rows after the header"):
        load_glue("sst2", train_file=tmp_path / "header_only.tsv")
    with pytest.raises(InputError, match="holds none of rte's files"):
        load_glue("rte", data_dir=tmp_path)


def test_missing_columns_name_found_and_expected(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("index\tpremise\thypothesis\tlabel\n0\tA.\tB.\tentailment\n")
    with pytest.raises(InputError) as err:
        load_glue("rte", validation_file=path)
    message = str(err.value)
    assert "missing column(s) ['sentence1', 'sentence2']" in message
    assert "found ['index', 'premise', 'hypothesis', 'label']" in message
    assert "expected a tab-separated header with ['sentence1', 'sentence2', 'label']" in message
    # A training file must carry labels; a test file may not.
    path.write_text("index\tsentence1\tsentence2\n0\tA.\tB.\n")
    with pytest.raises(InputError, match="train file has no label column 'label'; found"):
        load_glue("rte", train_file=path)
    assert load_glue("rte", test_file=path)["test"]["label"] == [-1]


def test_bad_labels_name_file_line_and_value(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t1\n1\tC.\tD.\t2\n")
    with pytest.raises(InputError, match=r"train\.tsv, line 3: label '2' is not a wnli label "
                                         r"\(expected one of 0/not_entailment, 1/entailment\)"):
        load_glue("wnli", train_file=path)
    path.write_text("index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tentailed\n")
    with pytest.raises(InputError, match=r"line 2: label 'entailed' is not a qnli label"):
        load_glue("qnli", train_file=path)
    stsb = STSB_COLUMNS + ["score"]
    path.write_text("\t".join(stsb) + "\n" + _tsv_line(stsb, {"score": "3.2"}) + "\n"
                    + _tsv_line(stsb, {"score": "high"}) + "\n")
    with pytest.raises(InputError, match=r"line 3: STS-B score 'high' is not a number from 0 to 5"):
        load_glue("stsb", train_file=path)
    path.write_text("\t".join(stsb) + "\n" + _tsv_line(stsb, {"score": "nan"}) + "\n")
    with pytest.raises(InputError, match="STS-B score 'nan'"):
        load_glue("stsb", train_file=path)


def test_rows_with_the_wrong_number_of_fields_are_named(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood .\t1\na tab\tinside .\t0\n")
    expected = r"train\.tsv, line 3: 3 tab-separated field\(s\), expected 2 \(sentence, label\)"
    with pytest.raises(InputError, match=expected):
        load_glue("sst2", train_file=path)
    # CoLA's header-less file: a row with a missing column is reported, not dropped.
    path.write_text("gj04\t1\t\tFine.\ngj04\t0\tBroken.\n")
    with pytest.raises(InputError, match=r"line 2: 3 tab-separated field\(s\), expected 4"):
        load_glue("cola", train_file=path)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("sentence\tlabel\ncaf\xe9 .\t1\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"train\.tsv.*not UTF-8 text"):
        load_glue("sst2", train_file=path)


def test_mismatched_file_only_for_mnli(tmp_path):
    with pytest.raises(InputError, match="only meaningful for mnli, not rte"):
        load_glue("rte", validation_mismatched_file=tmp_path / "x.tsv")


# --------------------------------------------------------------------------------------------
# Inputs for the three families

MRPC_EXAMPLE = {"sentence1": "A b.", "sentence2": "C d.", "label": 1, "idx": 0}
MNLI_EXAMPLE = {"premise": "The cat sat.", "hypothesis": "A cat sat.", "label": 0, "idx": 7}


def test_encoder_inputs_follow_the_hub_field_order():
    assert encoder_inputs(MNLI_EXAMPLE, "mnli") == ("The cat sat.", "A cat sat.")
    assert encoder_inputs({"sentence": "ok .", "label": 1}, "sst2") == ("ok .", None)
    assert encoder_inputs({"question": "Q?", "sentence": "S."}, "qnli") == ("Q?", "S.")


def test_gpt_pair_text_is_start_a_delim_b_extract():
    assert GPT_SPECIAL_TOKENS == ("<|start|>", "<|delim|>", "<|extract|>")
    assert gpt_pair_text("The cat sat. ", " A cat sat.") == "<|start|>The cat sat.<|delim|>A cat sat.<|extract|>"
    assert gpt_pair_text("ok . ") == "<|start|>ok .<|extract|>"
    assert gpt_pair_text("a", "b", start="[S]", delim="[D]", extract="[E]") == "[S]a[D]b[E]"


def test_text_to_text_matches_t5_formats():
    assert text_to_text({"sentence": "it 's good .", "label": 1}, "sst2") == ("sst2 sentence: it 's good .", "positive")
    assert text_to_text({"sentence": "Him left.", "label": 0}, "cola") == ("cola sentence: Him left.", "unacceptable")
    assert text_to_text(MRPC_EXAMPLE, "mrpc") == ("mrpc sentence1: A b. sentence2: C d.", "equivalent")
    # T5 orders fields by name: MNLI's hypothesis comes before the premise.
    assert text_to_text(MNLI_EXAMPLE, "mnli") == ("mnli hypothesis: A cat sat. premise: The cat sat.", "entailment")
    assert text_to_text({"question1": "a?", "question2": "b?", "label": 1}, "qqp")[1] == "duplicate"
    assert text_to_text({"sentence1": "a", "sentence2": "b", "label": 1}, "wnli")[1] == "entailment"
    assert text_to_text({**MNLI_EXAMPLE, "label": -1}, "mnli")[1] == "<unk>"


@pytest.mark.parametrize("score,target", [(3.8, "3.8"), (4.75, "4.8"), (0.1, "0.0"), (2.5, "2.4"), (0.3, "0.4"),
                                          (5.0, "5.0"), (0.0, "0.0")])
def test_stsb_target_is_rounded_to_a_fifth_half_to_even(score, target):
    source, text = text_to_text({"sentence1": "a", "sentence2": "b", "label": score}, "stsb")
    assert (source, text) == ("stsb sentence1: a sentence2: b", target)


@pytest.mark.parametrize("task", [name for name, spec in GLUE_TASKS.items() if not spec.is_regression])
def test_text_to_text_round_trips_every_label(task):
    spec = GLUE_TASKS[task]
    example = {field: "x" for field in spec.text_fields}
    recovered = [label_from_text(task, text_to_text({**example, "label": i}, task)[1]) for i in range(spec.num_labels)]
    assert recovered == list(range(spec.num_labels))


def test_stsb_round_trips_the_fifths_grid():
    grid = [i / 5 for i in range(26)]
    recovered = [label_from_text("stsb", text_to_text({"sentence1": "", "sentence2": "", "label": s}, "stsb")[1])
                 for s in grid]
    assert recovered == pytest.approx(grid, abs=1e-9)


def test_unknown_generations_map_to_minus_one_and_are_counted():
    labels, invalid = labels_from_texts("sst2", ["positive", " Negative\n", "banana", "", "<unk>"])
    assert (labels, invalid) == ([1, 0, -1, -1, -1], 3)
    labels, invalid = labels_from_texts("stsb", ["3.4", "five", "inf", " 0.2 "])
    assert (labels, invalid) == ([3.4, -1.0, -1.0, 0.2], 2)


# --------------------------------------------------------------------------------------------
# Predictions and the GLUE score


def test_predictions_from_logits():
    logits = np.array([[2.0, 0.1, -1.0], [0.0, 0.5, 3.0], [0.0, 1.0, 0.9]])
    assert predictions_from_logits("mnli", logits).tolist() == [0, 2, 1]
    scores = predictions_from_logits("stsb", np.array([[4.5], [0.25]]))
    assert scores.dtype == np.float32 and scores.tolist() == [4.5, 0.25]


def test_write_predictions_jsonl_uses_label_names_and_scores(tmp_path):
    path = write_predictions_jsonl(tmp_path / "out" / "eval_predictions.jsonl", np.array([0, 2, -1, 1]), "mnli")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"index": 0, "prediction": "entailment"},
        {"index": 1, "prediction": "contradiction"},
        {"index": 2, "prediction": None},  # an unparseable generation
        {"index": 3, "prediction": "neutral"},
    ]
    path = write_predictions_jsonl(tmp_path / "stsb.jsonl", np.array([4.5, 0.25], np.float32), "stsb", indices=[7, 3])
    assert path.read_text() == '{"index": 7, "prediction": 4.5}\n{"index": 3, "prediction": 0.25}\n'


def test_glue_average_by_hand():
    results = {
        "cola": {"eval_matthews_correlation": 0.5, "eval_loss": 0.6},
        "mrpc": {"f1": 0.9, "accuracy": 0.8},                     # 0.85
        "stsb": {"pearson": 0.88, "spearmanr": 0.86},             # 0.87
        "mnli": {"accuracy": 0.84, "accuracy_mm": 0.82},          # 0.83: counted once
    }
    assert glue_average(results) == pytest.approx((0.5 + 0.85 + 0.87 + 0.83) / 4)
    # mission.md's BERT-base dev numbers (MRPC accuracy and STS-B Spearman made up), without WNLI.
    bert = {"cola": {"matthews_correlation": 56.5}, "sst2": {"accuracy": 92.3},
            "mrpc": {"f1": 88.9, "accuracy": 84.1}, "stsb": {"pearson": 88.6, "spearmanr": 88.2},
            "qqp": {"f1": 87.5, "accuracy": 90.7}, "mnli": {"accuracy": 83.9, "accuracy_mm": 84.1},
            "qnli": {"accuracy": 90.7}, "rte": {"accuracy": 65.7}}
    expected = (56.5 + 92.3 + (88.9 + 84.1) / 2 + (88.6 + 88.2) / 2 + (87.5 + 90.7) / 2 + 84.0 + 90.7 + 65.7) / 8
    assert glue_average(bert) == pytest.approx(expected)
    with pytest.raises(InputError, match=r"results for mnli lack \['accuracy_mm'\]"):
        glue_average({"mnli": {"accuracy": 0.8}})
    with pytest.raises(InputError, match="no task results"):
        glue_average({})


def test_the_recipe_section_accepts_exactly_the_names_of_the_glue_table():
    """Glue.name's Literal is what recipes accept; GLUE_TASKS is what runs: one list, written twice."""
    from typing import get_args, get_type_hints

    from hfpipe.tasks.glue import Glue

    assert set(get_args(get_type_hints(Glue)["name"])) == set(GLUE_TASKS)
