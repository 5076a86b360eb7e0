"""Forward+backward step time: each hfpipe family vs the transformers reference model of the
same configuration and weights, in one run. Prints a table of ratios (>1 means hfpipe is faster).

    python bench/models.py                      # CPU, small models (ratios; absolute times vary)
    python bench/models.py --device cuda --dtype bfloat16 --size base --batch 32 --seq 512

Reference models: BertForPreTraining, GPT2LMHeadModel, T5ForConditionalGeneration, all with
SDPA attention; hfpipe models are converted from them (hfpipe.models.convert), so both compute
the same function. Timings are medians over --steps steps after --warmup.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import BertConfig, BertForPreTraining, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hfpipe.models.convert import convert_model  # noqa: E402

SIZES = {
    # (layers, hidden, heads, ffn); base is BERT-base, GPT-2 small (124M) and T5-base with
    # transformers' default vocabularies (30522, 50257, 32128)
    "tiny": (2, 64, 4, 256),
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
}


def reference(family: str, size: str, vocab_size: int | None = None):
    """The transformers reference model of ``family`` at ``size``; ``vocab_size`` None keeps
    transformers' default (the real model's) vocabulary."""
    layers, hidden, heads, ffn = SIZES[size]
    vocab = {} if vocab_size is None else {"vocab_size": vocab_size}
    if family == "encoder":
        config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=ffn, attn_implementation="sdpa", **vocab)
        return BertForPreTraining(config)
    if family == "decoder":
        if vocab_size is not None:  # GPT-2 puts <|endoftext|> on the last id
            vocab.update(bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn, attn_implementation="sdpa", **vocab)
        return GPT2LMHeadModel(config)
    config = T5Config(d_model=hidden, d_kv=hidden // heads, d_ff=ffn, num_layers=layers, num_heads=heads, decoder_start_token_id=0,
                      attn_implementation="sdpa", **vocab)
    return T5ForConditionalGeneration(config)


def batch(family: str, model, size: int, seq: int, device):
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (size, seq), device=device)
    mask = torch.ones_like(ids)
    if family == "encoder":
        labels = torch.full_like(ids, -100)
        labels[:, ::7] = ids[:, ::7]  # ~15% of positions predicted
        return dict(input_ids=ids, attention_mask=mask, labels=labels,
                    next_sentence_label=torch.zeros(size, dtype=torch.long, device=device))
    if family == "decoder":
        return dict(input_ids=ids, labels=ids)
    target = max(seq // 4, 2)
    return dict(input_ids=ids, attention_mask=mask, labels=torch.randint(5, vocab, (size, target), device=device))


def time_steps(model, inputs, steps: int, warmup: int, dtype, device) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--size", default="small", choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rows = []
    for family in ("encoder", "decoder", "seq2seq"):
        torch.manual_seed(0)
        ref = reference(family, args.size)
        ours = convert_model(ref)
        ref, ours = ref.to(device), ours.to(device)
        inputs = batch(family, ref, args.batch, args.seq, device)
        # interleave to share any machine noise fairly
        t_ref = time_steps(ref, inputs, args.steps, args.warmup, dtype, device)
        t_ours = time_steps(ours, inputs, args.steps, args.warmup, dtype, device)
        rows.append({"family": family, "reference": type(ref).__name__, "reference_ms": 1e3 * t_ref,
                     "hfpipe_ms": 1e3 * t_ours, "speedup": t_ref / t_ours})
    print(f"\nforward+backward+AdamW step, {args.size} size, batch {args.batch} x {args.seq}, {args.dtype} on "
          f"{torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'} "
          f"(torch {torch.__version__}, transformers {transformers.__version__})\n")
    print("| family | reference | reference ms | hfpipe ms | speed-up (ref / hfpipe) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['reference']} | {r['reference_ms']:.1f} | {r['hfpipe_ms']:.1f} | {r['speedup']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
