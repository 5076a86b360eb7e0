"""The nine GLUE tasks as a table: their fields, label names, metrics and the layout of GLUE's TSV files.

    from hfpipe.tasks.glue_tasks import GLUE_TASKS, get_glue_task
    get_glue_task("SST-2").label_names     # ("negative", "positive")

What the task plug-in (hfpipe.tasks.glue) and the embedded examples (hfpipe.tasks.embedded) both read.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from hfpipe.errors import InputError

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
