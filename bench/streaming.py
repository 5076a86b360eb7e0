"""Memory and throughput of streamed pretraining data (issue 13: "streaming corpora at scale").

    .venv/bin/python bench/streaming.py                       # 50 MB and 500 MB of C4-like shards under /tmp
    .venv/bin/python bench/streaming.py --sizes-mb 5 50 --steps 10

1. Peak RSS: the same streamed pretraining run (t5-span-corruption.yaml as written but tiny: smoke
   sizes, --max-steps) over C4-look-alike JSONL shards (``text``/``timestamp``/``url``) of each size,
   each run in its own subprocess; its ru_maxrss (resource.getrusage(RUSAGE_CHILDREN)) is the peak.
   Memory must stay flat as the corpus grows: the stream is never materialised.
2. Throughput of tokenization + packing, in MB of JSONL read per second, on the streamed path
   (IterableDataset.map) and the map-style path (Dataset.map, cache written to a temporary folder),
   over the same shards, in the same run.

Shards are generated under --work (default /tmp/hfpipe-bench-streaming), never in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pretrain" / "t5-span-corruption.yaml"


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "CUDA_VISIBLE_DEVICES": ""}


def make_shards(folder: Path, size_mb: int) -> list[Path]:
    from hfpipe.data.embedded_corpus import write_c4_like_shards

    folder = folder / f"c4-{size_mb}mb"
    done = folder / "done"
    if not done.exists():
        write_c4_like_shards(folder, num_shards=8, total_bytes=size_mb * 1_000_000)
        done.write_text("ok\n")
    return sorted(folder.glob("*.jsonl"))


def peak_rss_of_run(shards: list[Path], out: Path, steps: int, tokenizer: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one streamed pretraining run in a fresh process."""
    child = (
        "import resource, runpy, sys\nsys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_module('hfpipe', run_name='__main__')\n"
        "finally:\n    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
    )
    args = [sys.executable, "-c", child, "hfpipe", "pretrain", str(RECIPE), "--smoke", "--max-steps", str(steps),
            "--output-dir", str(out), "--set", "train.overwrite=true", "--set", "train.report_to=[]",
            "--set", "train.mixed_precision=no", "--set", "train.eval_steps=100000",
            "--set", "train.save_steps=100000", "--set", f"tokenizer.name_or_path={tokenizer}",
            # the whole corpus, as written: no max_train_samples slice, so the stream is the shards
            "--set", "data.max_train_samples=null", "--set", "data.validation_samples=64",
            "--set", "data.dataset=null", "--set", f"data.train_files={json.dumps([str(s) for s in shards])}"]
    started = time.perf_counter()
    result = subprocess.run(args, env=_env(), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"run over {shards[0].parent} failed:\n{result.stderr[-3000:]}")
    line = [l for l in result.stderr.splitlines() if l.startswith("PEAK_RSS_KB")][-1]
    return int(line.split()[1]) / 1024, wall


def throughput(shards: list[Path], tokenizer_dir: Path, block: int = 568) -> dict[str, float]:
    """MB/s of tokenization + packing over `shards`, streamed and map-style."""
    from transformers import AutoTokenizer

    from hfpipe.data.corpus import load_text_dataset
    from hfpipe.data.tokenized import tokenize_dataset
    from hfpipe.data.packing import pack_dataset

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    megabytes = sum(s.stat().st_size for s in shards) / 1e6
    files = [str(s) for s in shards]
    started = time.perf_counter()
    stream = tokenize_dataset(load_text_dataset(files=files, streaming=True)["train"], tokenizer)
    packed, counter = pack_dataset(stream, block)
    blocks_streamed = sum(1 for _ in packed)
    streamed = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        corpus = load_text_dataset(files=files, validation_split_percentage=0, cache_dir=cache)["train"]
        packed_map, stats = pack_dataset(tokenize_dataset(corpus, tokenizer, cache_dir=cache), block)
        mapped = time.perf_counter() - started
    assert blocks_streamed == stats.num_blocks == counter.num_blocks, (blocks_streamed, stats, counter)
    return {"MB": megabytes, "blocks": blocks_streamed, "streamed_MB_s": megabytes / streamed,
            "map_style_MB_s": megabytes / mapped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--throughput-mb", type=int, default=50, help="corpus size of the MB/s comparison")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "hfpipe-bench-streaming")
    args = parser.parse_args()
    os.environ.update(_env())
    from hfpipe.data.corpus import load_text_dataset
    from hfpipe.data.sampling import sample_texts
    from hfpipe.tokenization import train_tokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    corpora = {size: make_shards(args.work, size) for size in sorted(set(args.sizes_mb + [args.throughput_mb]))}
    tokenizer_dir = args.work / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").exists():
        smallest = corpora[min(corpora)]
        texts = sample_texts(load_text_dataset(files=[str(s) for s in smallest], streaming=True)["train"],
                             max_texts=5000)
        train_tokenizer(texts, "seq2seq", 2000).save_pretrained(tokenizer_dir)

    rows = []
    for size in args.sizes_mb:
        rss, wall = peak_rss_of_run(corpora[size], args.work / f"run-{size}", args.steps, tokenizer_dir)
        rows.append((size, rss, wall))
    speed = throughput(corpora[args.throughput_mb], tokenizer_dir)

    print(f"\nStreamed pretraining (t5-span-corruption, smoke sizes, {args.steps} steps), peak RSS per run")
    print("| corpus (MB) | shards | peak RSS (MB) | wall (s) |")
    print("|---:|---:|---:|---:|")
    for size, rss, wall in rows:
        print(f"| {size} | 8 | {rss:.0f} | {wall:.1f} |")
    print(f"\nTokenization + packing (blocks of 568 tokens) over {speed['MB']:.1f} MB of JSONL, {speed['blocks']} blocks")
    print("| path | MB/s |")
    print("|---|---:|")
    print(f"| streamed (IterableDataset.map) | {speed['streamed_MB_s']:.2f} |")
    print(f"| map-style (Dataset.map, cache written) | {speed['map_style_MB_s']:.2f} |")


if __name__ == "__main__":
    main()
