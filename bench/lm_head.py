"""Peak memory and step time of the LM head's loss: dense logits vs the chunked linear +
cross-entropy (hfpipe/models/lm_loss.py), forward + backward of the head alone.

    python bench/lm_head.py                             # CPU, float32 (~5 min on 2 cores)
    python bench/lm_head.py --device cuda --dtype bf16  # GPU, bf16 autocast over float32 weights
    python bench/lm_head.py --rows clm --out bench/results

Rows:

    clm   GPT-2 small's head: vocabulary 50257, hidden 768, no bias, 8 x 1024 tokens, all labelled
    mlm   BERT-base's head: transform (dense, GELU, LayerNorm) + vocabulary 30522 with bias,
          8 x 512 tokens, 15% of them predicted (as BERT's masking)

Variants: ``dense`` makes the (tokens x vocab) logits and calls blocks.cross_entropy (what the
heads do in evaluation and with ``fused_lm_loss=False``); ``chunked`` is lm_loss's
linear_cross_entropy (what they do in training). For mlm both run on every position (what a
compiled model does) and ``chunked-sparse`` first gathers the predicted positions with one
``nonzero`` (eager training with ``sparse_prediction``): the FLOPs that its host sync buys.

Each variant runs in its own process, so its peak is its own: on CPU the growth of the maximum
resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over its value after setup (inputs
and weights allocated); on CUDA ``torch.cuda.max_memory_allocated`` over the memory allocated
after setup. Step time: the fastest of --steps after --warmup on CPU (a shared CPU only adds
time), the median on CUDA. Gradients are set to None between steps, as Trainer's zero_grad does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from results import write_results  # bench/results.py (the script's folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = {  # row -> (vocab, hidden, batch, length, bias + transform, share of positions labelled)
    "clm": (50257, 768, 8, 1024, False, 1.0),
    "mlm": (30522, 768, 8, 512, True, 0.15),
}
VARIANTS = {"clm": ("dense", "chunked"), "mlm": ("dense", "chunked", "chunked-sparse")}


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure(args) -> dict:
    import hfpipe
    from hfpipe.models.blocks import LMHead, cross_entropy, normalise
    from hfpipe.models.lm_loss import default_num_chunks, linear_cross_entropy

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vocab, hidden_size, batch, length, bert, labelled = ROWS[args.row]
    torch.manual_seed(0)
    config = hfpipe.config_for("encoder", "base", vocab_size=vocab, hidden_size=hidden_size)
    head = LMHead(config, transform=bert, bias=bert).to(device)
    hidden = torch.randn(batch, length, hidden_size, device=device, requires_grad=True)  # (B, T, C)
    labels = torch.randint(0, vocab, (batch, length), device=device)  # (B, T)
    if labelled < 1:
        labels = labels.masked_fill(torch.rand(labels.shape, device=device) >= labelled, -100)
    num_items = (labels != -100).sum()
    rows = int(num_items) if args.variant == "chunked-sparse" else batch * length  # through the vocabulary matmul
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def step():
        h, y = hidden, labels
        with autocast:
            if args.variant == "chunked-sparse":
                y = labels.reshape(-1)
                predicted = (y != -100).nonzero().squeeze(1)  # (K,)
                h, y = hidden.reshape(-1, hidden_size).index_select(0, predicted), y.index_select(0, predicted)
            h = head.transform(h)
            if args.variant == "dense":
                loss = cross_entropy(head.decoder(h), y, num_items)  # logits (B, T, V)
            else:
                total = linear_cross_entropy(h, head.decoder.weight, head.decoder.bias, y)
                loss = normalise(total, None, num_items)
        loss.backward()
        hidden.grad = None
        for p in head.parameters():
            p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss.item()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = peak_bytes(device)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        losses.append(step())
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times) if device.type == "cuda" else min(times)
    return {
        "row": args.row, "variant": args.variant, "tokens": batch * length, "labelled": int(num_items),
        "chunks": default_num_chunks(hidden_size, vocab, rows), "step_s": step_s,
        "peak_mb": (peak_bytes(device) - baseline) / 2**20, "loss": losses[-1],
    }


def run_all(args) -> list[dict]:
    results = []
    for row in args.rows:
        for variant in VARIANTS[row]:
            command = [sys.executable, __file__, "--row", row, "--variant", variant, "--device", args.device,
                       "--dtype", args.dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            line = [x for x in done.stdout.splitlines() if x.startswith("RESULT:")]
            result = json.loads(line[-1][7:]) if line else {"row": row, "variant": variant,
                                                              "error": done.stderr.strip()[-300:]}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def table(args, results: list[dict]) -> str:
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({args.threads} threads)"
    lines = [
        f"LM head loss, forward + backward, {args.dtype}, {device}; step: "
        f"{'median' if args.device.startswith('cuda') else 'fastest'} of {args.steps} after {args.warmup} warm-up; "
        "peak: growth over the set-up's memory.",
        "",
        "| row | variant | tokens (labelled) | chunks | step s | peak MB | step vs dense | peak vs dense | loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    dense = {r["row"]: r for r in results if r.get("variant") == "dense" and "error" not in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | {r['variant']} | failed: {r['error'].splitlines()[-1] if r['error'] else ''} |")
            continue
        d = dense.get(r["row"])
        chunks = "-" if r["variant"] == "dense" else str(r["chunks"])
        ratio_t = f"{r['step_s'] / d['step_s']:.2f}x" if d else "-"
        ratio_m = f"{r['peak_mb'] / d['peak_mb']:.3f}x" if d and d["peak_mb"] > 0 else "-"
        lines.append(f"| {r['row']} | {r['variant']} | {r['tokens']:,} ({r['labelled']:,}) | {chunks} | "
                     f"{r['step_s']:.2f} | {r['peak_mb']:,.0f} | {ratio_t} | {ratio_m} | {r['loss']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (float32 weights)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads of each run")
    parser.add_argument("--out", type=Path, help="write lm-head-<device>-<date>.{md,json} here")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process: one variant of one row
        print("RESULT:" + json.dumps(measure(args)))
        return
    results = run_all(args)
    text = table(args, results)
    print("\n" + text + "\n")
    if args.out:
        date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        meta = {"date": date, "device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                "machine": platform.processor() or platform.machine()}
        write_results(args.out, f"lm-head-{args.device.split(':')[0]}-{date[:10]}", text, {**meta, "results": results})


if __name__ == "__main__":
    main()
