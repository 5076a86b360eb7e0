"""The embedded corpus: the docstrings of the running Python's standard library, real English prose
on every machine with no network and no files; and C4-shaped JSONL shards cut from it (tests, bench/)."""

from __future__ import annotations

import ast
import functools
import inspect
import logging
import os
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


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
