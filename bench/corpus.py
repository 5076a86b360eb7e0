"""Corpus pipeline throughput (MB/s of UTF-8 text): load, tokenize, pack, split into sentences.

    .venv/bin/python bench/corpus.py [--data-dir ../shared/data/text] [--vocab-size 8000]
                                     [--block-size 512] [--repeats 3] [--num-proc N] [--json OUT.json]

Text: every .txt file of ``--data-dir`` (default ../shared/data/text: War and Peace, tiny
Shakespeare, WikiText-2 valid, a Wikipedia extract; 5.6 MB), or the embedded corpus (1.6 MB of
standard-library docstrings) when the folder is absent. For each family it trains a tokenizer
(``--vocab-size``; on every k-th document, ``--train-mb`` MB in all) and measures, best of ``--repeats``:

- ``tokenizer()``: one batched call on all documents (the Rust tokenizer alone, the ceiling);
- ``tokenize_dataset``: the pipeline's cached ``datasets.map``, on a cold cache, and the reload
  of the cached result (second call);
- ``pack``: ``hfpipe.data.packing.pack_dataset`` (blocks of ``--block-size``, EOS between
  documents where the family has one), cache disabled;
- ``sentences``: ``sentences_dataset`` (sentence split + tokenize, the NSP input), encoder only.

MB/s = MB of document text (UTF-8) / wall seconds; CPU-seconds are printed too, since wall time
on a shared machine says less.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402

from hfpipe.data.corpus import load_text_dataset  # noqa: E402
from hfpipe.data.tokenized import sentences_dataset, tokenize_dataset  # noqa: E402
from hfpipe.tokenization import train_tokenizer  # noqa: E402

# The bench folder's shared timer (best wall and CPU seconds over repeats); bench/ is on sys.path
# when this file runs as a script.
from squad_preprocess import best_time  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"


def load_documents(data_dir: Path, cache_dir: str) -> tuple[datasets.Dataset, str]:
    files = sorted(data_dir.glob("*.txt")) if data_dir.is_dir() else []
    if files:
        corpus = load_text_dataset(files=files, validation_split_percentage=0, cache_dir=cache_dir)
        return corpus["train"], f"{len(files)} files in {data_dir}"
    return load_text_dataset(validation_split_percentage=0)["train"], "the embedded corpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--train-mb", type=float, default=1.0, help="MB of documents to train each tokenizer on")
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--families", nargs="+", default=["encoder", "decoder", "seq2seq"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    try:
        from hfpipe.data.packing import pack_dataset
    except ImportError:  # packing is another module's; measure tokenisation alone without it
        pack_dataset = None
        print("hfpipe.data.packing.pack_dataset is not available: packing is not measured")

    scratch = tempfile.mkdtemp(prefix="hfpipe-bench-corpus-")
    load_wall, load_cpu, (documents, source) = best_time(lambda: load_documents(args.data_dir, scratch), 1)
    texts = list(documents["text"])
    # In memory, so that tokenize_dataset caches under the cache_dir given (a fresh one = a cold run).
    documents = datasets.Dataset.from_dict({"text": texts})
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    train_texts = texts[:: max(1, round(megabytes / args.train_mb))]  # every k-th document: all sources
    print(f"text: {source}: {len(texts):,} documents, {megabytes:.2f} MB; load + checks {load_wall:.2f} s "
          f"({megabytes / load_wall:.1f} MB/s, cold cache)")

    rows = []
    for family in args.families:
        train_wall, _, tokenizer = best_time(lambda: train_tokenizer(train_texts, family, args.vocab_size), 1)
        raw_wall, raw_cpu, encoded = best_time(
            lambda: tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False), args.repeats
        )
        num_tokens = sum(map(len, encoded["input_ids"]))
        counter = iter(range(1_000_000))  # a fresh cache folder per repeat: every run is a cache miss
        cold_wall, cold_cpu, tokenized = best_time(
            lambda: tokenize_dataset(documents, tokenizer, num_proc=args.num_proc,
                                     cache_dir=f"{scratch}/{family}-{next(counter)}"),
            args.repeats,
        )
        warm_wall, _, _ = best_time(
            lambda: tokenize_dataset(documents, tokenizer, cache_dir=f"{scratch}/{family}-0"), 1
        )
        row = {
            "family": family, "vocab": len(tokenizer), "train_s": train_wall, "tokens": num_tokens,
            "tokenizer_mb_s": megabytes / raw_wall, "tokenizer_cpu_s": raw_cpu,
            "tokenize_dataset_mb_s": megabytes / cold_wall, "tokenize_dataset_cpu_s": cold_cpu,
            "cached_reload_s": warm_wall,
        }
        if pack_dataset is not None:
            eos = tokenizer.eos_token_id if family == "decoder" else tokenizer.sep_token_id
            pack_wall, pack_cpu, (packed, stats) = best_time(
                lambda: pack_dataset(tokenized, args.block_size, eos_token_id=eos, load_from_cache_file=False),
                args.repeats,
            )
            row.update(pack_mb_s=megabytes / pack_wall, pack_mtok_s=stats.num_tokens / pack_wall / 1e6,
                       pack_cpu_s=pack_cpu, blocks=stats.num_blocks, dropped_tokens=stats.num_dropped_tokens)
        if family == "encoder":
            counter = iter(range(1_000_000))
            sent_wall, sent_cpu, _ = best_time(
                lambda: sentences_dataset(documents, tokenizer,
                                          cache_dir=f"{scratch}/sentences-{next(counter)}"),
                args.repeats,
            )
            row.update(sentences_mb_s=megabytes / sent_wall, sentences_cpu_s=sent_cpu)
        rows.append(row)

    def cell(row, key, fmt):
        return format(row[key], fmt) if key in row else "-"

    header = ["family", "vocab", "train s", "tokens", "tokenizer() MB/s", "tokenize_dataset MB/s (CPU s)",
              "cached reload s", f"pack {args.block_size} MB/s (Mtok/s)", "blocks", "sentences MB/s"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join([
            row["family"], f"{row['vocab']:,}", f"{row['train_s']:.1f}", f"{row['tokens']:,}",
            f"{row['tokenizer_mb_s']:.2f}",
            f"{row['tokenize_dataset_mb_s']:.2f} ({row['tokenize_dataset_cpu_s']:.2f})",
            f"{row['cached_reload_s']:.3f}",
            f"{cell(row, 'pack_mb_s', '.1f')} ({cell(row, 'pack_mtok_s', '.2f')})",
            cell(row, "blocks", ","), cell(row, "sentences_mb_s", ".2f"),
        ]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "megabytes": megabytes, "documents": len(texts),
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
