"""Token tagging (BERT's "single sentence tagging"): named entities (CoNLL-2003 NER) and part of speech.

    train = read_conll("eng.train")                       # tokens, tags, line (CoNLL-2003 text: NER column)
    dev, names = load_tagging("dev.jsonl", "validation", tags_column="ner_tags")   # or parquet, or a Hub id
    labels = label_list(train, names)                      # ClassLabel order, else the sorted training tags
    check_tags(dev, labels, "dev.jsonl")                   # an unknown tag: InputError naming the line
    features = tokenize_and_align(dev, tokenizer, {t: i for i, t in enumerate(labels)}, max_seq_length=128)
    predicted = tags_from_predictions(predicted_ids, features, labels, [len(t) for t in dev["tokens"]])
    write_predictions_jsonl("eval_predictions.jsonl", dev, predicted)

Every split becomes one shape: ``tokens`` (the words, list[str]) and ``tags`` (one tag name per
word, list[str]); CoNLL files add ``line``, the file line of each sentence's first word, for error
messages. Tags are names, not ids, until ``tokenize_and_align`` maps them through the label list,
so a validation file is checked against the training labels by name.

Word pieces: the tag goes on a word's first piece; the other pieces get -100 (no loss), or, with
``label_all_tokens``, the word's tag with B- turned into I- (transformers' run_ner convention, so a
piece after a B- piece does not start a second entity). Predictions are read from the first piece
only, either way, so every word gets exactly one predicted tag.

Long sentences are never truncated: a sentence whose pieces exceed ``max_seq_length`` (with the
special tokens) is split into consecutive windows of whole words, each within the limit; each word
falls in exactly one window and is predicted there (with less context at the window edges). Only a
single word longer than the whole window loses its trailing pieces, which carry no prediction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np

from ..errors import InputError
from ..recipes.engine import error
from .base import Splits, Task, TaskRun, adapt, register
from .embedded import embedded_tagging

logger = logging.getLogger("hfpipe.tagging")

IGNORE_INDEX = -100  # labels transformers' cross-entropy skips
TAGS_COLUMNS = {"ner": "ner_tags", "pos": "pos_tags"}  # the Hub's CoNLL-2003 column for each task
DOCSTART = "-DOCSTART-"  # CoNLL-2003's document separator line, no sentence
_TABLE_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Bookkeeping columns of tokenize_and_align's output, dropped before the model sees a batch.
WINDOW_COLUMNS = ("sentence_index", "word_index")


# ------------------------------------------------------------------------------------------ reading
def read_conll(path: str | Path, tag_column: int = -1) -> datasets.Dataset:
    """CoNLL text: one word per line, whitespace-separated columns (the word first, tags after),
    a blank line between sentences, ``-DOCSTART-`` lines skipped. For CoNLL-2003 the columns are
    ``word POS chunk NER``: ``tag_column`` -1 (the last) reads NER, 1 reads POS.

    Returns a Dataset with ``tokens``, ``tags`` (list[str] each) and ``line`` (1-based line of the
    sentence's first word).
    """
    path = Path(path)
    if tag_column == 0:
        raise InputError(f"{path}: task.conll_tag_column 0 is the word itself; expected the tags' column "
                         "(1 or more, or -1 for the last)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror})") from None
    rows: dict[str, list] = {"tokens": [], "tags": [], "line": []}
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0

    def close() -> None:
        if tokens:
            rows["tokens"].append(list(tokens))
            rows["tags"].append(list(tags))
            rows["line"].append(first_line)
            tokens.clear()
            tags.clear()

    for number, line in enumerate(text.split("\n"), start=1):  # "\n" only: a token may hold U+0085
        columns = line.split()
        if not columns or columns[0] == DOCSTART:
            close()
            continue
        needed = tag_column + 1 if tag_column > 0 else max(2, -tag_column + 1)
        if len(columns) < needed:
            raise InputError(f"{path}:{number}: expected a word and its tag in column {tag_column} "
                             f"(whitespace-separated), got {len(columns)} column(s): {line.strip()!r}")
        if not tokens:
            first_line = number
        tokens.append(columns[0])
        tags.append(columns[tag_column])
    close()
    if not rows["tokens"]:
        raise InputError(f"{path}: no sentences; expected CoNLL lines 'word ... tag' with a blank line "
                         "between sentences")
    return datasets.Dataset.from_dict(rows, features=datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")), "tags": datasets.Sequence(datasets.Value("string")),
        "line": datasets.Value("int64")}))


def from_columns(dataset: datasets.Dataset, tokens_column: str, tags_column: str,
                 where: str) -> tuple[datasets.Dataset, list[str] | None]:
    """A table with a words column and a tags column (ClassLabel ids or names) -> (``tokens``/``tags``
    Dataset, the ClassLabel names in id order or None when the tags are plain strings)."""
    for key, column in (("task.tokens_column", tokens_column), ("task.tags_column", tags_column)):
        if column not in dataset.column_names:
            raise InputError(f"{where}: no column {column!r} ({key}); it has {', '.join(dataset.column_names)}")
    if len(dataset) == 0:
        raise InputError(f"{where}: no rows")
    feature = dataset.features[tags_column]
    inner = getattr(feature, "feature", None)
    names = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
    dataset = dataset.select_columns([tokens_column, tags_column])

    def to_names(batch, indices):
        tags = []
        for i, words, row_tags in zip(indices, batch[tokens_column], batch[tags_column]):
            if len(words) != len(row_tags):
                raise InputError(f"{where} row {i}: {len(words)} words but {len(row_tags)} tags")
            tags.append([names[t] if names is not None else str(t) for t in row_tags])
        return {"tokens": [list(map(str, w)) for w in batch[tokens_column]], "tags": tags}

    out = dataset.map(to_names, batched=True, with_indices=True, remove_columns=dataset.column_names,
                      features=datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                                  "tags": datasets.Sequence(datasets.Value("string"))}),
                      desc="reading tags")
    return out, names


def load_tagging(source: str, split: str, tokens_column: str = "tokens", tags_column: str = "ner_tags",
                 conll_tag_column: int = -1, dataset_config: str | None = None
                 ) -> tuple[datasets.Dataset, list[str] | None]:
    """One split from a local file (``.json``/``.jsonl``/``.parquet`` tables with the two columns;
    any other file is CoNLL text) or a Hub dataset (its ``split``). Returns (sentences, ClassLabel
    names or None)."""
    path = Path(source)
    if path.is_file():
        kind = _TABLE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            return read_conll(path, conll_tag_column), None
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file; expected rows with {tokens_column!r} and {tags_column!r}")
        try:
            table = datasets.load_dataset(kind, data_files=str(path), split="train")
        except (ValueError, datasets.exceptions.DatasetGenerationError) as e:
            raise InputError(f"{path}: not a readable {kind} table ({type(e).__name__})") from None
        return from_columns(table, tokens_column, tags_column, str(path))
    from ..hub import load_hub_dataset

    loaded = load_hub_dataset(source, dataset_config, local_hint="give CoNLL files instead (--train-file/"
                              "--validation-file)")
    if split not in loaded:
        raise InputError(f"data.dataset {source}: no {split!r} split; it has {', '.join(loaded)}")
    return from_columns(loaded[split], tokens_column, tags_column, f"{source} [{split}]")


def load_splits(sources: dict[str, str], tokens_column: str, tags_column: str, conll_tag_column: int = -1,
                dataset_config: str | None = None, holdout_percentage: float = 0.0, seed: int = 0
                ) -> tuple[dict[str, datasets.Dataset], list[str] | None, dict[str, str]]:
    """``sources``: split name ("train", "validation") -> a local file or a Hub id. Without a
    validation source, ``holdout_percentage`` % of the training sentences are held out for it.

    Returns (split -> sentences, ClassLabel names or None, split -> where its rows came from: the
    file, whose CoNLL ``line`` numbers stay valid in a held-out split, or "<hub id> [<split>]").
    """
    splits, names, where = {}, None, {}
    for split, source in sources.items():
        splits[split], split_names = load_tagging(source, split, tokens_column, tags_column, conll_tag_column,
                                                  dataset_config)
        names = names or split_names
        where[split] = source if Path(source).is_file() else f"{source} [{split}]"
    if "validation" not in splits and "train" in splits and holdout_percentage > 0:
        held = splits["train"].train_test_split(test_size=holdout_percentage / 100, seed=seed)
        splits = {"train": held["train"], "validation": held["test"]}
        where["validation"] = where["train"]
    return splits, names, where


def from_dataset_dict(splits: datasets.DatasetDict, tags_column: str, tokens_column: str = "tokens",
                      where: str = "hfpipe-embedded"
                      ) -> tuple[dict[str, datasets.Dataset], list[str] | None, dict[str, str]]:
    """load_splits' result for a DatasetDict already in memory (the embedded data)."""
    out, names = {}, None
    for split, dataset in splits.items():
        out[split], split_names = from_columns(dataset, tokens_column, tags_column, f"{where} [{split}]")
        names = names or split_names
    return out, names, {split: f"{where} [{split}]" for split in out}


def label_list(train: datasets.Dataset, class_names: Sequence[str] | None = None) -> list[str]:
    """The labels, id order: the dataset's ClassLabel names, else the training tags sorted."""
    if class_names:
        return list(class_names)
    return sorted({tag for tags in train["tags"] for tag in tags})


def check_tags(sentences: datasets.Dataset, labels: Sequence[str], where: str) -> None:
    """Every tag must be one the model has a logit for; name the first stranger by line (CoNLL) or row."""
    known = set(labels)
    lines = list(sentences["line"]) if "line" in sentences.column_names else None
    for i, tags in enumerate(sentences["tags"]):
        for j, tag in enumerate(tags):
            if tag not in known:
                at = f"{where}:{lines[i] + j}" if lines is not None else f"{where} row {i} word {j}"
                raise InputError(f"{at}: tag {tag!r} is not in the training label set "
                                 f"({', '.join(labels)})")


# ------------------------------------------------------------------------------------ word pieces
def inside_label(tag: str, labels: Sequence[str]) -> str:
    """The tag for a word's later pieces under ``label_all_tokens``: B-X -> I-X when I-X is a label."""
    if tag.startswith("B-") and f"I-{tag[2:]}" in labels:
        return f"I-{tag[2:]}"
    return tag


def word_windows(piece_counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Split words into consecutive [start, end) windows of at most ``budget`` pieces each, greedily;
    a word longer than the budget gets a window of its own (truncated when tokenized)."""
    windows, start, used = [], 0, 0
    for i, count in enumerate(piece_counts):
        if i > start and used + count > budget:
            windows.append((start, i))
            start, used = i, 0
        used += count
    windows.append((start, len(piece_counts)))
    return windows


def tokenize_and_align(sentences: datasets.Dataset, tokenizer, label2id: dict[str, int], max_seq_length: int,
                       label_all_tokens: bool = False) -> datasets.Dataset:
    """Word pieces and labels for each sentence window (see the module docstring).

    Returns a Dataset with the tokenizer's columns (``input_ids``, ``attention_mask``, ...),
    ``labels`` (one per piece: a label id or -100), and the bookkeeping ``sentence_index`` (the row
    of ``sentences``) and ``word_index`` (per piece: the word's index in its sentence on the word's
    first piece, -1 elsewhere). Drop WINDOW_COLUMNS before handing it to the model.
    """
    budget = max_seq_length - tokenizer.num_special_tokens_to_add(pair=False)
    if budget < 1:
        raise InputError(f"task.max_seq_length {max_seq_length} leaves no room for a word next to the special tokens")
    labels = list(label2id)
    inside = {tag: label2id[inside_label(tag, labels)] for tag in labels}
    unk = tokenizer.unk_token

    def encode(batch, indices):
        out: dict[str, list] = {}
        for index, words, tags in zip(indices, batch["tokens"], batch["tags"]):
            pieces = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
            counts = np.bincount([w for w in pieces.word_ids() if w is not None], minlength=len(words))
            if unk is not None and (counts == 0).any():
                # A word the tokenizer drops entirely (a lone control character) would get no
                # prediction: it stands in as the unknown token, one piece.
                words = [w if c else unk for w, c in zip(words, counts)]
                counts = np.maximum(counts, 1)
            for start, end in word_windows(counts.tolist(), budget):
                encoded = tokenizer(words[start:end], is_split_into_words=True, truncation=True,
                                    max_length=max_seq_length)
                piece_labels, word_index, previous = [], [], None
                for w in encoded.word_ids():
                    if w is None:
                        piece_labels.append(IGNORE_INDEX)
                    elif w != previous:
                        piece_labels.append(label2id[tags[start + w]])
                    else:
                        piece_labels.append(inside[tags[start + w]] if label_all_tokens else IGNORE_INDEX)
                    word_index.append(start + w if w is not None and w != previous else -1)
                    previous = w
                for key, value in encoded.items():
                    out.setdefault(key, []).append(value)
                out.setdefault("labels", []).append(piece_labels)
                out.setdefault("sentence_index", []).append(index)
                out.setdefault("word_index", []).append(word_index)
        return out

    features = sentences.map(encode, batched=True, with_indices=True, remove_columns=sentences.column_names,
                             desc="tokenizing words")
    if len(features) > len(sentences):
        split = int((np.bincount(list(features["sentence_index"])) > 1).sum())
        logger.info("%d sentence(s) longer than task.max_seq_length %d were split into windows of whole words: "
                    "%d windows for %d sentences", split, max_seq_length, len(features), len(sentences))
    return features


# ----------------------------------------------------------------------------------- predictions
def tags_from_predictions(predictions: np.ndarray, features: datasets.Dataset, labels: Sequence[str],
                          sentence_lengths: Sequence[int]) -> list[list[str]]:
    """One predicted tag per word, read from the word's first piece.

    predictions: (windows, T) label ids or (windows, T, num_labels) logits, rows in ``features``'
        order (Trainer pads T with -100 across batches; padding is never a first piece).
    Returns: for each sentence, a list of sentence_lengths[i] tag names.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 3:
        predictions = predictions.argmax(-1)
    out: list[list[str | None]] = [[None] * n for n in sentence_lengths]
    for row, (sentence, word_index) in enumerate(zip(features["sentence_index"], features["word_index"])):
        for position, word in enumerate(word_index):
            if word >= 0:
                out[sentence][word] = labels[int(predictions[row, position])]
    missing = sum(tag is None for tags in out for tag in tags)
    if missing:
        raise ValueError(f"{missing} word(s) got no prediction: features do not cover the sentences")
    return out  # type: ignore[return-value]


def flat_scores(scores: dict, task: str) -> dict[str, float]:
    """The seqeval metric's result as flat numbers for Trainer and eval_results.json.

    ner: overall_precision/recall/f1/accuracy and <TYPE>_precision/recall/f1/number for each type;
    pos: overall_accuracy only (POS tags are not B-/I- chunks, so entity scores would mean nothing).
    """
    if task == "pos":
        return {"overall_accuracy": scores["overall_accuracy"]}
    flat = {key: value for key, value in scores.items() if not isinstance(value, dict)}  # overall_* first
    for key, value in scores.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{name}": v for name, v in value.items()})
    return flat


def write_predictions_jsonl(path: str | Path, sentences: datasets.Dataset, predicted: Sequence[Sequence[str]]) -> Path:
    """``eval_predictions.jsonl``: one line per evaluation sentence, in file order:
    ``{"index": i, "tokens": [...], "tags": [gold...], "predictions": [predicted...]}``."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for i, (tokens, tags, prediction) in enumerate(zip(sentences["tokens"], sentences["tags"], predicted)):
            f.write(json.dumps({"index": i, "tokens": tokens, "tags": tags, "predictions": list(prediction)},
                               ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------------------------- the task plug-in
@register
@dataclass
class Tagging(Task):
    """Token tagging (``task.name: ner | pos``): one label per word, from its first word piece; seqeval's
    entity scores (NER) or token accuracy (POS) on the validation sentences, one prediction line each."""

    name: Literal["ner", "pos"]
    label_all_tokens: bool = False  # ner/pos: label every word piece (B- -> I- after the first), not the first only
    tokens_column: str = "tokens"  # ner/pos: the dataset/JSON column of a sentence's words
    tags_column: str | None = None  # ner/pos: ... of its tags (ClassLabel ids or names); None: ner_tags / pos_tags
    conll_tag_column: int = -1  # ner/pos, CoNLL text files: the tags' column (word = 0); -1: the last (NER), 1: POS

    def check(self, recipe, where: str) -> None:
        family = recipe.model.family
        if family != "encoder" and recipe.model.name_or_path is None:
            # hfpipe's decoder and seq2seq have no token-classification head; a checkpoint whose
            # transformers family has one (checked when it loads) may still be used.
            raise error(where, "model.family", f"{self.name} (token tagging) needs an encoder to train from scratch, "
                        f"got {family}; or give model.name_or_path a checkpoint with a token-classification head")

    def resolve_defaults(self, recipe) -> None:
        if self.tags_column is None:
            self.tags_column = TAGS_COLUMNS[self.name]

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        splits, labels, where = from_dataset_dict(embedded_tagging(seed=seed, num_train=num_train, num_eval=num_eval),
                                                  TAGS_COLUMNS[self.name])
        return Splits(splits, ["hfpipe-embedded"], labels, where)

    def load_data(self, recipe, train_files, validation_files, do_train) -> Splits:
        data = recipe.data
        sources = {"train": train_files[0] if train_files else data.dataset,
                   "validation": validation_files[0] if validation_files else data.dataset}
        sources = {k: v for k, v in sources.items() if v and (do_train or k != "train")}
        splits, labels, where = load_splits(
            sources, self.tokens_column, self.tags_column, self.conll_tag_column, data.dataset_config,
            holdout_percentage=data.validation_split_percentage if do_train else 0.0, seed=recipe.train.seed)
        return Splits(splits, [data.dataset] if data.dataset else ["local CoNLL files"], labels, where)

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        from transformers import (
            AutoModelForTokenClassification,
            DataCollatorForTokenClassification,
        )

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.metrics import load_metric
        from hfpipe.training.results import standard_metric_name
        from hfpipe.training.trainer import build_trainer

        config = _checkpoint_config(recipe)
        labels = label_list(data.train, data.labels) if do_train else _model_labels(recipe, config)
        for split, sentences in [("train", data.train), *data.evaluation.items()]:
            if sentences is not None:
                check_tags(sentences, labels, data.where.get(split, split))
        label2id = {tag: i for i, tag in enumerate(labels)}
        texts = lambda: (" ".join(row["tokens"]) for row in data.train or [])  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForTokenClassification, texts,
                                                    num_labels=len(labels), id2label=dict(enumerate(labels)),
                                                    label2id=label2id)
        model = adapt(recipe, model, tokenizer)
        align = dict(tokenizer=tokenizer, label2id=label2id, max_seq_length=self.max_seq_length,
                     label_all_tokens=self.label_all_tokens)
        window_columns = list(WINDOW_COLUMNS)
        train = (tokenize_and_align(data.train, **align).remove_columns(window_columns)
                 if data.train is not None else None)
        sentences = data.evaluation.get("validation")
        windows = tokenize_and_align(sentences, **align) if sentences is not None else None
        model_inputs = windows.remove_columns(window_columns) if windows is not None else None
        metric = load_metric("seqeval")

        def to_tags(predicted_ids):
            return tags_from_predictions(predicted_ids, windows, labels, [len(t) for t in sentences["tokens"]])

        def compute_metrics(eval_pred):
            scores = metric.compute(predictions=to_tags(eval_pred.predictions), references=list(sentences["tags"]))
            return flat_scores(scores, self.name)

        collator = DataCollatorForTokenClassification(tokenizer)  # pads labels with -100
        trainer, _ = build_trainer(recipe, model, tokenizer, train, model_inputs, collator,
                                   compute_metrics=compute_metrics if windows is not None else None,
                                   preprocess_logits_for_metrics=_label_ids)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        if windows is None:
            return TaskRun(trainer, train_result, {})
        scores, predicted = trainer.evaluate_once(model_inputs)  # the final step's pass, if it ran one
        metrics = {standard_metric_name(k): v for k, v in scores.items()}
        return TaskRun(trainer, train_result, metrics, (sentences, to_tags(predicted)))

    def write_predictions(self, output_dir: Path, predictions) -> None:
        if predictions is not None:
            write_predictions_jsonl(output_dir / "eval_predictions.jsonl", *predictions)


def _label_ids(logits, labels):
    """(B, T, num_labels) -> (B, T) ids before Trainer gathers them: 47 POS logits per piece are
    not worth holding for a whole evaluation set."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def _checkpoint_config(recipe):
    """The checkpoint's config (None from scratch), refused early when transformers has no
    token-classification head for its model type (hfpipe's decoder and seq2seq have none)."""
    if not recipe.model.name_or_path:
        return None
    from transformers import AutoConfig, AutoModelForTokenClassification

    from hfpipe.hub import parse_model_reference

    name, revision = parse_model_reference(recipe.model.name_or_path)
    config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=recipe.model.trust_remote_code)
    auto_map = getattr(config, "auto_map", None) or {}
    remote = recipe.model.trust_remote_code and "AutoModelForTokenClassification" in auto_map
    # _model_mapping is the Auto class's own table (registered hfpipe classes included)
    if not remote and type(config) not in AutoModelForTokenClassification._model_mapping:
        raise InputError(f"model.name_or_path {recipe.model.name_or_path}: {config.model_type} has no "
                         f"token-classification head; {recipe.task.name} needs one (an encoder, e.g. bert-base-cased)")
    return config


def _model_labels(recipe, config) -> list[str]:
    """For ``hfpipe evaluate``: the finetuned model's tags, in the order of its logits."""
    names = [config.id2label[i] for i in range(len(config.id2label))] if config is not None else []
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        raise InputError(f"--model {recipe.model.name_or_path}: config.json names no tags (id2label); evaluate a model "
                         f"finetuned on {recipe.task.name} (hfpipe finetune)")
    return names
