"""What a 300 GB stream needs: bounded samples of texts (`sample_texts`) and weighted mixtures of
sources with per-source counts (`interleave_sources`, `Mixture`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import datasets
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from hfpipe.errors import InputError


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
