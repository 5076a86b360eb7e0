"""Text corpora for pretraining: load and validate.

    from hfpipe.data.corpus import load_text_dataset
    corpus = load_text_dataset(files=["book.txt"])          # DatasetDict: train / validation ("text")

Next steps live beside it: tokenizing (cached) in `hfpipe.data.tokenized`, sentence splitting in
`hfpipe.data.sentences`, bounded samples and weighted mixtures in `hfpipe.data.sampling`, the
embedded corpus in `hfpipe.data.embedded_corpus`.

Where text comes from: a Hub dataset (``source``), local files (``files``: .txt, .jsonl/.json, .csv,
.tsv, .parquet, one kind per call, each as it is or compressed as .xz/.gz/.bz2), or, when neither is given, the embedded corpus (the docstrings of the
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

import bz2
import codecs
import functools
import gzip
import lzma
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.errors import InputError

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 10_000_000  # one document (line, paragraph or row) of UTF-8 text
BUILDER_OF_EXTENSION = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                        ".parquet": "parquet"}
# datasets' csv builder reads a .tsv (GLUE's files) with pandas' options below: no quoting, as GLUE's
# sentences hold unbalanced quotes ("the ``sentence`` column of SST-2's train.tsv" is pretraining text).
BUILDER_OPTIONS = {"csv": ("csv", {"encoding": "utf-8-sig"}),
                   "tsv": ("csv", {"encoding": "utf-8-sig", "sep": "\t", "quoting": 3})}
# Compressed files (IMDB's .jsonl.xz, a Wikipedia dump's .txt.xz) are read as they are: datasets
# decompresses by extension, and our own readers (UTF-8 check, .txt documents) through these.
OPENER_OF_COMPRESSION = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def _open_binary(path: str | Path):
    return OPENER_OF_COMPRESSION.get(Path(path).suffix.lower(), open)(path, "rb")


def format_suffix(path: str | Path) -> str:
    """The suffix that names a file's format: ".jsonl" for both "a.jsonl" and "a.jsonl.xz"."""
    path = Path(path)
    if path.suffix.lower() in OPENER_OF_COMPRESSION:
        path = path.with_suffix("")
    return path.suffix.lower()

# --------------------------------------------------------------------------------------------
# File checks and .txt documents
# --------------------------------------------------------------------------------------------


def check_utf8(path: str | Path, chunk_bytes: int = 1 << 20) -> None:
    """Raise InputError naming `path` and the byte offset of the first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before the current chunk (of the decompressed text)
    with _open_binary(path) as file:
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
        suffix = format_suffix(path)
        if suffix not in BUILDER_OF_EXTENSION:
            known = ", ".join(BUILDER_OF_EXTENSION) + " (each may be compressed: " + ", ".join(OPENER_OF_COMPRESSION) + ")"
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
    with _open_binary(path) as file:
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
        files: local files of one kind (.txt, .jsonl/.json, .csv, .tsv, .parquet; .xz/.gz/.bz2 too). None with no source: the
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
    builder, options = BUILDER_OPTIONS.get(builder, (builder, {}))
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
    from ..hub import load_hub_dataset

    loaded = load_hub_dataset(source, dataset_config, streaming=streaming, cache_dir=cache_dir,
                              local_hint="give local text files instead (--train-file, data.train_files)")
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
