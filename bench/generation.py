"""Generation throughput with the KV cache: hfpipe's decoder ``generate`` against
GPT2LMHeadModel.generate on the same (converted) weights, greedy, fixed length.

    python bench/generation.py --device cpu --size tiny --new-tokens 32 --batch 1 4   # a check on CPU (~20 s)
    python bench/generation.py --device cuda                                          # GPT-2 small, bf16, 256 new tokens, batch 1 and 32

Both models come from one random GPT-2 (bench/models.py sizes; random weights are fine for
speed), the hfpipe one through hfpipe.models.convert, both cast to --dtype. Prompts are
--prompt-length random ids without padding; EOS is disabled (``eos_token_id=None`` and
``min_new_tokens``) so every row generates exactly --new-tokens tokens. Tokens/s = batch x
new tokens / wall time of one ``generate`` call (prefill included), median of --repeats after one
warm-up call per side; sides alternate so machine noise falls on both. The greedy outputs of
the two sides are compared token by token (the agreement is reported: in bf16, near-ties can
flip an argmax between two implementations).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import SIZES, reference  # noqa: E402  (also puts the repository on sys.path)

from hfpipe.models.convert import convert_model  # noqa: E402
from results import write_results  # noqa: E402  (bench/results.py; the script's folder is on sys.path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timed_generate(model, prompts: torch.Tensor, new_tokens: int) -> tuple[float, torch.Tensor]:
    """(seconds, generated ids (B, new_tokens)) of one greedy ``generate`` call."""
    mask = torch.ones_like(prompts)
    synchronize(prompts.device)
    start = time.perf_counter()
    out = model.generate(input_ids=prompts, attention_mask=mask, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, num_beams=1, use_cache=True,
                         eos_token_id=None, pad_token_id=0)
    synchronize(prompts.device)
    return time.perf_counter() - start, out[:, prompts.shape[1]:]


def run(args) -> tuple[dict, list[dict]]:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    ref = reference("decoder", args.size).eval()
    ours = convert_model(ref).eval()
    for model in (ref, ours):
        model.to(device=device, dtype=dtype)
        model.generation_config.eos_token_id = None  # fixed length: never stop early
    params = sum(p.numel() for p in ref.parameters())
    rows = []
    for batch in args.batch:
        g = torch.Generator().manual_seed(batch)
        prompts = torch.randint(5, ref.config.vocab_size - 1, (batch, args.prompt_length), generator=g).to(device)
        times = {"transformers": [], "hfpipe": []}
        outputs = {}
        for name, model in (("transformers", ref), ("hfpipe", ours)):
            timed_generate(model, prompts, args.new_tokens)  # warm-up: kernels, allocator, cache set-up
        for _ in range(args.repeats):
            for name, model in (("transformers", ref), ("hfpipe", ours)):
                seconds, outputs[name] = timed_generate(model, prompts, args.new_tokens)
                times[name].append(seconds)
        assert outputs["hfpipe"].shape == (batch, args.new_tokens), outputs["hfpipe"].shape
        agreement = (outputs["hfpipe"] == outputs["transformers"]).float().mean().item()
        row = {"batch": batch, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
               "token_agreement": agreement}
        for name in times:
            seconds = statistics.median(times[name])
            row[f"{name}_s"] = seconds
            row[f"{name}_tokens_per_s"] = batch * args.new_tokens / seconds
        row["speedup"] = row["hfpipe_tokens_per_s"] / row["transformers_tokens_per_s"]
        rows.append(row)
        print(f"batch {batch}: transformers {row['transformers_tokens_per_s']:.0f} tok/s, "
              f"hfpipe {row['hfpipe_tokens_per_s']:.0f} tok/s ({row['speedup']:.2f}x), "
              f"same tokens {100 * agreement:.1f}%", flush=True)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type, "dtype": args.dtype, "size": args.size, "layers_hidden_heads_ffn": SIZES[args.size],
        "parameters": params, "repeats": args.repeats,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "cuda": torch.version.cuda},
    }
    return meta, rows


def table(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"Greedy generation with the KV cache, GPT-2 {meta['size']} ({meta['parameters'] / 1e6:.0f}M, random weights), "
        f"{meta['dtype']} on {meta['device']}, {meta['date']}. Tokens/s = batch x new tokens / time of one generate "
        f"call (prefill included), median of {meta['repeats']}.",
        "",
        "| batch | prompt | new tokens | GPT2LMHeadModel tok/s | hfpipe tok/s | hfpipe / transformers | same tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['prompt_length']} | {r['new_tokens']} | {r['transformers_tokens_per_s']:,.0f} "
                     f"| {r['hfpipe_tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {100 * r['token_agreement']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(SIZES), help="default: base (GPT-2 small, 124M) on CUDA, tiny on CPU")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write generation-<device>-<date>.{md,json} here")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.size = args.size or ("base" if cuda else "tiny")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    meta, rows = run(args)
    text = table(meta, rows)
    print("\n" + text + "\n")
    if args.out:
        write_results(args.out, f"generation-{meta['device_type']}-{meta['date'][:10]}", text, {**meta, "rows": rows})


if __name__ == "__main__":
    main()
