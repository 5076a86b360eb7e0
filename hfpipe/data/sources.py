"""The documents a pretraining recipe names: one corpus (Hub, files, embedded) or a weighted
mixture of sources, with the validation documents held out and the slices the recipe asks for.

    corpus, mixture = load_corpus_and_mixture(recipe)   # {"train", "validation"?}, Mixture or None
"""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path

from hfpipe.errors import InputError

logger = logging.getLogger("hfpipe.data.sources")


def is_stream(dataset) -> bool:
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def load_corpus(recipe):
    """{"train", "validation"?} documents as the recipe's data section says (see `load_corpus_and_mixture`)."""
    return load_corpus_and_mixture(recipe)[0]


def load_corpus_and_mixture(recipe, split: bool = False):
    """{"train", "validation"?} documents, and the data.sources Mixture (None for one source).

    A streamed corpus stays a stream: ``max_train_samples`` is a ``take``; its validation set is
    the source's own (files, a Hub validation split) or the first ``data.validation_samples``
    documents, materialised and skipped by training.

    ``split``: a streamed training corpus comes back as this process's part (data.streaming.
    split_for_this_process). The documents held out and ``max_train_samples`` are then shared evenly
    between the processes' parts, each from the head of its part; every process holds the whole
    validation set. (A skip before split_dataset_by_node is divided between the processes the same
    way, so held out from the whole stream's head, it would be trained on and other documents skipped.)
    """
    from datasets import Dataset

    from hfpipe.data.corpus import load_text_dataset

    data = recipe.data
    held_out = data.validation_samples is not None
    options = dict(dataset_config=data.dataset_config, text_column=data.text_column, streaming=data.streaming,
                   seed=recipe.train.seed)
    mixture = None
    if data.sources:
        corpus, mixture = _mixed_corpus(recipe)
    else:
        corpus = load_text_dataset(
            source=data.dataset, files=_expand(data.train_files) or None,
            validation_files=_expand(data.validation_files) or None,
            validation_split_percentage=0 if held_out else data.validation_split_percentage, **options)
    corpus = dict(corpus)
    train = corpus["train"]
    if is_stream(train) and recipe.train.max_steps <= 0:
        raise InputError("train.max_steps: a streamed corpus has no length; expected a positive number of steps")
    whole, rank, count = train, 0, 1
    if split and is_stream(train):
        from hfpipe.data.streaming import process_rank_and_count, split_for_this_process

        rank, count = process_rank_and_count()
        train = split_for_this_process(whole)
        if count > 1:
            logger.info("process %d of %d reads %d of the %d shards of the stream", rank, count, train.n_shards,
                        whole.n_shards)
    num_held_out = data.validation_samples
    if is_stream(train) and not held_out and "validation" not in corpus and data.validation_split_percentage > 0:
        if not data.max_train_samples:
            raise InputError(
                f"data.validation_split_percentage: a stream of unknown length cannot be split by percentage "
                f"(got {data.validation_split_percentage}); expected data.validation_samples (documents held out from "
                "the head of the stream), data.validation_files, data.max_train_samples, or 0"
            )
        # A stream cut by max_train_samples has a known length: hold out that percentage of it.
        num_held_out = math.ceil(data.max_train_samples * data.validation_split_percentage / 100)
        held_out = True
    if held_out and "validation" not in corpus:
        if is_stream(train):
            from datasets.distributed import split_dataset_by_node

            shares = _even_shares(num_held_out, count)
            parts = [whole] if count == 1 else [split_dataset_by_node(whole, rank=r, world_size=count)
                                                for r in range(count)]
            rows = [row for part, share in zip(parts, shares) for row in part.take(share)]
            train = train.skip(shares[rank])
            validation = Dataset.from_dict({data.text_column: [row[data.text_column] for row in rows]})
        else:
            if num_held_out >= len(train):
                raise InputError(f"data.validation_samples: {num_held_out} documents leave none of the "
                                 f"{len(train)} for training; expected fewer")
            validation = train.select(range(num_held_out))
            train = train.select(range(num_held_out, len(train)))
        if len(validation) == 0:
            raise InputError("data: the training stream is empty; expected documents")
        logger.info("validation: the first %d documents of the training data, not trained on", len(validation))
        corpus["validation"] = validation
    if data.max_train_samples:
        train = train.take(_even_shares(data.max_train_samples, count)[rank]) if is_stream(train) else train.select(
            range(min(data.max_train_samples, len(train))))
    corpus["train"] = train
    validation = corpus.get("validation")
    if data.max_eval_samples and validation is not None:
        corpus["validation"] = validation.take(data.max_eval_samples) if is_stream(validation) else \
            validation.select(range(min(data.max_eval_samples, len(validation))))
    return corpus, mixture


def _even_shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` numbers that differ by at most one, the larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def _expand(patterns) -> list[str]:
    """Recipe file lists allow globs ("c4/*.json", each expands to its matches, sorted) and folders (the
    files under it whose format hfpipe reads, sorted; hidden ones skipped)."""
    from hfpipe.data.corpus import BUILDER_OF_EXTENSION, format_suffix

    files = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            files += sorted(glob.glob(pattern))
        elif Path(pattern).is_dir():
            found = sorted(str(f) for f in Path(pattern).rglob("*") if f.is_file()
                           and format_suffix(f) in BUILDER_OF_EXTENSION
                           and not any(part.startswith(".") for part in f.relative_to(pattern).parts))
            if not found:
                raise InputError(f"data folder {pattern} holds no file hfpipe reads; expected "
                                 f"{', '.join(BUILDER_OF_EXTENSION)} files")
            files += found
        else:
            files.append(pattern)
    return files


def _mixed_corpus(recipe):
    """data.sources: each source's documents (renamed to data.text_column), interleaved by weight."""
    from datasets import Value

    from hfpipe.data.corpus import load_text_dataset
    from hfpipe.data.sampling import interleave_sources

    data = recipe.data
    parts, names = [], []
    for i, source in enumerate(data.sources):
        column = source.text_column or data.text_column
        # neither a dataset nor files: load_text_dataset's embedded corpus (source.embedded, by the rules)
        dataset, files = (None, None) if source.embedded else (source.dataset, _expand(source.files) or None)
        part = load_text_dataset(source=dataset, files=files, dataset_config=source.dataset_config,
                                 text_column=column, streaming=data.streaming, validation_split_percentage=0)["train"]
        if column != data.text_column:
            part = part.rename_column(column, data.text_column)
        if not is_stream(part):  # one text type for all: json's reader gives large_string, the others string
            part = part.cast_column(data.text_column, Value("large_string"))
        parts.append(part)
        names.append(source.name or ("embedded" if source.embedded else source.dataset or Path(source.files[0]).stem)
                     or f"source{i}")
    mixed, mixture = interleave_sources(parts, [s.weight for s in data.sources], names, recipe.train.seed)
    logger.info("data: %s interleaved with probabilities %s (seed %d)", ", ".join(names),
                ", ".join(f"{w:.3f}" for w in mixture.weights), recipe.train.seed)
    corpus = {"train": mixed}
    if data.validation_files:
        corpus["validation"] = load_text_dataset(files=_expand(data.validation_files), text_column=data.text_column,
                                                 streaming=data.streaming, validation_split_percentage=0)["train"]
    return corpus, mixture
