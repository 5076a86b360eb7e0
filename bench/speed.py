"""Training throughput (tokens/s) and model FLOPs utilisation (MFU): hfpipe against the transformers
reference models on issue 7's four rows, in one run on one device.

    python bench/speed.py                                 # CPU: tiny models, float32; ratios only (~1 min)
    python bench/speed.py --device cuda --save            # GPU: BERT-base, GPT-2 small, T5-base, bf16
    python bench/speed.py --device cuda --compile hfpipe  # torch.compile the hfpipe side (both: each side)
    bash bench/gpu.sh                                     # on a GPU machine: install, check, time, save

Rows (the same lengths at every --size; --size changes the models and batches only):

    mlm-128   encoder, MLM 15% + NSP on [CLS] A [SEP] B [SEP] of 128    vs BertForPreTraining
    mlm-512   the same at 512                                           vs BertForPreTraining
    clm-1024  decoder, causal LM on packed blocks of 1024               vs GPT2LMHeadModel
    span-512  encoder-decoder, T5 span corruption 568 -> 512 / 114      vs T5ForConditionalGeneration

Same function, same loop: the hfpipe model is converted from the reference's weights
(hfpipe.models.convert; same dropout), and both train as transformers' Trainer runs them:
autocast to --dtype (bf16 on GPU), AdamW (fused on CUDA, Trainer's default since torch 2.8), TF32,
attention through SDPA. What hfpipe adds is its model code, its collators, packed blocks fed
without an attention mask (SDPA may take the flash kernel), the MLM head on the predicted
positions only (``sparse_prediction``, as the MLM recipes set it), and optionally torch.compile.
FLOPs are counted dense for both sides, so on the MLM rows hfpipe's MFU is reference-equivalent
work per second (the ratio of tokens/s is the comparison that matters).

Data: random token ids (speed does not depend on them) over the ordinary ids of a synthetic
tokenizer as large as the model's vocabulary. Every example fills its length, so no row has
padding on either side. Collators: the reference gets transformers' DataCollatorForLanguageModeling
(mlm_probability 0.15, NSP labels carried from the examples; mlm=False for GPT-2); transformers has
no span-corruption collator (only the Flax example run_t5_mlm_flax.py), so T5 gets hfpipe's
DataCollatorForSpanCorruption output on both sides. hfpipe uses DataCollatorForBertPretraining,
DataCollatorForCausalLM, DataCollatorForSpanCorruption. --batches batches per side are collated
and moved to the device before timing; the steps cycle through them (collation is outside the
timed window, on both sides; bench/collators.py measures it).

Timing: --warmup steps per side (compilation included), then --repeats windows of --steps steps,
reference and hfpipe windows alternating so that machine noise falls on both; the median window on
CUDA, the fastest on CPU (a shared CPU only ever adds time, so the minimum is the least noisy).
Inside a window nothing syncs host and device (the loss is never read; CUDA events bracket the
window). On CUDA one extra step per side runs under torch.cuda.set_sync_debug_mode to count the
syncs the models themselves make.

Tokens: positions processed per step, batch x length; span-512 counts encoder + decoder positions,
512 + 114 = 626 per example (made from 568 raw tokens). Without padding, all are real tokens.

Model FLOPs per step, the same function of the config for both sides (PaLM appendix B, nanoGPT):
6 N per token + 12 L H Q T_q T_k per sequence for attention (QK^T and AV, forward and backward;
causal attention counted in full, as PaLM). N = the matmul weights a token passes through:
attention and MLP projections, BERT's MLM transform, the vocabulary projection (the tied embedding
counted once, as the output matmul). Left out: embedding lookups (token, position, type, T5
relative bias), biases, norms, BERT's pooler and NSP head (one token per sequence). For T5:
encoder weights x 512 positions, decoder weights x 114, cross-attention K/V projections x 512;
attention 512x512 (encoder), 114x114 (decoder), 114x512 (cross).
MFU = model FLOPs / step time / peak; peak = a measured --dtype matmul rate, 8192^3 on CUDA
(--peak auto measures on CUDA only, --peak measure on CPU too, labelled with the device).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import reference  # noqa: E402  (bench/models.py: the reference models and sizes)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hfpipe  # noqa: E402
from hfpipe.data.collators import (  # noqa: E402
    DataCollatorForBertPretraining,
    DataCollatorForCausalLM,
    DataCollatorForSpanCorruption,
    span_corruption_lengths,
)
from hfpipe.models.convert import convert_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = {  # name: (family, input length)
    "mlm-128": ("encoder", 128),
    "mlm-512": ("encoder", 512),
    "clm-1024": ("decoder", 1024),
    "span-512": ("seq2seq", 512),
}
BATCH = {  # examples per step; base: ~32k-40k tokens per step, as the original recipes
    "tiny": {"mlm-128": 8, "mlm-512": 2, "clm-1024": 1, "span-512": 2},
    "small": {"mlm-128": 64, "mlm-512": 16, "clm-1024": 8, "span-512": 16},
    "base": {"mlm-128": 256, "mlm-512": 64, "clm-1024": 32, "span-512": 64},
}
TINY_VOCAB = 2048  # with a real vocabulary the output layer would be nearly all of a tiny model
GOAL_SPEEDUP, GOAL_MFU = 1.3, 0.40  # issue 7: every row; clm-1024 on an H100/H200


def synthetic_tokenizer(family: str, vocab_size: int) -> tuple[PreTrainedTokenizerFast, range]:
    """A WordLevel tokenizer of exactly ``vocab_size`` ids with the real model's special tokens
    (BERT [PAD] [UNK] [CLS] [SEP] [MASK] first; GPT-2 <|endoftext|> last, also used as pad;
    T5 <pad> </s> <unk> first and <extra_id_0> last, counting down), and the range of ordinary ids."""
    if family == "encoder":
        special = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        head, tail = list(special.values()), []
    elif family == "decoder":
        special = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                       pad_token="<|endoftext|>")
        head, tail = [], ["<|endoftext|>"]
    else:
        special = dict(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        head, tail = list(special.values()), [f"<extra_id_{i}>" for i in range(99, -1, -1)]
    words = vocab_size - len(head) - len(tail)
    vocab = {token: i for i, token in enumerate([*head, *(f"w{i}" for i in range(words)), *tail])}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, special["unk_token"])), **special)
    assert len(tokenizer) == vocab_size, (len(tokenizer), vocab_size)
    return tokenizer, range(len(head), len(head) + words)


def make_examples(family: str, length: int, count: int, tokenizer, words: range, seed: int = 0) -> list[dict]:
    """``count`` full-length examples of random ordinary ids (see the module docstring)."""
    rng = np.random.default_rng(seed)
    if family == "seq2seq":
        raw = span_corruption_lengths(length)[0]  # 512 -> 568
        return [{"input_ids": rng.integers(words.start, words.stop, raw).tolist()} for _ in range(count)]
    if family == "decoder":
        return [{"input_ids": rng.integers(words.start, words.stop, length).tolist()} for _ in range(count)]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    examples = []
    for _ in range(count):  # [CLS] A [SEP] B [SEP], the A/B split uniform, filling all `length` positions
        ids = rng.integers(words.start, words.stop, length - 3).tolist()
        split = int(rng.integers(1, length - 3))
        examples.append({
            "input_ids": [cls, *ids[:split], sep, *ids[split:], sep],
            "token_type_ids": [0] * (split + 2) + [1] * (length - split - 2),
            "next_sentence_label": int(rng.integers(2)),
        })
    return examples


def collators(family: str, tokenizer, length: int):
    """(reference collator, hfpipe collator); see the module docstring for the T5 reference."""
    if family == "encoder":
        return (DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0),
                DataCollatorForBertPretraining(tokenizer, mlm_probability=0.15, seed=0))
    if family == "decoder":
        return DataCollatorForLanguageModeling(tokenizer, mlm=False), DataCollatorForCausalLM(tokenizer)
    span = DataCollatorForSpanCorruption(tokenizer, input_length=length, seed=0)
    return span, span


def collate(collator, examples: list[dict], batch: int, count: int, device, packed: bool) -> list[dict]:
    """``count`` batches on ``device``; ``packed`` drops the attention mask, which must be all ones."""
    batches = []
    for i in range(count):
        inputs = dict(collator(examples[i * batch : (i + 1) * batch]))
        if packed:
            assert bool(inputs.pop("attention_mask").all()), "packed blocks must have no padding"
        batches.append({key: value.to(device) for key, value in inputs.items()})
    return batches


def model_flops(family: str, config, batch: int, length: int) -> tuple[int, int]:
    """(model FLOPs of one training step, N) as the module docstring defines them; ``config`` is hfpipe's."""
    d, inner, layers = config.hidden_size, config.num_attention_heads * config.head_dim, config.num_hidden_layers
    block = 4 * d * inner + (3 if config.gated_mlp else 2) * d * config.intermediate_size  # q k v o + MLP
    output = d * config.vocab_size
    if family != "seq2seq":
        n = layers * block + output + (d * d if family == "encoder" else 0)  # BERT: MLM transform
        return 6 * n * batch * length + 12 * layers * inner * length**2 * batch, n
    targets, decoder_layers = span_corruption_lengths(length)[1], config.num_decoder_layers
    encoder, cross_kv = layers * block, decoder_layers * 2 * d * inner
    decoder = decoder_layers * (block + 2 * d * inner) + output  # + cross-attention q, o
    matmuls = 6 * batch * (length * (encoder + cross_kv) + targets * decoder)
    attention = 12 * batch * inner * (layers * length**2 + decoder_layers * (targets**2 + targets * length))
    return matmuls + attention, encoder + cross_kv + decoder


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_peak(device, dtype) -> float:
    """FLOP/s of a square ``dtype`` matmul (8192 on CUDA, 1024 on CPU), mean of the timed repeats."""
    n, reps = (8192, 20) if device.type == "cuda" else (1024, 5)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    return 2 * n**3 * reps / timed(lambda: a @ b, reps, device)


def timed(fn, reps: int, device) -> float:
    """Seconds for ``reps`` calls of ``fn``; on CUDA, CUDA events and one synchronize at the end."""
    synchronize(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return time.perf_counter() - start


class Side:
    """One implementation under training: model (compiled or not), fused AdamW, its batches."""

    def __init__(self, model, batches: list[dict], device, dtype, compile: bool):
        self.model, self.batches, self.device = model.train(), batches, device
        self.forward = torch.compile(model) if compile else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        self.autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
        self.calls, self.windows = 0, []

    def step(self) -> None:
        inputs = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        with self.autocast:
            loss = self.forward(**inputs).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def window(self, steps: int) -> None:
        self.windows.append(timed(self.step, steps, self.device) / steps)

    def host_syncs(self) -> int:
        """Host-device syncs in one step, counted by torch.cuda.set_sync_debug_mode (CUDA only)."""
        synchronize(self.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                self.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)


@torch.no_grad()
def loss_difference(reference_model, hfpipe_model, inputs: dict, dtype, device) -> float:
    """|loss(reference) - loss(hfpipe)| without dropout on the same batch: both compute one function."""
    losses = []
    for model in (reference_model, hfpipe_model):
        model.eval()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            losses.append(model(**inputs).loss.float())
        model.train()
    return abs(float(losses[0] - losses[1]))


def run_row(name: str, args, device, dtype, peak: float | None) -> dict:
    family, length = ROWS[name]
    batch = args.batch or BATCH[args.size][name]
    torch.manual_seed(0)
    ref = reference(family, args.size, vocab_size=TINY_VOCAB if args.size == "tiny" else None)
    ours = convert_model(ref)
    if family == "encoder":
        ours.config.sparse_prediction = True  # as recipes/pretrain/{bert-mlm-nsp,roberta-mlm}.yaml train
    ref, ours = ref.to(device), ours.to(device)
    tokenizer, words = synthetic_tokenizer(family, ref.config.vocab_size)
    examples = make_examples(family, length, batch * args.batches, tokenizer, words)
    ref_collator, our_collator = collators(family, tokenizer, length)
    ref_batches = collate(ref_collator, examples, batch, args.batches, device, packed=False)
    our_batches = collate(our_collator, examples, batch, args.batches, device, packed=True)
    delta = loss_difference(ref, ours, ref_batches[0], dtype, device)

    sides = {
        "reference": Side(ref, ref_batches, device, dtype, compile=args.compile == "both"),
        "hfpipe": Side(ours, our_batches, device, dtype, compile=args.compile in ("hfpipe", "both")),
    }
    for side in sides.values():
        for _ in range(args.warmup):
            side.step()
    syncs = {key: side.host_syncs() for key, side in sides.items()} if device.type == "cuda" else {}
    for _ in range(args.repeats):
        for side in sides.values():
            side.window(args.steps)

    targets = span_corruption_lengths(length)[1] if family == "seq2seq" else 0
    tokens = batch * (length + targets)
    flops, n = model_flops(family, ours.config, batch, length)
    row = {
        "row": name, "reference": type(ref).__name__, "batch": batch,
        "length": f"{span_corruption_lengths(length)[0]} -> {length}/{targets}" if targets else str(length),
        "tokens_per_step": tokens, "matmul_params": n, "params": sum(p.numel() for p in ref.parameters()),
        "flops_per_step": flops, "loss_difference": delta,
    }
    for key, side in sides.items():
        seconds = statistics.median(side.windows) if device.type == "cuda" else min(side.windows)
        row[f"{key}_step_s"] = seconds
        row[f"{key}_step_s_all"] = side.windows
        row[f"{key}_tokens_per_s"] = tokens / seconds
        row[f"{key}_mfu"] = flops / seconds / peak if peak else None
        row[f"{key}_host_syncs_per_step"] = syncs.get(key)
    row["speedup"] = row["reference_step_s"] / row["hfpipe_step_s"]
    del sides, ref, ours, ref_batches, our_batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if args.compile != "none":
        torch._dynamo.reset()
    return row


def device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def environment(args, device, peak: float | None) -> dict:
    try:
        import accelerate

        accelerate_version = accelerate.__version__
    except ImportError:
        accelerate_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(device), "device_type": device.type,
        "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "accelerate": accelerate_version, "hfpipe": hfpipe.__version__,
        "peak_flops": peak, "peak": f"{args.dtype} matmul, measured on {device_name(device)}" if peak else None,
        "settings": {key: value for key, value in vars(args).items() if key not in ("save", "out")},
        "goals": f"hfpipe/reference >= {GOAL_SPEEDUP}x on every row; hfpipe MFU >= {GOAL_MFU:.0%} on clm-1024 (H100/H200)",
    }


def table(meta: dict, rows: list[dict]) -> str:
    def mfu(value):
        return "-" if value is None else f"{100 * value:.1f}%"

    def syncs(row):
        pair = row["reference_host_syncs_per_step"], row["hfpipe_host_syncs_per_step"]
        return "-" if pair[0] is None else f"{pair[0]} / {pair[1]}"

    s = meta["settings"]
    peak = f"{meta['peak_flops'] / 1e12:.1f} TFLOP/s ({meta['peak']})" if meta["peak_flops"] else "not measured"
    lines = [
        f"Training step (forward, backward, AdamW), {s['size']} size, {s['dtype']}, compile: {s['compile']}, "
        f"on {meta['device']}; torch {meta['torch']}, transformers {meta['transformers']}, {meta['date']}.",
        f"Peak: {peak}. {'Median' if meta['device_type'] == 'cuda' else 'Fastest'} of {s['repeats']} windows of "
        f"{s['steps']} steps per side (alternating) after {s['warmup']} warm-up steps.",
        "",
        "| row | reference | batch x length | tokens/step | reference tok/s | hfpipe tok/s | hfpipe / reference "
        "| MFU reference | MFU hfpipe | host syncs/step (ref / hfpipe) | Δloss |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['reference']} | {r['batch']} x {r['length']} | {r['tokens_per_step']:,} "
            f"| {r['reference_tokens_per_s']:,.0f} | {r['hfpipe_tokens_per_s']:,.0f} | {r['speedup']:.2f}x "
            f"| {mfu(r['reference_mfu'])} | {mfu(r['hfpipe_mfu'])} | {syncs(r)} | {r['loss_difference']:.1e} |"
        )
    lines += ["", f"Goals (issue 7): {meta['goals']}."]
    return "\n".join(lines) + "\n"


def save(meta: dict, rows: list[dict], folders: list[Path], complete: bool) -> list[Path]:
    slug = re.sub(r"[^a-z0-9]+", "-", meta["device"].lower()).strip("-") if meta["device_type"] == "cuda" else "cpu"
    stem = f"speed-{slug}-{meta['settings']['size']}-{meta['date'][:10]}"
    if meta["settings"]["compile"] != "none":
        stem += f"-compile-{meta['settings']['compile']}"
    written = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.md").write_text(table(meta, rows))
        (folder / f"{stem}.json").write_text(json.dumps({**meta, "complete": complete, "rows": rows}, indent=2) + "\n")
        written += [folder / f"{stem}.md", folder / f"{stem}.json"]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=list(BATCH), help="default: base on CUDA (the issue's sizes), tiny on CPU")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--batch", type=int, help="examples per step for every row (default: per row and size)")
    parser.add_argument("--compile", choices=["none", "hfpipe", "both"], default="none", help="torch.compile which side(s)")
    parser.add_argument("--steps", type=int, help="steps per timed window (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps per side first (default: 5 on CUDA, on CPU 1, or 3 compiling)")
    parser.add_argument("--repeats", type=int, help="timed windows per side, alternating (default: 3 on CUDA, 7 on CPU)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per side, cycled")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: a second thread busy-waits when the machine is shared, and ratios wobble)")
    parser.add_argument("--peak", default="auto", help="auto (measure on CUDA only), measure, none, or FLOP/s")
    parser.add_argument("--save", action="store_true", help=f"write the table (.md) and numbers (.json) to {RESULTS}")
    parser.add_argument("--out", type=Path, help="also write them to this folder")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.size = args.size or ("base" if cuda else "tiny")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.steps = args.steps or (20 if cuda else 3)
    args.repeats = args.repeats or (3 if cuda else 7)
    if args.warmup is None:
        args.warmup = 5 if cuda else 1 if args.compile == "none" else 3
    dtype = getattr(torch, args.dtype)
    if not cuda:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    transformers.logging.set_verbosity_error()

    if args.peak == "none" or (args.peak == "auto" and not cuda):
        peak = None
    elif args.peak in ("auto", "measure"):
        peak = measure_peak(device, dtype)
    else:
        peak = float(args.peak)
    meta = environment(args, device, peak)
    print(f"{meta['device']}: torch {meta['torch']} (CUDA {meta['cuda']}), transformers {meta['transformers']}; peak "
          + (f"{peak / 1e12:.1f} TFLOP/s ({args.dtype} matmul)" if peak else "not measured"), flush=True)
    folders = ([RESULTS] if args.save else []) + ([args.out] if args.out else [])
    rows = []
    for name in args.rows:
        started = time.perf_counter()
        rows.append(run_row(name, args, device, dtype, peak))
        r = rows[-1]
        print(f"{name}: reference {r['reference_tokens_per_s']:,.0f} tok/s, hfpipe {r['hfpipe_tokens_per_s']:,.0f} tok/s, "
              f"{r['speedup']:.2f}x ({time.perf_counter() - started:.0f} s)", flush=True)
        save(meta, rows, folders, complete=False)  # a run cut short still leaves its finished rows
    print("\n" + table(meta, rows))
    for path in save(meta, rows, folders, complete=True):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
