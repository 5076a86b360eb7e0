"""GLUE: the nine tasks, their data, their inputs for each model family, and their scores.

    from hfpipe.tasks.glue import GLUE_TASKS, load_glue, text_to_text
    ds = load_glue("mrpc")                                   # nyu-mll/glue from the Hub
    ds = load_glue("mrpc", data_dir="glue_data/MRPC")        # GLUE's own train/dev/test.tsv
    ds = load_glue("mnli", train_file="train.tsv", validation_file="dev_matched.tsv",
                   validation_mismatched_file="dev_mismatched.tsv")
    source, target = text_to_text(ds["train"][0], "mrpc")  # "mrpc sentence1: ... sentence2: ...", "equivalent"

Every loaded split has the Hub's columns and features: the task's text fields (as named on the
Hub), ``label`` (ClassLabel in the Hub's order; float32 for STS-B; -1 when the file has no labels)
and ``idx`` (the row's position in its file, as the Hub numbers it). MNLI's splits are
``validation_matched`` / ``validation_mismatched`` (and ``test_matched`` / ``test_mismatched``);
every other task has ``train`` / ``validation`` / ``test``.

GLUE's TSV files are read with our own strict reader instead of the datasets "csv" builder: it must
name the file, line and value of a bad row, and pandas' parser reports neither.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hfpipe.errors import InputError

GLUE_HUB_ID = "nyu-mll/glue"

# GPT-1 (Radford et al. 2018) feeds pairs as [START] a [DELIM] b [EXTRACT] and classifies from the
# hidden state at [EXTRACT]; the finetuning code adds these three as special tokens.
GPT_START_TOKEN = "<|start|>"
GPT_DELIM_TOKEN = "<|delim|>"
GPT_EXTRACT_TOKEN = "<|extract|>"
GPT_SPECIAL_TOKENS = (GPT_START_TOKEN, GPT_DELIM_TOKEN, GPT_EXTRACT_TOKEN)

# T5's target for an example without a label (t5.data.preprocessors.glue).
T5_UNKNOWN_TARGET = "<unk>"

_GLUE_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
_MNLI_SPLIT_FILES = {
    "train": "train.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


@dataclass(frozen=True)
class GlueTsvLayout:
    """Where a task's fields sit in GLUE's original TSV files (as GLUE's download script writes them).

    text_columns: the TSV header names holding the task's text fields, in the Hub's field order.
    label_column: the header name of the gold label (absent from GLUE's unlabelled test.tsv).
    headerless_columns: the positional column names of a file without a header line (CoLA's
        train.tsv / dev.tsv only; its test.tsv has the header ``index sentence``).
    split_files: file name of each split inside the task's GLUE folder.
    """

    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    headerless_columns: tuple[str, ...] | None = None
    split_files: Mapping[str, str] = field(default_factory=lambda: dict(_GLUE_SPLIT_FILES), hash=False)


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    text_fields: the Hub's text column names, in model-input order (text_a, text_b).
    label_names: class names in the Hub's ClassLabel order (also T5's target words); None for the
        STS-B regression.
    metric_keys: what the glue metric returns for this task (``evaluate.load(glue, hub_config)``).
    score_keys: the eval-result keys averaged into this task's GLUE score (GLUE's convention: the
        mean of the task's metrics; MNLI averages matched and mismatched accuracy).
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric_keys: tuple[str, ...]
    score_keys: tuple[str, ...]
    tsv: GlueTsvLayout

    @property
    def hub_config(self) -> str:
        """The nyu-mll/glue configuration (and the glue metric's) for this task."""
        return self.name

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def main_metric(self) -> str:
        """The metric to select checkpoints on (the first one GLUE reports for the task)."""
        return self.metric_keys[0]

    @property
    def t5_prefix(self) -> str:
        """T5's task prefix: the benchmark name itself ("sst2 sentence: ...")."""
        return self.name

    @property
    def t5_target_words(self) -> tuple[str, ...] | None:
        """T5's label words: the TFDS/Hub class names, in label order (t5.data.glue_utils)."""
        return self.label_names

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.tsv.split_files)


_NLI_LABELS = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola", ("sentence",), ("unacceptable", "acceptable"),
            ("matthews_correlation",), ("matthews_correlation",),
            GlueTsvLayout("CoLA", ("sentence",), "label",
                          headerless_columns=("source", "label", "original_label", "sentence")),
        ),
        GlueTask(
            "sst2", ("sentence",), ("negative", "positive"), ("accuracy",), ("accuracy",),
            GlueTsvLayout("SST-2", ("sentence",), "label"),
        ),
        GlueTask(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
            ("f1", "accuracy"), ("f1", "accuracy"),
            GlueTsvLayout("MRPC", ("#1 String", "#2 String"), "Quality"),
        ),
        GlueTask(
            "qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
            ("f1", "accuracy"), ("f1", "accuracy"),
            GlueTsvLayout("QQP", ("question1", "question2"), "is_duplicate"),
        ),
        GlueTask(
            "stsb", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"), ("pearson", "spearmanr"),
            GlueTsvLayout("STS-B", ("sentence1", "sentence2"), "score"),
        ),
        GlueTask(
            "mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
            ("accuracy",), ("accuracy", "accuracy_mm"),
            GlueTsvLayout("MNLI", ("sentence1", "sentence2"), "gold_label", split_files=_MNLI_SPLIT_FILES),
        ),
        GlueTask(
            "qnli", ("question", "sentence"), _NLI_LABELS, ("accuracy",), ("accuracy",),
            GlueTsvLayout("QNLI", ("question", "sentence"), "label"),
        ),
        GlueTask(
            "rte", ("sentence1", "sentence2"), _NLI_LABELS, ("accuracy",), ("accuracy",),
            GlueTsvLayout("RTE", ("sentence1", "sentence2"), "label"),
        ),
        GlueTask(
            # WNLI's order is the reverse of QNLI/RTE's: 1 = entailment, as in GLUE's files.
            "wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",), ("accuracy",),
            GlueTsvLayout("WNLI", ("sentence1", "sentence2"), "label"),
        ),
    )
}


def get_glue_task(task: str | GlueTask) -> GlueTask:
    """The GLUE_TASKS entry for a name; accepts GLUE's folder spellings ("SST-2", "STS-B")."""
    if isinstance(task, GlueTask):
        return task
    key = str(task).lower().replace("-", "").replace("_", "")
    if key in GLUE_TASKS:
        return GLUE_TASKS[key]
    closest = difflib.get_close_matches(key, GLUE_TASKS, n=1, cutoff=0.0)
    hint = f" (did you mean {closest[0]!r}?)" if closest else ""
    raise InputError(f"unknown GLUE task {task!r}{hint}; expected one of {', '.join(GLUE_TASKS)}")


# ----------------------------------------------------------------------------------------------
# Loading


def load_glue(
    task: str,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    *,
    validation_mismatched_file: str | Path | None = None,
    test_mismatched_file: str | Path | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | None = None,
    dataset: str | None = None,
    dataset_config: str | None = None,
):
    """A GLUE task as a ``datasets.DatasetDict`` with the Hub's columns (see the module docstring).

    With no file and no ``data_dir``, loads ``dataset`` (default ``nyu-mll/glue``; its config
    ``dataset_config``, default the task's) from the Hub, which must have the Hub GLUE columns. Otherwise reads only the
    files given (the Hub is not consulted): ``data_dir`` is a folder in GLUE's layout (e.g.
    ``glue_data/MNLI``) whose standard files (train.tsv, dev.tsv, test.tsv; for MNLI dev_matched.tsv,
    dev_mismatched.tsv, test_matched.tsv, test_mismatched.tsv) are read when present, and an
    explicit file overrides the folder's. For MNLI, ``validation_file`` / ``test_file`` are the
    matched sets; ``validation_mismatched_file`` / ``test_mismatched_file`` the mismatched ones.

    Train and validation files must hold labels; a test file may lack the label column (GLUE's
    test.tsv), its rows then get label -1. Every file is checked (exists, not empty, columns)
    before any is parsed; a bad row raises InputError naming file, line and value.
    """
    spec = get_glue_task(task)
    files = _split_files(spec, train_file, validation_file, test_file,
                         validation_mismatched_file, test_mismatched_file, data_dir)
    if not files:
        return _load_from_hub(spec, cache_dir, dataset or GLUE_HUB_ID, dataset_config or spec.hub_config)

    import datasets  # deferred: importing datasets costs ~1 s, not needed to inspect GLUE_TASKS

    layouts = {split: _check_tsv(spec, split, path) for split, path in files.items()}
    features = glue_features(spec)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(_read_tsv(spec, path, *layouts[split]), features=features)
            for split, path in files.items()
        }
    )


def glue_features(task: str | GlueTask):
    """The Hub's ``datasets.Features`` for a task: text fields (string), label, idx (int32)."""
    import datasets

    spec = get_glue_task(task)
    label = (
        datasets.Value("float32") if spec.is_regression else datasets.ClassLabel(names=list(spec.label_names))
    )
    return datasets.Features(
        {**{name: datasets.Value("string") for name in spec.text_fields}, "label": label,
         "idx": datasets.Value("int32")}
    )


def _split_files(spec, train_file, validation_file, test_file, validation_mm_file, test_mm_file, data_dir):
    """{split name: Path} from the explicit files and the GLUE folder; {} means use the Hub."""
    mnli = spec.name == "mnli"
    if not mnli and (validation_mm_file or test_mm_file):
        raise InputError(f"a mismatched validation/test file is only meaningful for mnli, not {spec.name}")
    explicit = {
        "train": train_file,
        "validation_matched" if mnli else "validation": validation_file,
        "test_matched" if mnli else "test": test_file,
        "validation_mismatched": validation_mm_file,
        "test_mismatched": test_mm_file,
    }
    files = {}
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise InputError(f"GLUE data folder {folder} does not exist")
        files = {split: folder / name for split, name in spec.tsv.split_files.items() if (folder / name).is_file()}
        if not files:
            expected = ", ".join(spec.tsv.split_files.values())
            raise InputError(f"GLUE data folder {folder} holds none of {spec.name}'s files ({expected})")
    files.update({split: Path(path) for split, path in explicit.items() if path is not None})
    return {split: files[split] for split in spec.splits if split in files}  # canonical split order


def _load_from_hub(spec: GlueTask, cache_dir, dataset: str = GLUE_HUB_ID, config: str | None = None):
    from ..hub import load_hub_dataset

    loaded = load_hub_dataset(dataset, config, cache_dir=cache_dir, local_hint="give GLUE's TSV files instead "
                              "(--train-file/--validation-file, or a GLUE data folder)")
    for split, rows in loaded.items():
        missing = [c for c in (*spec.text_fields, "label") if c not in rows.column_names]
        if missing:
            raise InputError(f"data.dataset {dataset} ({config}) [{split}]: no column {missing[0]!r}; "
                             f"GLUE {spec.name} needs {', '.join((*spec.text_fields, 'label'))}")
    return loaded


def _check_tsv(spec: GlueTask, split: str, path: Path) -> tuple[tuple[str, ...], bool]:
    """Validate a file's presence and header; returns (column names, whether line 1 is a header)."""
    if not path.is_file():
        raise InputError(f"GLUE {spec.name} {split} file {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"GLUE {spec.name} {split} file {path} is empty; expected GLUE's TSV layout")
    layout = spec.tsv
    with _open_tsv(path) as f:
        first = _first_row(path, f)
    if all(name in first for name in layout.text_columns):
        columns, has_header = tuple(first), True
    elif layout.headerless_columns is not None and len(first) == len(layout.headerless_columns):
        columns, has_header = layout.headerless_columns, False
    else:
        missing = [name for name in layout.text_columns if name not in first]
        expected = list(layout.headerless_columns or (*layout.text_columns, layout.label_column))
        raise InputError(
            f"{path}: missing column(s) {missing} for GLUE {spec.name}; found {first}, expected a "
            f"tab-separated header with {expected}"
        )
    labelled_split = not split.startswith("test")
    if labelled_split and layout.label_column not in columns:
        raise InputError(
            f"{path}: the {split} file has no label column {layout.label_column!r}; found {list(columns)}"
        )
    return columns, has_header


def _open_tsv(path: Path):
    # utf-8-sig drops MRPC's byte-order mark, which would otherwise glue itself to "Quality".
    return path.open(encoding="utf-8-sig", newline="")


def _first_row(path: Path, f) -> list[str]:
    try:
        return next(_tsv_rows(f), [])
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text ({err})") from err


def _tsv_rows(f):
    # GLUE's texts hold unbalanced double quotes: quotes are plain characters (QUOTE_NONE).
    return csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _read_tsv(spec: GlueTask, path: Path, columns: tuple[str, ...], has_header: bool) -> dict[str, list]:
    """Parse every row of a validated file into Hub-named columns; raises on any bad row."""
    layout = spec.tsv
    text_at = [columns.index(name) for name in layout.text_columns]
    label_at = columns.index(layout.label_column) if layout.label_column in columns else None
    texts: list[list[str]] = [[] for _ in text_at]
    labels: list[int | float] = []
    with _open_tsv(path) as f:
        reader = _tsv_rows(f)
        if has_header:
            next(reader)
        try:
            for row in reader:
                if len(row) != len(columns):
                    raise InputError(
                        f"{path}, line {reader.line_num}: {len(row)} tab-separated field(s), expected "
                        f"{len(columns)} ({', '.join(columns)})"
                    )
                for column, at in zip(texts, text_at):
                    column.append(row[at])
                labels.append(-1 if label_at is None else _parse_label(spec, row[label_at], path, reader.line_num))
        except UnicodeDecodeError as err:
            raise InputError(f"{path}, after line {reader.line_num}: not UTF-8 text ({err})") from err
    if not labels:
        raise InputError(f"{path}: no data rows after the header")
    return {**dict(zip(spec.text_fields, texts)), "label": labels, "idx": list(range(len(labels)))}


def _parse_label(spec: GlueTask, value: str, path: Path, line: int) -> int | float:
    """A TSV label cell -> class index in the Hub's order (name or index accepted), or STS-B score."""
    value = value.strip()
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not 0.0 <= score <= 5.0:  # also rejects nan
            raise InputError(f"{path}, line {line}: STS-B score {value!r} is not a number from 0 to 5")
        return score
    names = spec.label_names
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    accepted = ", ".join(f"{i}/{name}" for i, name in enumerate(names))
    raise InputError(f"{path}, line {line}: label {value!r} is not a {spec.name} label (expected one of {accepted})")


# ----------------------------------------------------------------------------------------------
# Inputs for the three families


def encoder_inputs(example: Mapping, task: str | GlueTask) -> tuple[str, str | None]:
    """(text_a, text_b) for a BERT-style ``tokenizer(text_a, text_b)``; text_b is None for one-sentence tasks."""
    fields = get_glue_task(task).text_fields
    return example[fields[0]], (example[fields[1]] if len(fields) > 1 else None)


def gpt_pair_text(
    text_a: str,
    text_b: str | None = None,
    start: str = GPT_START_TOKEN,
    delim: str = GPT_DELIM_TOKEN,
    extract: str = GPT_EXTRACT_TOKEN,
) -> str:
    """GPT-1's input ``[START] a [DELIM] b [EXTRACT]`` (``[START] a [EXTRACT]`` without b).

    The texts are stripped: whitespace next to an explicit delimiter would only add a lone space
    token. The classifier reads the hidden state at the final ``extract`` token.
    """
    if text_b is None:
        return f"{start}{text_a.strip()}{extract}"
    return f"{start}{text_a.strip()}{delim}{text_b.strip()}{extract}"


def text_to_text(example: Mapping, task: str | GlueTask) -> tuple[str, str]:
    """T5's (source, target) strings for an example (t5.data.preprocessors.glue and .stsb).

    Source: the task prefix, then ``field: text`` for each text field in sorted field order (so
    MNLI reads "mnli hypothesis: ... premise: ..."). Target: the label's class name ("<unk>" for
    label -1); for STS-B the score rounded to the nearest 0.2 with one decimal ("3.8").
    """
    spec = get_glue_task(task)
    source = " ".join([spec.t5_prefix, *(f"{name}: {example[name]}" for name in sorted(spec.text_fields))])
    label = example.get("label", -1)
    if spec.is_regression:
        # round() is half-to-even, like tf.round in T5's stsb preprocessor: 2.5 -> "2.4".
        target = f"{round(float(label) * 5) / 5:.1f}"
    else:
        target = T5_UNKNOWN_TARGET if label == -1 else spec.label_names[label]
    return source, target


def label_from_text(task: str | GlueTask, generated_text: str) -> int | float:
    """Inverse of text_to_text's target: class index, or the STS-B score; -1 when not parseable.

    Case and surrounding white space are ignored; never raises on model output.
    """
    spec = get_glue_task(task)
    text = generated_text.strip().lower()
    if spec.is_regression:
        try:
            score = float(text)
        except ValueError:
            return -1.0
        return score if math.isfinite(score) else -1.0
    return spec.label_names.index(text) if text in spec.label_names else -1


def labels_from_texts(task: str | GlueTask, generated_texts: Sequence[str]) -> tuple[list[int | float], int]:
    """label_from_text over a batch; returns (labels, number of texts that mapped to -1)."""
    labels = [label_from_text(task, text) for text in generated_texts]
    return labels, sum(label == -1 for label in labels)


# ----------------------------------------------------------------------------------------------
# Predictions and scores


def predictions_from_logits(task: str | GlueTask, logits) -> np.ndarray:
    """Model outputs -> predictions: (N, num_labels) logits -> (N,) int64 class ids (argmax);
    STS-B (N, 1) or (N,) -> (N,) float32 scores."""
    spec = get_glue_task(task)
    logits = np.asarray(logits)
    if spec.is_regression:
        return logits.reshape(len(logits), -1)[:, 0].astype(np.float32)
    return logits.argmax(axis=-1).astype(np.int64)


def write_predictions_jsonl(
    path: str | Path, predictions: Sequence, task: str | GlueTask, indices: Sequence[int] | None = None
) -> Path:
    """Write ``eval_predictions.jsonl``: one ``{"index": i, "prediction": p}`` line per row, in order.

    ``predictions``: (N,) class ids, or STS-B scores. Classification predictions are written as
    the label NAME (GLUE's submission files use names: "entailment", not 0) and an invalid id (-1,
    an unparseable generation) as null; STS-B scores as floats. ``indices`` defaults to 0..N-1,
    the row positions (= the ``idx`` column) of the evaluation file.
    """
    spec = get_glue_task(task)
    predictions = np.asarray(predictions).tolist()
    indices = range(len(predictions)) if indices is None else [int(i) for i in indices]
    if len(indices) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(indices)} indices")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for index, prediction in zip(indices, predictions):
            f.write(json.dumps({"index": index, "prediction": _prediction_value(spec, prediction)}) + "\n")
    return path


def _prediction_value(spec: GlueTask, prediction) -> str | float | None:
    if spec.is_regression:
        return float(prediction)
    prediction = int(prediction)
    return spec.label_names[prediction] if 0 <= prediction < spec.num_labels else None


def glue_average(results_by_task: Mapping[str, Mapping[str, float]]) -> float:
    """The GLUE score: the mean over tasks of each task's score, a task's score being the mean of
    its ``score_keys`` (GLUE's leaderboard convention, as T5's eval_utils.compute_avg_glue does it).

    ``results_by_task``: {task: eval results}, e.g. {"mrpc": {"f1": .9, "accuracy": .86},
    "mnli": {"accuracy": .84, "accuracy_mm": .84}}. Keys may carry the Trainer's ``eval_`` prefix;
    other keys (eval_loss, ...) are ignored. MNLI counts once, as the mean of matched and
    mismatched accuracy (so it is not weighted twice). Averages exactly the tasks given (BERT's
    paper leaves WNLI out, for instance). Units are kept: fractions in, fraction out.
    """
    if not results_by_task:
        raise InputError("glue_average: no task results given")
    task_scores = []
    for name, results in results_by_task.items():
        spec = get_glue_task(name)
        values = {key.removeprefix("eval_"): value for key, value in results.items()}
        missing = [key for key in spec.score_keys if key not in values]
        if missing:
            raise InputError(f"glue_average: results for {spec.name} lack {missing}; have {sorted(values)}")
        task_scores.append(float(np.mean([values[key] for key in spec.score_keys])))
    return float(np.mean(task_scores))
