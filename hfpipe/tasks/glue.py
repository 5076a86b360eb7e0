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
import json
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hfpipe.errors import InputError
from hfpipe.recipes.engine import error
from hfpipe.recipes.schema import IclSection

from .base import Splits, Task, TaskRun, adapt, is_text_to_text, predict_splits, register
from .embedded import embedded_glue
from .glue_tasks import GLUE_TASKS, GlueTask, GlueTsvLayout, get_glue_task, glue_features  # noqa: F401 (re-exported)

GLUE_HUB_ID = "nyu-mll/glue"

# GPT-1 (Radford et al. 2018) feeds pairs as [START] a [DELIM] b [EXTRACT] and classifies from the
# hidden state at [EXTRACT]; the finetuning code adds these three as special tokens.
GPT_START_TOKEN = "<|start|>"
GPT_DELIM_TOKEN = "<|delim|>"
GPT_EXTRACT_TOKEN = "<|extract|>"
GPT_SPECIAL_TOKENS = (GPT_START_TOKEN, GPT_DELIM_TOKEN, GPT_EXTRACT_TOKEN)

# T5's target for an example without a label (t5.data.preprocessors.glue).
T5_UNKNOWN_TARGET = "<unk>"

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


# ---------------------------------------------------------------------------------- the task plug-in
_SINGLE_SENTENCE = ("cola", "sst2")  # the other seven tasks classify a pair of texts
_ICL_PLACEHOLDERS = ("text", "text_a", "text_b", "label")


@register
@dataclass
class Glue(Task):
    """The nine GLUE tasks: a classification (STS-B: regression) head on [CLS] (encoder), on the last
    token (decoder; GPT-1's pair format by default), or label words generated (seq2seq, T5); GLUE's
    metrics; one prediction line per validation row (``eval_predictions[_mm].jsonl``). Also the
    tasks of in-context evaluation (``kind: icl``)."""

    kinds = ("finetune", "icl")

    name: Literal["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]

    @property
    def spec(self) -> GlueTask:
        return GLUE_TASKS[self.name]

    def check_icl(self, recipe, where: str) -> None:
        icl = recipe.icl or IclSection()
        if self.spec.is_regression:
            raise error(where, "task.name",
                        f"icl compares label words: expected a GLUE classification task, got {self.name}")
        if icl.template is not None:
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(icl.template) if f is not None}
            except ValueError as e:
                raise error(where, "icl.template",
                            f"not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
            unknown = sorted(names - set(_ICL_PLACEHOLDERS))
            if unknown:
                raise error(where, "icl.template", f"unknown placeholder {{{unknown[0]}}}; allowed: "
                            + ", ".join("{" + p + "}" for p in _ICL_PLACEHOLDERS))
            if "label" not in names:
                raise error(where, "icl.template", "must contain {label} (where the label word goes)")
            if self.name in _SINGLE_SENTENCE and "text_b" in names:
                raise error(where, "icl.template", f"{self.name} has one text: use {{text}}, not {{text_b}}")
            if self.name not in _SINGLE_SENTENCE and not {"text_a", "text_b"} <= names:
                raise error(where, "icl.template", f"{self.name} classifies a pair: use {{text_a}} and {{text_b}}")
        labels = [str(n) for n in self.spec.label_names]
        if icl.verbalizer is not None and set(icl.verbalizer) != set(labels):
            raise error(where, "icl.verbalizer", f"expected one word for each label of {self.name}: "
                        + ", ".join(labels) + f"; got {', '.join(icl.verbalizer)}")

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        return Splits(embedded_glue(self.name, seed=seed, num_train=num_train, num_eval=num_eval), ["hfpipe-embedded"])

    def load_data(self, recipe, train_files, validation_files, do_train) -> Splits:
        data = recipe.data
        if not (train_files or validation_files):
            return Splits(load_glue(self.name, dataset=data.dataset, dataset_config=data.dataset_config),
                          [data.dataset or GLUE_HUB_ID])
        return Splits(load_glue(self.name, train_file=train_files[0] if train_files else None,
                                validation_file=validation_files[0] if validation_files else None,
                                validation_mismatched_file=validation_files[1] if len(validation_files) > 1 else None),
                      ["local GLUE files"])

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        if is_text_to_text(recipe):
            return self._run_text_to_text(recipe, data, do_train, resume_from)
        from transformers import (
            AutoModelForSequenceClassification,
            DataCollatorWithPadding,
        )

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.metrics import load_metric
        from hfpipe.training.trainer import build_trainer

        spec, max_length = self.spec, self.max_seq_length
        label_kwargs = {"num_labels": spec.num_labels}
        if spec.label_names:
            label_kwargs["id2label"] = dict(enumerate(spec.label_names))
            label_kwargs["label2id"] = {name: i for i, name in enumerate(spec.label_names)}
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSequenceClassification, self._texts(data),
                                                    **label_kwargs)
        gpt_pairs = recipe.model.family == "decoder" and (self.pair_format or "gpt") == "gpt"
        if gpt_pairs and tokenizer.add_tokens(list(GPT_SPECIAL_TOKENS), special_tokens=True):
            model.resize_token_embeddings(len(tokenizer))
        model = adapt(recipe, model, tokenizer)

        def encode(batch):
            a = batch[spec.text_fields[0]]
            b = batch[spec.text_fields[1]] if len(spec.text_fields) > 1 else None
            if gpt_pairs:
                encoded = tokenizer([gpt_pair_text(x, y if b else None) for x, y in zip(a, b or a)],
                                    truncation=True, max_length=max_length)
            else:
                encoded = tokenizer(a, b, truncation=True, max_length=max_length)
            encoded["labels"] = batch["label"]
            return encoded

        def features(dataset):
            return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")

        metric = load_metric("glue", spec.name)

        def compute_metrics(eval_pred):
            return metric.compute(predictions=predictions_from_logits(spec, eval_pred.predictions),
                                  references=eval_pred.label_ids)

        train = features(data.train) if data.train is not None else None
        evaluation = {name: features(ds) for name, ds in data.evaluation.items()}
        trainer, _ = build_trainer(recipe, model, tokenizer, train, next(iter(evaluation.values()), None),
                                   DataCollatorWithPadding(tokenizer), compute_metrics=compute_metrics)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        metrics, predictions = predict_splits(trainer, evaluation, lambda logits: predictions_from_logits(spec, logits))
        return TaskRun(trainer, train_result, metrics, predictions)

    def _run_text_to_text(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        """T5: the label as a word, generated and read back (an unreadable generation is invalid)."""
        from transformers import (
            AutoModelForSeq2SeqLM,
            DataCollatorForSeq2Seq,
            Seq2SeqTrainingArguments,
        )

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.metrics import load_metric
        from hfpipe.training.trainer import HfpipeSeq2SeqTrainer, build_trainer

        spec, max_length = self.spec, self.max_seq_length
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSeq2SeqLM, self._texts(data))
        model = adapt(recipe, model, tokenizer)
        target_words = [text_to_text({**{f: "" for f in spec.text_fields}, "label": i}, spec)[1]
                        for i in range(spec.num_labels)] if spec.label_names else ["5.0"]
        target_length = max(len(tokenizer(w).input_ids) for w in target_words) + 2

        def encode(batch):
            pairs = [text_to_text(dict(zip(batch, values)), spec) for values in zip(*batch.values())]
            encoded = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_length)
            encoded["labels"] = tokenizer([t for _, t in pairs], truncation=True, max_length=target_length)["input_ids"]
            return encoded

        def features(dataset):
            return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="text-to-text")

        def to_labels(generated):
            generated = np.where(generated < 0, tokenizer.pad_token_id, generated)
            return labels_from_texts(spec, tokenizer.batch_decode(generated, skip_special_tokens=True))

        metric = load_metric("glue", spec.name)

        def compute_metrics(eval_pred):
            predictions, invalid = to_labels(eval_pred.predictions)
            references, _ = to_labels(eval_pred.label_ids)
            return {**metric.compute(predictions=predictions, references=references), "invalid_predictions": invalid}

        train = features(data.train) if data.train is not None else None
        evaluation = {name: features(ds) for name, ds in data.evaluation.items()}
        trainer, _ = build_trainer(
            recipe, model, tokenizer, train, next(iter(evaluation.values()), None),
            DataCollatorForSeq2Seq(tokenizer, model=model), compute_metrics=compute_metrics,
            trainer_class=HfpipeSeq2SeqTrainer, args_class=Seq2SeqTrainingArguments,
            extra_args={"predict_with_generate": True, "generation_max_length": target_length},
        )
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        metrics, predictions = predict_splits(trainer, evaluation, lambda generated: np.array(to_labels(generated)[0]))
        return TaskRun(trainer, train_result, metrics, predictions)

    def _texts(self, data):
        """The training texts (a tokenizer trained from scratch reads them)."""
        return lambda: (t for row in data.train or [] for t in encoder_inputs(row, self.spec) if t)

    def write_predictions(self, output_dir: Path, predictions: dict) -> None:
        for split, values in (predictions or {}).items():
            suffix = "_mm" if split.endswith("mismatched") else ""
            write_predictions_jsonl(output_dir / f"eval_predictions{suffix}.jsonl", values, self.spec)
