"""Text corpora for pretraining: load and validate, split into sentences, tokenize (cached).

    from hfpipe.data.corpus import load_text_dataset, tokenize_dataset, sentences_dataset
    corpus = load_text_dataset(files=["book.txt"])          # DatasetDict: train / validation ("text")
    ids = tokenize_dataset(corpus, tokenizer)               # "input_ids": list[int] per document
    docs = sentences_dataset(corpus["train"], tokenizer)    # "sentences": list[list[int]] per document

Where text comes from: a Hub dataset (``source``), local files (``files``: .txt, .jsonl/.json, .csv,
.parquet, one kind per call), or, when neither is given, the embedded corpus (the docstrings of the
running Python's standard library: real English prose on every machine, no network, no files).

Documents in a .txt file (``sample_by="paragraph"``, the default): a document is a maximal run of
non-blank lines, as in BERT's pretraining data format (blank lines separate documents); its lines
are joined with "\\n". Blank (empty or whitespace-only) lines are separators: they are skipped,
counted and logged. ``sample_by="line"`` makes every non-blank line a document (for one-document-
per-line corpora with no blank lines, which the paragraph rule would merge into one document).
In column formats, rows whose text is null, empty or whitespace-only are skipped, counted, logged.

Checks run before any heavy work and raise `hfpipe.errors.InputError` naming the file (and byte
offset, line or row): the file exists, is non-empty and is UTF-8; the text column exists and holds
strings; no document is longer than MAX_DOCUMENT_BYTES (one is almost certainly a file without
line breaks, or the wrong column). When streaming, document lengths and blank rows are checked
and counted as the stream is read (UTF-8 is still checked up front).
"""

from __future__ import annotations

import ast
import codecs
import functools
import inspect
import logging
import math
import os
import re
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.fingerprint import Hasher

from hfpipe.errors import InputError

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 10_000_000  # one document (line, paragraph or row) of UTF-8 text
BUILDER_OF_EXTENSION = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# Bump when the output of tokenize_dataset / sentences_dataset changes for the same inputs.
_CACHE_VERSION = "1"

# --------------------------------------------------------------------------------------------
# The embedded corpus
# --------------------------------------------------------------------------------------------

# Tests, GUI demos, vendored and generated code: little prose, or prose that is not English.
_STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "turtledemo", "lib2to3", "site-packages", "dist-packages",
     "pydoc_data", "encodings", "ensurepip", "lib-dynload", "__pycache__"}
)


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")  # where a def or class can sit


def _docstrings_in_source_order(node: ast.AST) -> Iterator[str]:
    """Docstrings of a module, its classes and functions, depth first in source order."""
    if isinstance(node, _DOCUMENTED):
        docstring = ast.get_docstring(node, clean=False)
        if docstring and not docstring.isspace():
            yield inspect.cleandoc(docstring).strip()  # cleandoc keeps a whitespace-only last line
    # Statements only: expressions hold no docstrings, and skipping them halves the time.
    for field in _STATEMENT_LISTS:
        children = getattr(node, field, None)
        if isinstance(children, list):
            for child in children:
                yield from _docstrings_in_source_order(child)


@functools.lru_cache(maxsize=1)
def _stdlib_docstrings() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    started = time.perf_counter()
    documents: list[str] = []
    for directory, subdirectories, filenames in os.walk(root):
        # Sorted walk: the corpus is the same list on every run of the same Python.
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in _STDLIB_SKIP_DIRS and not d.startswith("config-")
        )
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(directory, filename).read_bytes())
            except (SyntaxError, ValueError, OSError):  # deliberately broken or unreadable sources
                continue
            documents.extend(_docstrings_in_source_order(tree))
    logger.debug("embedded corpus: %d docstrings from %s in %.1f s",
                 len(documents), root, time.perf_counter() - started)
    return tuple(documents)


def embedded_corpus(max_chars: int | None = None) -> list[str]:
    """Docstrings of the running Python's standard library, one document each (~7,200 docs, ~1.5 MB).

    The first call parses the sources with `ast` (about 3 s on one core); the result is cached in
    the process. ``max_chars`` keeps the leading whole documents whose lengths sum to at most it.
    """
    documents = _stdlib_docstrings()
    if max_chars is None:
        return list(documents)
    kept, total = [], 0
    for document in documents:
        total += len(document)
        if total > max_chars:
            break
        kept.append(document)
    return kept


# --------------------------------------------------------------------------------------------
# File checks and .txt documents
# --------------------------------------------------------------------------------------------


def check_utf8(path: str | Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise InputError naming `path` and the byte offset of the first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before the current chunk
    with open(path, "rb") as file:
        while True:
            chunk = file.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                # error.start counts from the start of (pending bytes + chunk)
                raise InputError(
                    f"{path}: byte offset {offset - pending + error.start} is not valid UTF-8 "
                    f"({error.reason}); expected a UTF-8 text file"
                ) from None
            if not chunk:
                return
            offset += len(chunk)


def _check_files(files: Sequence[str | Path], what: str = "data file") -> str:
    """Check `files` exist, are non-empty and share one known extension; return the datasets builder name."""
    if isinstance(files, (str, Path)):
        files = [files]
    if not files:
        raise InputError(f"no {what}s given; expected at least one file")
    builders = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise InputError(f"{what} {file} does not exist or is not a file")
        if path.stat().st_size == 0:
            raise InputError(f"{what} {file} is empty; expected text")
        suffix = path.suffix.lower()
        if suffix not in BUILDER_OF_EXTENSION:
            known = ", ".join(BUILDER_OF_EXTENSION)
            raise InputError(f"{what} {file}: unknown extension {suffix!r}; expected one of {known}")
        builders.setdefault(BUILDER_OF_EXTENSION[suffix], file)
    if len(builders) > 1:
        kinds = ", ".join(f"{builder} ({file})" for builder, file in builders.items())
        raise InputError(f"{what}s mix formats: {kinds}; expected files of one kind per call")
    return next(iter(builders))


@dataclass
class TxtStats:
    """Line accounting of one .txt file: every line is either blank (skipped) or in a document."""

    lines: int = 0
    blank_lines: int = 0
    documents: int = 0


def iter_txt_documents(
    path: str | Path, sample_by: Literal["paragraph", "line"] = "paragraph", stats: TxtStats | None = None
) -> Iterator[str]:
    """Documents of a UTF-8 .txt file (see the module docstring for the rule), streamed line by line.

    Raises InputError naming the file and byte offset on bad UTF-8, and the file and line of a
    document longer than MAX_DOCUMENT_BYTES (read at most that many bytes of one line at a time).
    """
    if sample_by not in ("paragraph", "line"):
        raise InputError(f"sample_by {sample_by!r} is unknown; expected 'paragraph' or 'line'")
    stats = stats if stats is not None else TxtStats()
    lines: list[str] = []  # the document being gathered
    size = first_line = offset = 0
    with open(path, "rb") as file:
        while raw := file.readline(MAX_DOCUMENT_BYTES + 1):
            stats.lines += 1
            content = raw.rstrip(b"\r\n")
            try:
                line = content.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{path}: byte offset {offset + error.start} (line {stats.lines}) is not valid UTF-8 "
                    f"({error.reason}); expected a UTF-8 text file"
                ) from None
            offset += len(raw)
            if stats.lines == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not text
            if not line or line.isspace():
                stats.blank_lines += 1
                if lines:
                    stats.documents += 1
                    yield "\n".join(lines)
                    lines, size = [], 0
                continue
            if not lines:
                first_line = stats.lines
            size += len(content) + bool(lines)
            if size > MAX_DOCUMENT_BYTES:
                raise InputError(
                    f"{path}: the document starting at line {first_line} is longer than {MAX_DOCUMENT_BYTES:,} "
                    "bytes; expected documents separated by blank lines (or sample_by='line')"
                )
            lines.append(line)
            if sample_by == "line":
                stats.documents += 1
                yield line
                lines, size = [], 0
    if lines:
        stats.documents += 1
        yield "\n".join(lines)


def _log_txt_stats(path: str | Path, stats: TxtStats) -> None:
    logger.info(
        "%s: %d documents from %d lines; skipped %d empty lines", path, stats.documents, stats.lines, stats.blank_lines
    )


def _txt_rows(files: list[str], sample_by: str, text_column: str, file_states: list, log: bool) -> Iterator[dict]:
    """Generator for Dataset.from_generator; `file_states` (size, mtime) only key the datasets cache."""
    for file in files:
        stats = TxtStats()
        for document in iter_txt_documents(file, sample_by, stats):
            yield {text_column: document}
        if log:
            _log_txt_stats(file, stats)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_text_dataset(
    source: str | None = None,
    files: Sequence[str | Path] | None = None,
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
    validation_split_percentage: float = 5,
    seed: int = 42,
    validation_files: Sequence[str | Path] | None = None,
    dataset_config: str | None = None,
    sample_by: Literal["paragraph", "line"] = "paragraph",
    cache_dir: str | None = None,
) -> DatasetDict | IterableDatasetDict:
    """A corpus of documents in one string column, `text_column`, split into "train" and "validation".

    Args:
        source: a Hub dataset name (or anything `datasets.load_dataset` takes); `split` is its training split.
        files: local files of one kind (.txt, .jsonl/.json, .csv, .parquet). None with no source: the
            embedded corpus.
        validation_files: held-out files; otherwise the source's "validation" split, otherwise
            `validation_split_percentage` percent of the training documents (at least one),
            drawn at random with `seed`. 0 gives a "train" split only.
        streaming: return an IterableDatasetDict ("train", and "validation" only when files or the
            source provide it: a stream cannot be split by percentage).
        sample_by: the .txt document rule (see the module docstring).
        cache_dir: datasets' cache folder (default: datasets' own).

    Only `text_column` is kept. Raises InputError (see the module docstring) before heavy work.
    """
    if files and source:
        raise InputError(f"data: both a dataset ({source}) and files were given; expected one of them")
    if not 0 <= validation_split_percentage < 100:
        raise InputError(
            f"validation_split_percentage: expected a number in [0, 100), got {validation_split_percentage}"
        )
    load_files = functools.partial(
        _load_files, text_column=text_column, streaming=streaming, sample_by=sample_by, cache_dir=cache_dir
    )
    if validation_files:
        _check_files(validation_files, "validation file")  # fail before the training files are read
    if files:
        splits = {"train": load_files(files)}
    elif source:
        splits = _load_source(source, dataset_config, split, text_column, streaming, cache_dir)
    else:
        corpus = Dataset.from_dict({text_column: embedded_corpus()})
        splits = {"train": corpus.to_iterable_dataset() if streaming else corpus}
    if validation_files:
        splits["validation"] = load_files(validation_files, what="validation file")
    if streaming:
        return IterableDatasetDict(splits)
    if "validation" not in splits and validation_split_percentage > 0:
        splits = _hold_out(splits["train"], validation_split_percentage, seed)
    return DatasetDict(splits)


def _load_files(
    files: Sequence[str | Path], text_column: str, streaming: bool, sample_by: str, cache_dir: str | None,
    what: str = "data file",
) -> Dataset | IterableDataset:
    builder = _check_files(files, what)
    files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if builder != "parquet":  # parquet is binary: its strings are checked by Arrow
        for file in files:
            check_utf8(file)
    if builder == "text":
        # Our own reader, not datasets' "text" builder: its paragraph mode splits on exactly "\n\n"
        # (whitespace-only lines do not separate) and drops empty rows without counting them.
        states = [(os.path.getsize(f), os.path.getmtime(f)) for f in files]
        kwargs = {"files": files, "sample_by": sample_by, "text_column": text_column, "file_states": states}
        if streaming:  # documents checked and counted as the stream is read
            return IterableDataset.from_generator(_txt_rows, gen_kwargs={**kwargs, "log": True})
        total = TxtStats()
        for file in files:  # the checks and counts, before datasets writes anything
            stats = TxtStats()
            for _ in iter_txt_documents(file, sample_by, stats):
                pass
            _log_txt_stats(file, stats)
            total.documents += stats.documents
        if total.documents == 0:
            raise InputError(f"{what}s {', '.join(files)} hold no text, only blank lines; expected documents")
        return Dataset.from_generator(_txt_rows, gen_kwargs={**kwargs, "log": False}, cache_dir=cache_dir)
    # utf-8-sig: a byte-order mark must not become part of the first column's name.
    options = {"encoding": "utf-8-sig"} if builder == "csv" else {}
    if streaming:
        # One stream over all files: datasets then sees one shard per file, which is what
        # split_dataset_by_node and DataLoader workers divide between processes (a
        # concatenation of per-file streams would be a single shard). Rows are checked as read.
        stream = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **options)
        return _checked_text_column(stream, text_column, where=f"{what}s {', '.join(files)}")
    parts = []
    for file in files:  # one by one, so that a bad row can be reported with its file
        try:
            part = datasets.load_dataset(builder, data_files=[file], split="train", streaming=streaming,
                                         cache_dir=cache_dir, **options)
        except datasets.exceptions.DatasetGenerationError as error:
            cause = str(error.__cause__ or error).strip().splitlines()[0]
            raise InputError(f"{what} {file} cannot be read as {builder}: {cause}") from error
        parts.append(_checked_text_column(part, text_column, where=f"{what} {file}"))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _load_source(
    source: str, dataset_config: str | None, split: str, text_column: str, streaming: bool, cache_dir: str | None
) -> dict[str, Dataset | IterableDataset]:
    try:
        loaded = datasets.load_dataset(source, dataset_config, streaming=streaming, cache_dir=cache_dir)
    except datasets.exceptions.DatasetNotFoundError as error:
        raise InputError(f"data.dataset {source!r} was not found ({error}); expected a Hub dataset name") from error
    if split not in loaded:
        raise InputError(f"dataset {source!r} has no split {split!r}; found {', '.join(loaded)}")
    splits = {"train": loaded[split]}
    if "validation" in loaded and split != "validation":
        splits["validation"] = loaded["validation"]
    return {
        name: _checked_text_column(part, text_column, f"dataset {source} [{name}]") for name, part in splits.items()
    }


def _checked_text_column(dataset: Dataset | IterableDataset, text_column: str, where: str) -> Dataset | IterableDataset:
    """Keep only `text_column` after checking it: present, strings, no overlong row; blank rows skipped and counted."""
    columns = dataset.column_names
    if columns is None:  # a stream whose features are unknown until read
        columns = list(next(iter(dataset)))
    if text_column not in columns:
        raise InputError(
            f"{where}: no column {text_column!r}; found columns {columns}; expected the text column's name"
        )
    feature = dataset.features[text_column] if dataset.features else None
    if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise InputError(f"{where}: column {text_column!r} holds {feature}; expected strings")
    dataset = dataset.select_columns([text_column])
    if isinstance(dataset, IterableDataset):
        return dataset.filter(_StreamedTextCheck(where), input_columns=[text_column], with_indices=True)
    texts = dataset.with_format("arrow")[text_column]  # Arrow compute: a pass over the column in C++
    sizes = pc.binary_length(texts)
    longest = pc.max(sizes).as_py() or 0
    if longest > MAX_DOCUMENT_BYTES:
        row = pc.index(sizes, longest).as_py()
        raise InputError(f"{where}: row {row} holds {longest:,} bytes of text, more than {MAX_DOCUMENT_BYTES:,}; "
                         "expected one document per row")
    blank = pc.fill_null(pc.or_(pc.equal(sizes, 0), pc.utf8_is_space(texts)), True)
    num_blank = int(pc.sum(blank).as_py() or 0)
    logger.info("%s: %d rows; skipped %d empty texts", where, len(dataset) - num_blank, num_blank)
    if num_blank == len(dataset):
        raise InputError(f"{where}: column {text_column!r} holds no text; expected documents")
    if num_blank:
        dataset = dataset.select(pc.indices_nonzero(pc.invert(blank)).to_pylist())
    return dataset


class _StreamedTextCheck:
    """`IterableDataset.filter` function: skips blank texts (counted, logged at 1, 10, 100, ...) and
    raises InputError on an overlong one, since a stream cannot be checked before it is read."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.num_blank = 0

    def __call__(self, text: str | None, index: int) -> bool:
        if text and len(text) > MAX_DOCUMENT_BYTES // 4 and len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
            raise InputError(f"{self.where}: row {index} holds more than {MAX_DOCUMENT_BYTES:,} bytes of text; "
                             "expected one document per row")
        if text and not text.isspace():
            return True
        self.num_blank += 1
        if math.log10(self.num_blank).is_integer():
            logger.info("%s: skipped %d empty texts so far (row %d)", self.where, self.num_blank, index)
        return False


def _hold_out(train: Dataset, percentage: float, seed: int) -> dict[str, Dataset]:
    """`percentage` percent of the documents (rounded up, at least one) as "validation", drawn with `seed`."""
    num_validation = math.ceil(len(train) * percentage / 100)
    if num_validation >= len(train):
        raise InputError(
            f"data: {len(train)} documents cannot give {percentage}% for validation and keep some for training; "
            "expected more text, validation files, or validation_split_percentage=0"
        )
    parts = train.train_test_split(test_size=num_validation, shuffle=True, seed=seed)
    return {"train": parts["train"], "validation": parts["test"]}


# --------------------------------------------------------------------------------------------
# Sentences
# --------------------------------------------------------------------------------------------

# Never end a sentence: titles and Latin abbreviations ("Mr. Smith", "e.g. the").
_TITLE_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt messrs mme mlle gen col lt sgt capt cmdr adm gov sen rep rev hon pres "
    "e.g i.e cf viz vs approx".split()
)
# End no sentence when a number follows ("No. 5", "Fig. 2", "Jan. 3").
_NUMBER_ABBREVIATIONS = frozenset(
    "no nos vol vols p pp fig figs ch sec eq art jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Candidate boundary: terminal punctuation (plus closing quotes/brackets), white space, then what
# can start a sentence (opening quotes/brackets, a capital or a digit). A blank line always ends one.
_BOUNDARY = re.compile(
    r"(?P<end>[.!?\u2026]+[\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]*(?P<next>[A-Z0-9]))|\n[ \t]*\n\s*"
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_DOTTED_ABBREVIATION = re.compile(r"(?:[A-Za-z]{1,3}\.)+[A-Za-z]{1,3}")  # U.S, e.g, a.m, Ph.D


def _ends_sentence(text: str, match: re.Match) -> bool:
    end = match.group("end")
    if end is None or _BLANK_LINE.search(match.group()):
        return True
    if end.rstrip("\"'\u201d\u2019)]") != ".":  # "?", "!", "..." end sentences
        return True
    words_before = text[: match.start()].split()
    word = words_before[-1].lstrip("\"'\u201c\u2018([").lower() if words_before else ""
    if word in _TITLE_ABBREVIATIONS or _DOTTED_ABBREVIATION.fullmatch(word):
        return False
    if word in _NUMBER_ABBREVIATIONS and match.group("next").isdigit():
        return False
    return not (len(word) == 1 and word.isalpha())  # an initial: "J. R. R. Tolkien"


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each stripped of surrounding white space (inner white space kept).

    A rule-based splitter, good enough for BERT's next-sentence pairs: a sentence ends at . ! ? or
    ... followed by white space and a capital letter or digit, except after titles ("Mr.", "Dr."),
    Latin abbreviations ("e.g.", "i.e."), dotted abbreviations ("U.S."), initials ("J. Smith") and
    reference abbreviations before a number ("No. 5", "Fig. 2"); decimals ("3.14") have no space
    after the point. A blank line always ends a sentence. No characters other than white space
    between sentences are lost.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if _ends_sentence(text, match):
            stop = match.end("end") if match.group("end") is not None else match.start()
            if sentence := text[start:stop].strip():
                sentences.append(sentence)
            start = match.end()
    if rest := text[start:].strip():
        sentences.append(rest)
    return sentences


# --------------------------------------------------------------------------------------------
# Tokenization (datasets.map, cached)
# --------------------------------------------------------------------------------------------


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides a fast tokenizer's output (its tokenizer.json)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    state = backend.to_str() if backend is not None else tokenizer  # slow tokenizers: datasets' pickling hash
    return Hasher.hash([type(tokenizer).__name__, state])


def _tokenize_batch(batch: dict, tokenizer: Any, text_column: str, add_special_tokens: bool) -> dict:
    encoded = tokenizer(batch[text_column], add_special_tokens=add_special_tokens, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)  # verbose: documents exceed model_max_length
    return {"input_ids": encoded["input_ids"]}


def _sentences_batch(batch: dict, tokenizer: Any, text_column: str) -> dict:
    documents = [split_sentences(text) for text in batch[text_column]]
    flat = [sentence for document in documents for sentence in document]
    ids = tokenizer(flat, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False,
                    verbose=False)["input_ids"] if flat else []
    out, start = [], 0
    for document in documents:
        out.append([sentence for sentence in ids[start : start + len(document)] if sentence])
        start += len(document)
    return {"sentences": out}


_INPUT_IDS = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})
_SENTENCES = datasets.Features({"sentences": datasets.List(datasets.List(datasets.Value("int32")))})


def _cached_map(dataset, function, features, tokenizer, text_column: str, num_proc: int | None,
                cache_dir: str | None, step: str, **fn_kwargs):
    """`dataset.map(function, batched=True)` over every split, cached by (dataset, step, tokenizer, arguments).

    datasets names a map's cache file after a fingerprint hashed from the function and its arguments;
    hashing a tokenizer object is not reliably stable, so the fingerprint is computed here from the
    tokenizer.json instead. In-memory datasets get no cache from datasets at all: they get a
    cache_file_name under `cache_dir` (default: datasets' cache) keyed by the same fingerprint.
    """
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        return type(dataset)({
            name: _cached_map(part, function, features, tokenizer, text_column, num_proc, cache_dir, step, **fn_kwargs)
            for name, part in dataset.items()
        })
    fn_kwargs = {"tokenizer": tokenizer, "text_column": text_column, **fn_kwargs}
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise InputError(f"{step}: the dataset has no column {text_column!r} (columns: {columns})")
    if isinstance(dataset, IterableDataset):  # streamed: tokenized lazily, nothing to cache
        return dataset.map(function, batched=True, fn_kwargs=fn_kwargs, remove_columns=columns or [text_column],
                           features=features)
    arguments = {k: v for k, v in fn_kwargs.items() if k != "tokenizer"}
    # Dataset._fingerprint: datasets' own content/history hash of the dataset (no public accessor).
    fingerprint = Hasher.hash([_CACHE_VERSION, step, dataset._fingerprint, tokenizer_fingerprint(tokenizer), arguments])
    cache_file_name = None
    if not dataset.cache_files:
        directory = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "hfpipe"
        directory.mkdir(parents=True, exist_ok=True)
        cache_file_name = str(directory / f"{step}-{fingerprint}.arrow")
    return dataset.map(function, batched=True, fn_kwargs=fn_kwargs, remove_columns=columns, features=features,
                       num_proc=num_proc, new_fingerprint=fingerprint, cache_file_name=cache_file_name, desc=step)


def tokenize_dataset(
    dataset: Dataset | DatasetDict | IterableDataset | IterableDatasetDict,
    tokenizer: Any,
    text_column: str = "text",
    num_proc: int | None = None,
    add_special_tokens: bool = False,
    cache_dir: str | None = None,
):
    """Each document -> ``input_ids`` (list[int], int32; no special tokens unless asked), nothing else.

    Batched `datasets.map`, cached: a second call with the same data and tokenizer loads the cached
    result instead of tokenizing again (see `_cached_map`). Streaming datasets are tokenized lazily.
    """
    return _cached_map(dataset, _tokenize_batch, _INPUT_IDS, tokenizer, text_column, num_proc, cache_dir,
                       "tokenize", add_special_tokens=add_special_tokens)


def sentences_dataset(
    dataset: Dataset | DatasetDict | IterableDataset | IterableDatasetDict,
    tokenizer: Any,
    text_column: str = "text",
    num_proc: int | None = None,
    cache_dir: str | None = None,
):
    """Each document -> ``sentences``: its sentences (`split_sentences`) tokenized without special
    tokens, list[list[int]] (empty sentences dropped), what BERT's NSP pair builder consumes. Cached as
    `tokenize_dataset`."""
    return _cached_map(dataset, _sentences_batch, _SENTENCES, tokenizer, text_column, num_proc, cache_dir,
                       "sentences")


# --------------------------------------------------------------------------------------------
# Bounded samples and mixtures (what a 300 GB stream needs)
# --------------------------------------------------------------------------------------------


@dataclass
class TextSample:
    """What `sample_texts` read: filled in as the texts are consumed."""

    texts: int = 0
    bytes: int = 0


def sample_texts(
    dataset: Dataset | IterableDataset, text_column: str = "text", max_texts: int = 1_000_000,
    batch_size: int = 1000, sample: TextSample | None = None,
) -> Iterator[str]:
    """The first `max_texts` texts of `dataset`, pulled `batch_size` rows at a time.

    Never more than one batch is in memory and never more than `max_texts` rows are read, so a
    stream of any size (or a map-style corpus larger than memory) gives a bounded tokenizer
    sample. `sample` counts texts and UTF-8 bytes as they are yielded.
    """
    if max_texts < 1:
        raise InputError(f"tokenizer.train_samples: expected a positive number of texts, got {max_texts}")
    sample = sample if sample is not None else TextSample()
    bounded = dataset.take(max_texts) if isinstance(dataset, IterableDataset) else dataset.select(
        range(min(max_texts, len(dataset))))
    for batch in bounded.select_columns([text_column]).iter(batch_size=batch_size):
        for text in batch[text_column]:
            sample.texts += 1
            sample.bytes += len(text.encode("utf-8"))
            yield text


class SourceCounter:
    """`IterableDataset.map` function that counts the documents one source contributes as the
    mixed stream is read (interleave_datasets keeps no record of where a row came from)."""

    def __init__(self, counts: list[int], index: int) -> None:
        self.counts, self.index = counts, index

    def __deepcopy__(self, memo: dict) -> SourceCounter:
        return self  # datasets copies map functions when it iterates; the counts must stay shared

    def __call__(self, example: dict) -> dict:
        # Per example, not batched: a batched map would read (and count) up to 1000 rows ahead.
        self.counts[self.index] += 1
        return example


@dataclass
class Mixture:
    """Sources interleaved with `weights`; `counts[i]` documents of source i read so far."""

    names: list[str]
    weights: list[float]
    counts: list[int]

    def realised(self) -> dict[str, float]:
        """Fraction of the documents read so far that came from each source (name -> fraction)."""
        total = sum(self.counts)
        return {name: (count / total if total else 0.0) for name, count in zip(self.names, self.counts)}

    def state(self) -> dict[str, list[int]]:
        return {"counts": list(self.counts)}

    def load_state(self, state: dict) -> None:
        self.counts[:] = [int(c) for c in state["counts"]]  # in place: the SourceCounters hold this list

    def report(self) -> str:
        parts = [f"{name}: {count} documents ({100 * fraction:.1f}%, weight {100 * weight:.1f}%)"
                 for (name, fraction), count, weight in zip(self.realised().items(), self.counts, self.weights)]
        return "data mixture as read: " + "; ".join(parts)


def interleave_sources(
    sources: Sequence[Dataset | IterableDataset], weights: Sequence[float], names: Sequence[str], seed: int,
) -> tuple[Dataset | IterableDataset, Mixture]:
    """One corpus drawing each document from source i with probability weights[i] / sum(weights).

    `datasets.interleave_datasets(probabilities=..., seed=..., stopping_strategy="first_exhausted")`:
    the mixture ends when its first source runs out, so no source is repeated within a pass.
    For streams the per-source document counts are kept as the stream is read (`Mixture`).
    """
    if len(sources) != len(weights) or not sources:
        raise InputError(f"data.sources: expected one weight per source, got {len(sources)} sources, {len(weights)} weights")
    total = float(sum(weights))
    probabilities = [w / total for w in weights]
    mixture = Mixture(list(names), probabilities, [0] * len(sources))
    streamed = [isinstance(s, IterableDataset) for s in sources]
    if any(streamed) and not all(streamed):
        raise InputError("data.sources: all sources must be streamed or none (data.streaming applies to every source)")
    if all(streamed):
        sources = [s.map(SourceCounter(mixture.counts, i)) for i, s in enumerate(sources)]
        mixed = datasets.interleave_datasets(list(sources), probabilities=probabilities, seed=seed,
                                             stopping_strategy="first_exhausted")
        return mixed, mixture
    tagged = [s.add_column("source", [i] * len(s)) for i, s in enumerate(sources)]
    mixed = datasets.interleave_datasets(tagged, probabilities=probabilities, seed=seed,
                                         stopping_strategy="first_exhausted")
    counts = pc.value_counts(mixed.with_format("arrow")["source"]).to_pylist()
    for entry in counts:
        mixture.counts[entry["values"]] = entry["counts"]
    return mixed.remove_columns("source"), mixture


def write_c4_like_shards(folder: str | Path, num_shards: int, total_bytes: int, seed: int = 0) -> list[Path]:
    """JSONL shards shaped like C4 (``text``, ``timestamp``, ``url`` per line) of about `total_bytes`
    in all, cut from the embedded corpus (documents repeat once it is used up). For tests and bench/.

    Returns the shard paths (``c4-train.0000i-of-0000n.json``... as .jsonl), written in turn.
    """
    import json
    import random

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    documents = [d for d in embedded_corpus() if len(d) > 40]
    rng = random.Random(seed)
    paths, written, index = [], 0, 0
    per_shard = max(total_bytes // num_shards, 1)
    for shard in range(num_shards):
        path = folder / f"c4-train.{shard:05d}-of-{num_shards:05d}.jsonl"
        size = 0
        with open(path, "w", encoding="utf-8") as file:
            while size < per_shard:
                text = documents[index % len(documents)]
                index += 1
                record = {"text": text, "timestamp": f"2019-04-{rng.randint(10, 28)}T{rng.randint(0, 23):02d}:"
                          f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
                          "url": f"https://example.org/{shard}/{index}"}
                line = json.dumps(record) + "\n"
                file.write(line)
                size += len(line.encode("utf-8"))
        written += size
        paths.append(path)
    return paths
