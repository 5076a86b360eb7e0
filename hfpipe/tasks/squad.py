"""SQuAD v1.1 / v2.0: the data, sliding-window features for span extraction, and answers back.

    from hfpipe.tasks.squad import (load_squad, split_by_article, map_features,
                                    postprocess_qa_predictions)
    examples = load_squad("dev-v1.1.json", version="1.1")      # or load_squad("rajpurkar/squad")
    splits = split_by_article(examples, eval_fraction=0.2, seed=0)  # DatasetDict train/validation
    train_features = map_features(splits["train"], tokenizer, training=True)
    eval_features = map_features(splits["validation"], tokenizer, training=False)
    # ... a QA model gives start_logits, end_logits: (num_features, seq_len) ...
    predictions, null_odds = postprocess_qa_predictions(splits["validation"], eval_features,
                                                        start_logits, end_logits)
    # predictions: {question id: answer text} ("" = no answer), the official prediction file

Examples have the Hub's rajpurkar/squad columns: id, title, context, question and answers
{"text": [...], "answer_start": [...]} (character offsets into context; empty lists when
unanswerable). Features follow transformers' run_qa: the question and the context go in as a
pair; a context longer than the window is cut into overlapping windows (`doc_stride` tokens of
overlap), each window a feature; training labels are token positions, the null position (CLS,
or 0 without one) for windows that do not hold the whole answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import datasets
import numpy as np

from hfpipe.errors import InputError
from hfpipe.recipes.engine import AT_LEAST_ONE, checked, error

from .base import Splits, Task, TaskRun, adapt, is_text_to_text, register
from .embedded import embedded_squad
from .squad_format import SQUAD_FEATURES, SQUAD_HUB_IDS, SQUAD_METRICS, squad_version, tokenize_windows  # noqa: F401

# --------------------------------------------------------------------------------------------
# Loading and validating SQuAD's JSON
# --------------------------------------------------------------------------------------------


def load_squad(
    source: str | Path, version: str | int | float | None = None, split: str = "validation"
) -> datasets.Dataset:
    """Load SQuAD examples from a JSON file in SQuAD's format or from the Hub.

    Args:
        source: a path to SQuAD's official JSON ({"data": [{"title", "paragraphs": [{"context",
            "qas": [...]}]}]}) or to the flat {"data": [{"id", "question", "context", "answers":
            {"text", "answer_start"}}]} layout (transformers' test sample); a name that is not an
            existing path and has no file extension is a Hub dataset id (SQUAD_HUB_IDS).
        version: "1.1" (every question answerable) or "2.0" (unanswerable questions allowed);
            None: the file's own "version" field (1.1 when it has none). Only files are checked
            against it.
        split: the Hub split to load; ignored for a file (its questions are one split).

    Returns:
        a Dataset with SQUAD_FEATURES, one row per question, in file order.
    """
    if version is not None:
        version = squad_version(version)
    path = Path(source)
    if path.suffix or path.exists():
        return _load_squad_json(path, version)
    from ..hub import load_hub_dataset

    dataset = load_hub_dataset(str(source), split=split, local_hint="give SQuAD JSON files instead "
                               "(--train-file/--validation-file, the official train-v1.1.json / dev-v1.1.json format)")
    missing = sorted(set(SQUAD_FEATURES) - set(dataset.column_names) - {"title"})
    if missing:
        raise InputError(f"{source}: dataset has no column(s) {', '.join(missing)}; expected SQuAD's {list(SQUAD_FEATURES)}")
    return dataset


def _load_squad_json(path: Path, version: str | None) -> datasets.Dataset:
    if not path.is_file():
        raise InputError(f"{path}: no such file (expected SQuAD's JSON format)")
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise InputError(f'{path}: expected a JSON object with a "data" list (SQuAD\'s format)')
    if version is None:
        try:
            version = squad_version(document.get("version", "1.1"))
        except InputError:
            raise InputError(f'{path}: "version" {document["version"]!r}: expected 1.1 or 2.0') from None

    reader = _SquadJsonReader(path, version)
    for a, article in enumerate(document["data"]):
        where = f"data[{a}]"
        if isinstance(article, dict) and "paragraphs" in article:
            reader.read_article(article, where)
        else:  # the flat layout: one question per entry
            record = reader.require(article, where, dict, "an object with paragraphs or a question")
            title = reader.field(record, "title", where, str, default="")
            context = reader.field(record, "context", where, str)
            reader.read_question(record, where, title, context)
    if not reader.columns["id"]:
        raise InputError(f"{path}: holds no questions")
    return datasets.Dataset.from_dict(reader.columns, features=SQUAD_FEATURES)


class _SquadJsonReader:
    """Walks SQuAD's JSON, checks every field and collects the rows; errors name the JSON path."""

    def __init__(self, path: Path, version: str):
        self.path = path
        self.version = version
        self.columns: dict[str, list] = {name: [] for name in SQUAD_FEATURES}
        self.where_by_id: dict[str, str] = {}

    def error(self, where: str, message: str) -> InputError:
        return InputError(f"{self.path}: {where}: {message}")

    def require(self, value: Any, where: str, kind: type, expected: str) -> Any:
        # bool is an int to Python; an answer_start of true is still wrong
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(where, f"expected {expected}, found {json.dumps(value)[:40]}")
        return value

    def field(self, record: dict, key: str, where: str, kind: type, default: Any = None) -> Any:
        if key not in record:
            if default is not None:
                return default
            raise self.error(where, f'missing "{key}"')
        expected = {str: "a string", int: "an integer", list: "a list", bool: "true or false"}[kind]
        return self.require(record[key], f"{where}.{key}", kind, expected)

    def read_article(self, article: dict, where: str) -> None:
        title = self.field(article, "title", where, str, default="")
        paragraphs = self.field(article, "paragraphs", where, list)
        for p, paragraph in enumerate(paragraphs):
            p_where = f"{where}.paragraphs[{p}]"
            self.require(paragraph, p_where, dict, "an object with context and qas")
            context = self.field(paragraph, "context", p_where, str)
            for q, qa in enumerate(self.field(paragraph, "qas", p_where, list)):
                q_where = f"{p_where}.qas[{q}]"
                self.read_question(self.require(qa, q_where, dict, "a question object"), q_where, title, context)

    def read_question(self, qa: dict, where: str, title: str, context: str) -> None:
        qid = self.field(qa, "id", where, str)
        if not qid:
            raise self.error(f"{where}.id", "empty question id")
        if qid in self.where_by_id:
            raise self.error(where, f"question id {qid!r} already used at {self.where_by_id[qid]}")
        self.where_by_id[qid] = where
        question = self.field(qa, "question", where, str)
        texts, starts = self.read_answers(qa, where, qid, context)
        is_impossible = self.field(qa, "is_impossible", where, bool, default=False)
        if is_impossible and texts:
            raise self.error(where, f"question {qid!r} is_impossible but has {len(texts)} answer(s)")
        if not texts and self.version == "1.1":
            raise self.error(where, f"question {qid!r} has no answer; SQuAD 1.1 needs one (load it as version 2.0)")
        if not texts and not is_impossible and "is_impossible" in qa:
            raise self.error(where, f'question {qid!r} has no answer but "is_impossible" is false')
        for name, value in (("id", qid), ("title", title), ("context", context), ("question", question)):
            self.columns[name].append(value)
        self.columns["answers"].append({"text": texts, "answer_start": starts})

    def read_answers(self, qa: dict, where: str, qid: str, context: str) -> tuple[list[str], list[int]]:
        answers = qa.get("answers", [])
        if isinstance(answers, dict):  # the flat layout: {"text": [...], "answer_start": [...]}
            texts = self.field(answers, "text", f"{where}.answers", list)
            starts = self.field(answers, "answer_start", f"{where}.answers", list)
            if len(texts) != len(starts):
                raise self.error(f"{where}.answers", f"{len(texts)} texts but {len(starts)} answer_start values")
            pairs = [(f"{where}.answers.text[{i}]", t, s) for i, (t, s) in enumerate(zip(texts, starts))]
        else:
            self.require(answers, f"{where}.answers", list, "a list of answers")
            pairs = []
            for i, answer in enumerate(answers):
                a_where = f"{where}.answers[{i}]"
                self.require(answer, a_where, dict, 'an object with "text" and "answer_start"')
                pairs.append((a_where, self.field(answer, "text", a_where, str), self.field(answer, "answer_start", a_where, int)))
        for a_where, text, start in pairs:
            self.require(text, a_where, str, "an answer text")
            self.require(start, a_where, int, "an integer answer_start")
            if not text.strip():
                raise self.error(a_where, f"question {qid!r}: empty answer text")
            if start < 0 or context[start : start + len(text)] != text:
                found = context[max(start, 0) : max(start, 0) + len(text)]
                raise self.error(
                    a_where,
                    f"question {qid!r}: answer_start {start} does not point at the answer {text!r} in the context "
                    f"(found {found!r})",
                )
        return [text for _, text, _ in pairs], [start for _, _, start in pairs]


def split_by_article(
    dataset: datasets.Dataset, eval_fraction: float = 0.1, seed: int = 0
) -> datasets.DatasetDict:
    """Split SQuAD examples into train/validation with no article in both.

    Questions about one article share its paragraphs, so a random question-level split would
    leak contexts into evaluation. Articles are grouped by `title`; rows without a title are
    grouped by their context (paragraph).

    Args:
        eval_fraction: share of the articles (not of the questions) that go to validation, in
            (0, 1); at least one article goes to each side.
        seed: seeds the shuffle of the articles.

    Returns:
        DatasetDict(train=..., validation=...), rows in their original order.
    """
    if not 0.0 < eval_fraction < 1.0:
        raise InputError(f"eval_fraction {eval_fraction}: expected a number between 0 and 1 (exclusive)")
    columns = _as_columns(dataset, ["title", "context"])
    titles = columns.get("title") or [""] * len(columns["context"])
    keys = [title or context for title, context in zip(titles, columns["context"])]
    articles = list(dict.fromkeys(keys))  # first-appearance order, so the seed alone decides the split
    if len(articles) < 2:
        raise InputError(f"split_by_article: the dataset holds {len(articles)} article(s); at least 2 are needed")
    random.Random(seed).shuffle(articles)
    num_eval = min(max(1, round(eval_fraction * len(articles))), len(articles) - 1)
    eval_articles = set(articles[:num_eval])
    in_eval = [key in eval_articles for key in keys]
    return datasets.DatasetDict(
        train=dataset.select([i for i, e in enumerate(in_eval) if not e]),
        validation=dataset.select([i for i, e in enumerate(in_eval) if e]),
    )


# --------------------------------------------------------------------------------------------
# Sliding-window features (transformers' run_qa approach)
# --------------------------------------------------------------------------------------------


def _null_index(input_ids: Sequence[int], tokenizer) -> int:
    """Where unanswerable windows point: the CLS token, or 0 for tokenizers without one (GPT-2, T5)."""
    cls_token_id = tokenizer.cls_token_id
    if cls_token_id is not None and cls_token_id in input_ids:
        return list(input_ids).index(cls_token_id)
    return 0


def prepare_train_features(
    examples: Mapping[str, list], tokenizer, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = False
) -> dict[str, list]:
    """A batch of SQuAD examples -> training features, one per window (for batched datasets.map).

    Args:
        examples: columns id, question, context, answers (the first gold answer is the label).
        tokenizer: a fast tokenizer (offset mappings are needed).
        max_seq_length: tokens per window, question and special tokens included.
        doc_stride: tokens of context shared by consecutive windows.
        pad_to_max_length: pad every window to max_seq_length (else leave it to the collator).

    Returns:
        the tokenizer's columns (input_ids, attention_mask, token_type_ids if any) plus
        start_positions and end_positions: token indices of the answer's first and last token
        in the window, both the null index (CLS, or 0) when the window does not hold the whole
        answer or the question has none. Shapes: F lists, F >= number of examples.
    """
    tokenized, context_index = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    start_positions, end_positions = [], []
    for i, offsets in enumerate(offset_mapping):
        null_index = _null_index(tokenized["input_ids"][i], tokenizer)
        answers = examples["answers"][sample_mapping[i]]
        if not answers["answer_start"]:
            start_positions.append(null_index)
            end_positions.append(null_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        context_tokens = [t for t, s in enumerate(tokenized.sequence_ids(i)) if s == context_index]
        first, last = context_tokens[0], context_tokens[-1]
        if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
            start_positions.append(null_index)  # the answer is not (wholly) in this window
            end_positions.append(null_index)
            continue
        # The answer's first token is the first one ending after start_char, its last token the
        # last one starting before end_char: the same tokens as run_qa's search when the answer
        # starts and ends on token boundaries or inside tokens, and not the neighbouring token
        # when an answer text starts or ends with white space.
        start_positions.append(next(t for t in context_tokens if offsets[t][1] > start_char))
        end_positions.append(next(t for t in reversed(context_tokens) if offsets[t][0] < end_char))
    tokenized["start_positions"] = start_positions
    tokenized["end_positions"] = end_positions
    return tokenized.data


def prepare_validation_features(
    examples: Mapping[str, list], tokenizer, max_seq_length: int = 384, doc_stride: int = 128, pad_to_max_length: bool = False
) -> dict[str, list]:
    """A batch of SQuAD examples -> evaluation features, one per window (for batched datasets.map).

    Returns:
        the tokenizer's columns plus example_id (the question id the window belongs to),
        cls_index (the null position, for the no-answer score) and offset_mapping: per token
        (start_char, end_char) in the context, None for tokens outside the context (question,
        special and padding tokens) so that post-processing never answers from them.
    """
    tokenized, context_index = tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    tokenized["example_id"] = [examples["id"][s] for s in sample_mapping]
    tokenized["cls_index"] = [_null_index(ids, tokenizer) for ids in tokenized["input_ids"]]
    tokenized["offset_mapping"] = [
        [offset if sequence_id == context_index else None for offset, sequence_id in zip(offsets, tokenized.sequence_ids(i))]
        for i, offsets in enumerate(tokenized["offset_mapping"])
    ]
    return tokenized.data


def map_features(
    dataset: datasets.Dataset,
    tokenizer,
    *,
    training: bool,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    pad_to_max_length: bool = False,
    batch_size: int = 1000,
    num_proc: int | None = None,
    load_from_cache_file: bool | None = None,
) -> datasets.Dataset:
    """`dataset.map` of prepare_train_features (training=True) or prepare_validation_features.

    Returns a Dataset of features (more rows than `dataset` when contexts overflow the window);
    the example columns are dropped (keep `dataset` for post-processing).
    """
    prepare = prepare_train_features if training else prepare_validation_features
    return dataset.map(
        prepare,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        load_from_cache_file=load_from_cache_file,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_seq_length": max_seq_length,
            "doc_stride": doc_stride,
            "pad_to_max_length": pad_to_max_length,
        },
        desc=f"SQuAD {'train' if training else 'validation'} features",
    )


# --------------------------------------------------------------------------------------------
# Post-processing: logits -> answer texts
# --------------------------------------------------------------------------------------------


def _best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, in_context: np.ndarray, n_best_size: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """The highest start+end score among the n_best start x n_best end candidates of one window.

    A span is valid when both ends are context tokens, end >= start and it spans at most
    max_answer_length tokens. Returns (score, start, end) or None when no candidate is valid.
    Vectorised over the n_best x n_best grid (run_qa loops over it in Python).
    """
    # stable: on ties the earlier token wins, so results do not depend on the sort algorithm
    starts = np.argsort(-start_logits, kind="stable")[:n_best_size]
    ends = np.argsort(-end_logits, kind="stable")[:n_best_size]
    length = ends[None, :] - starts[:, None] + 1  # (n, n)
    valid = in_context[starts][:, None] & in_context[ends][None, :] & (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, start_logits[starts][:, None] + end_logits[ends][None, :], -np.inf)
    s, e = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[s, e]), int(starts[s]), int(ends[e])


def postprocess_qa_predictions(
    examples: datasets.Dataset | Iterable[Mapping[str, Any]],
    features: datasets.Dataset | Mapping[str, Sequence],
    start_logits,
    end_logits,
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float]]:
    """Turn per-window start/end logits into one answer text per question.

    Args:
        examples: the dataset the features were made from (columns "id" and "context"; a
            Dataset, a dict of columns or a list of rows).
        features: the output of prepare_validation_features (example_id, offset_mapping and,
            optionally, cls_index), in the order the logits come in; same container kinds.
        start_logits, end_logits: (F, T) arrays (or F sequences), one row per feature; positions
            beyond a feature's length (padding added when batching) are ignored.
        version_2_with_negative: SQuAD 2.0: the answer may be "no answer".
        n_best_size: candidate starts and ends per window (the top-n of each).
        max_answer_length: the longest answer, in tokens.
        null_score_diff_threshold: v2: answer "" when null score - best span score > this.

    Returns:
        predictions: {question id: answer text}, "" for no answer (the official format).
        null_odds: {question id: null score - best span score} (the official script's na-prob
            input; +inf when no window has a valid span). The null score is the minimum over
            the example's windows of start_logit[null] + end_logit[null].
    """
    feature_columns = _as_columns(features, ["example_id", "offset_mapping", "cls_index"])
    example_ids, offset_mappings = feature_columns["example_id"], feature_columns["offset_mapping"]
    cls_indices = feature_columns.get("cls_index") or [0] * len(example_ids)
    if len(start_logits) != len(example_ids) or len(end_logits) != len(example_ids):
        raise ValueError(
            f"postprocess_qa_predictions: {len(example_ids)} features but {len(start_logits)} start and "
            f"{len(end_logits)} end logit rows"
        )
    features_by_example: dict[str, list[int]] = {}
    for i, example_id in enumerate(example_ids):
        features_by_example.setdefault(example_id, []).append(i)

    predictions: dict[str, str] = {}
    null_odds: dict[str, float] = {}
    example_columns = _as_columns(examples, ["id", "context"])
    for qid, context in zip(example_columns["id"], example_columns["context"]):
        if qid not in features_by_example:
            raise ValueError(f"postprocess_qa_predictions: example {qid!r} has no feature")
        best = None  # (score, start_char, end_char)
        null_score = np.inf
        for i in features_by_example[qid]:
            offsets = offset_mappings[i]
            starts = np.asarray(start_logits[i], dtype=np.float64)[: len(offsets)]
            ends = np.asarray(end_logits[i], dtype=np.float64)[: len(offsets)]
            null_score = min(null_score, float(starts[cls_indices[i]] + ends[cls_indices[i]]))
            in_context = np.array([offset is not None for offset in offsets], dtype=bool)
            span = _best_span(starts, ends, in_context, n_best_size, max_answer_length)
            if span is not None and (best is None or span[0] > best[0]):
                best = (span[0], offsets[span[1]][0], offsets[span[2]][1])
        answer = "" if best is None else context[best[1] : best[2]]
        null_odds[qid] = np.inf if best is None else null_score - best[0]
        if version_2_with_negative and null_odds[qid] > null_score_diff_threshold:
            answer = ""
        predictions[qid] = answer
    return predictions, null_odds


def _as_columns(table, names: list[str]) -> dict[str, list]:
    """The named columns (those present) of a Dataset, a dict of columns or a list of rows, as lists.

    One Arrow read per column: iterating a Dataset row by row costs ~0.1 ms a row.
    """
    if isinstance(table, datasets.Dataset):
        return table.select_columns([n for n in names if n in table.column_names])[:]
    if isinstance(table, Mapping):
        return {n: list(table[n]) for n in names if n in table}
    rows = list(table)
    return {n: [row[n] for row in rows] for n in names if not rows or n in rows[0]}


# ---------------------------------------------------------------------------------- the task plug-in
@register
@dataclass
class Squad(Task):
    """Extractive question answering (``task.name: squad``, SQuAD 1.1; :class:`SquadV2` adds questions
    without an answer): start/end logits over windows of the context, post-processed into answer texts
    and scored by the official SQuAD rules; an encoder-decoder generates the answer instead
    (hfpipe.tasks.generative_qa)."""

    kinds = ("finetune", "icl")  # icl refuses it with its own message (check_icl)
    version_2: ClassVar[bool] = False  # SQuAD 2.0: a question may have no answer in its context

    name: Literal["squad"]
    doc_stride: int = checked(128, AT_LEAST_ONE)  # SQuAD: overlap between windows of a long context
    n_best_size: int = checked(20, AT_LEAST_ONE)  # SQuAD: start/end candidates kept per window
    max_answer_length: int = checked(30, AT_LEAST_ONE)  # SQuAD: longest answer in tokens

    @property
    def no_answer_threshold(self) -> float:
        """Predict "" when the null score beats the best span's by more than this (v1.1 always answers)."""
        return 0.0

    def check(self, recipe, where: str) -> None:
        if self.doc_stride >= self.max_seq_length:
            raise error(where, "task.doc_stride",
                        f"must be smaller than task.max_seq_length ({self.max_seq_length}), got {self.doc_stride}")
        if recipe.model.family == "seq2seq":
            if self.text_to_text is False:
                raise error(where, "task.text_to_text", "an encoder-decoder answers SQuAD by generating the answer's "
                            "text: expected true (span extraction needs model.family encoder or decoder)")
            defaults = type(self)(name=self.name)
            for key in ("n_best_size", "null_score_diff_threshold"):  # the second is SquadV2's own
                if getattr(self, key, None) != getattr(defaults, key, None):
                    raise error(where, f"task.{key}", "scores extracted spans and has no effect on generated "
                                "answers (text-to-text SQuAD); remove it")

    def check_icl(self, recipe, where: str) -> None:
        raise error(where, "task.name", f"icl compares label words: expected a GLUE classification task, got {self.name}")

    def smoke_overrides(self) -> dict[str, Any]:
        return {"task.doc_stride": min(self.doc_stride, 32)}

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        return Splits(embedded_squad(version="v2" if self.version_2 else "v1", seed=seed, num_train=num_train,
                                     num_eval=num_eval), ["hfpipe-embedded"])

    def load_data(self, recipe, train_files, validation_files, do_train) -> Splits:
        data, version = recipe.data, "2.0" if self.version_2 else "1.1"
        source_train = train_files[0] if train_files else data.dataset
        source_eval = validation_files[0] if validation_files else data.dataset
        splits = {}
        if do_train:
            if not source_train:
                raise InputError(f"{self.name}: no training data; pass --train-file (SQuAD JSON) or set data.dataset")
            splits["train"] = load_squad(source_train, version, split="train")
        if source_eval:
            splits["validation"] = load_squad(source_eval, version, split="validation")
        return Splits(splits, [data.dataset] if data.dataset else [])

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        if is_text_to_text(recipe):
            return self._run_generative(recipe, data, do_train, resume_from)
        from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.training.trainer import build_trainer

        texts = lambda: (t for row in data.train or [] for t in (row["question"], row["context"]))  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForQuestionAnswering, texts)
        model = adapt(recipe, model, tokenizer)
        window = dict(max_seq_length=self.max_seq_length, doc_stride=self.doc_stride)
        train = map_features(data.train, tokenizer, training=True, **window) if data.train is not None else None
        trainer, _ = build_trainer(recipe, model, tokenizer, train, None, DataCollatorWithPadding(tokenizer))
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        examples = data.evaluation.get("validation")
        if examples is None:
            return TaskRun(trainer, train_result, {})
        features = map_features(examples, tokenizer, training=False, **window)
        model_inputs = features.remove_columns(["example_id", "offset_mapping", "cls_index"])
        start_logits, end_logits = trainer.predict(model_inputs).predictions[:2]
        predictions, null_odds = postprocess_qa_predictions(
            examples, features, start_logits, end_logits, version_2_with_negative=self.version_2,
            n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
            null_score_diff_threshold=self.no_answer_threshold,
        )
        metrics = squad_score(examples, predictions, null_odds, self.version_2, self.no_answer_threshold)
        return TaskRun(trainer, train_result, metrics, predictions)

    def _run_generative(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        """T5's generative SQuAD (hfpipe.tasks.generative_qa), scored like extractive answers."""
        from transformers import (
            AutoModelForSeq2SeqLM,
            DataCollatorForSeq2Seq,
            Seq2SeqTrainingArguments,
        )

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.training.trainer import HfpipeSeq2SeqTrainer, build_trainer

        from .generative_qa import generate_answers, map_generative_features

        texts = lambda: (t for row in data.train or [] for t in (row["question"], row["context"]))  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSeq2SeqLM, texts)
        model = adapt(recipe, model, tokenizer)
        window = dict(max_seq_length=self.max_seq_length, doc_stride=self.doc_stride)
        train = (map_generative_features(data.train, tokenizer, training=True, version_2=self.version_2, **window)
                 if data.train is not None else None)
        trainer, _ = build_trainer(recipe, model, tokenizer, train, None, DataCollatorForSeq2Seq(tokenizer, model=model),
                                   trainer_class=HfpipeSeq2SeqTrainer, args_class=Seq2SeqTrainingArguments)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        examples = data.evaluation.get("validation")
        if examples is None:
            return TaskRun(trainer, train_result, {})
        predictions, no_answer = generate_answers(
            trainer.model, tokenizer, examples, max_answer_length=self.max_answer_length,
            batch_size=recipe.train.per_device_eval_batch_size, device=trainer.args.device, **window)
        # A generated "unanswerable" is certain (probability 1), so the v2 threshold is 0.5 of it.
        metrics = squad_score(examples, predictions, no_answer, self.version_2, 0.5)
        return TaskRun(trainer, train_result, metrics, predictions)

    def write_predictions(self, output_dir: Path, predictions: dict[str, str] | None) -> None:
        if predictions is not None:
            from hfpipe.training.results import write_json

            write_json(output_dir / "eval_predictions.json", predictions)


@register
@dataclass
class SquadV2(Squad):
    """SQuAD 2.0 (``task.name: squad_v2``): SQuAD 1.1's task, and a third of the questions have no answer."""

    version_2 = True

    name: Literal["squad_v2"]
    null_score_diff_threshold: float = 0.0  # predict "" when null score - best span > this

    @property
    def no_answer_threshold(self) -> float:
        return self.null_score_diff_threshold


def squad_score(examples, predictions: dict, null_odds: dict, version_2: bool, threshold: float) -> dict:
    """The official SQuAD v1.1 / v2.0 scores of ``predictions`` ({id: text}) on ``examples``."""
    from hfpipe.metrics import load_metric

    metric = load_metric(SQUAD_METRICS["2.0" if version_2 else "1.1"])
    references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])]
    if version_2:
        # null_odds with the same threshold as the predictions: exact/f1 agree with the
        # predictions file, and best_exact/best_f1 show the threshold worth using.
        formatted = [{"id": k, "prediction_text": v, "no_answer_probability": null_odds[k]} for k, v in predictions.items()]
        return metric.compute(predictions=formatted, references=references, no_answer_threshold=threshold)
    formatted = [{"id": k, "prediction_text": v} for k, v in predictions.items()]
    return metric.compute(predictions=formatted, references=references)
