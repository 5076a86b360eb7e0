"""Time and peak memory of full vs windowed attention as sequences grow (CPU).

    python bench/long_attention.py                       # 1k .. 16k tokens, results under bench/results/
    python bench/long_attention.py --lengths 1024 2048 --out /tmp/bench

One forward + backward of a tiny encoder (2 layers, hidden 128, 4 heads, MLM head, batch 1,
attention dropout 0 unless --attention-dropout) per point, each point in its own process so that its peak memory is its own:

    full          the default model: SDPA with no mask (an unpadded batch), i.e. torch's fused
                  CPU kernel, which never materialises the (T, T) scores
    full-masked   full attention with an attention mask (any padded or document-masked batch):
                  SDPA gets a (T, T) bias and the scores are materialised; up to --masked-max
    window        attention_window=256 on each side + 2 global tokens (Longformer's [CLS]):
                  the blocked sliding-chunk path, (T/256, 256, 3*256 + 2) scores per head

Peak memory is the process's resident-set high-water mark (Linux VmHWM) during the step minus its
resident set just before it: everything torch allocates (weights and inputs exist already), as the
OS sees it. Time is a second step, after the first has warmed up the allocator.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MODES = ("full", "full-masked", "window")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(mode: str, length: int, window: int, attention_dropout: float) -> dict:
    """One point, in this process: {"peak_mib", "seconds"}."""
    import torch
    from transformers import AutoModelForMaskedLM

    import hfpipe  # noqa: F401
    from hfpipe.models.configuration import config_for

    torch.manual_seed(0)
    pattern = dict(attention_window=window, global_tokens=2) if mode == "window" else {}
    config = config_for("encoder", "tiny", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, vocab_size=1000, max_position_embeddings=length,
                        attention_probs_dropout_prob=attention_dropout, **pattern)
    model = AutoModelForMaskedLM.from_config(config).train()
    model.model.encoder.pattern_implementation = "blocked"  # from 1k on, not only past 4 windows ("auto")
    ids = torch.randint(5, 1000, (1, length))
    labels = ids.masked_fill(torch.rand(ids.shape) > 0.15, -100)
    inputs = dict(input_ids=ids, labels=labels)
    if mode == "full-masked":
        inputs["attention_mask"] = torch.ones_like(ids)  # kept in training: the masked SDPA path

    def step():
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    before = _status_kib("VmRSS")
    step()
    peak = _status_kib("VmHWM") - before
    start = time.perf_counter()
    step()
    return {"peak_mib": peak / 1024, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--masked-max", type=int, default=4096,
                        help="longest full-masked point (its (T, T) scores take 4 H T^2 bytes per layer)")
    parser.add_argument("--attention-dropout", type=float, default=0.0,
                        help="0 (ModernBERT) lets unmasked SDPA use its fused kernel: the strongest full baseline")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.window, args.attention_dropout)))
        return

    rows = {mode: {} for mode in MODES}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    for length in args.lengths:
        for mode in MODES:
            if mode == "full-masked" and length > args.masked_max:
                continue
            done = subprocess.run([sys.executable, __file__, "--window", str(args.window), "--attention-dropout",
                                   str(args.attention_dropout), "--one", mode, str(length)],
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                raise SystemExit(f"{mode} at {length}: {done.stderr[-2000:]}")
            rows[mode][length] = json.loads(done.stdout.strip().splitlines()[-1])
            print(mode, length, rows[mode][length], flush=True)

    def cell(mode, length, field, fmt):
        point = rows[mode].get(length)
        return "-" if point is None else format(point[field], fmt)

    def growth(mode, length, field):
        point, previous = rows[mode].get(length), rows[mode].get(length // 2)
        return "-" if point is None or previous is None else f"{point[field] / previous[field]:.2f}x"

    header = ["tokens"] + [f"{mode} {what}" for mode in MODES for what in ("MiB", "s", "MiB/doubling")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for length in args.lengths:
        cells = [str(length)]
        for mode in MODES:
            cells += [cell(mode, length, "peak_mib", ".0f"), cell(mode, length, "seconds", ".2f"),
                      growth(mode, length, "peak_mib")]
        lines.append("| " + " | ".join(cells) + " |")
    threads = env["OMP_NUM_THREADS"]
    title = (f"Tiny encoder (2 layers, hidden 128, 4 heads), batch 1, one forward+backward on CPU "
             f"({platform.processor() or platform.machine()}, {threads} thread(s)); window {args.window} "
             f"each side + 2 global tokens (blocked path); attention dropout {args.attention_dropout}. "
             f"Peak = resident-set high-water mark over the step minus the resident set before it.")
    text = title + "\n\n" + "\n".join(lines)
    print(text)
    sys.path.insert(0, str(Path(__file__).parent))
    from results import write_results

    write_results(args.out, f"long-attention-cpu-{datetime.date.today()}", text,
                  {"lengths": args.lengths, "window": args.window, "threads": threads, "results": rows})


if __name__ == "__main__":
    main()
