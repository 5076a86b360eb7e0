"""Corpora tokenized with ``datasets.map``, cached by (data, step, tokenizer.json, arguments):
``input_ids`` per document (`tokenize_dataset`) or its tokenized sentences (`sentences_dataset`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.fingerprint import Hasher

from hfpipe.data.sentences import split_sentences
from hfpipe.errors import InputError

# Bump when the output of tokenize_dataset / sentences_dataset changes for the same inputs.
_CACHE_VERSION = "1"


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
