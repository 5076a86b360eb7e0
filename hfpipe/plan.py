"""Compute planner: Chinchilla's compute-optimal model and data size for a budget.

Training a dense transformer of N parameters on D tokens costs C ~= 6 N D FLOPs (forward 2 N D,
backward 4 N D; Kaplan et al. 2020). Hoffmann et al. 2022 (Chinchilla) found about 20 tokens per
parameter compute-optimal (70B parameters on 1.4T tokens beat 280B on 300B), hence for a budget C:

    D = 20 N,  C = 6 N D = 120 N^2  =>  N = sqrt(C / 120),  D = 20 N.

6 N D leaves out attention's own work (scores and weighted values), which grows with the sequence
length T: per layer, the forward pass spends 2 d T S FLOPs on Q K^T and as many on the weighted sum,
S the keys each query sees, so training (x3) costs 12 L d S FLOPs per token -- PaLM's 6N + 12 L H Q T
(Chowdhery et al. 2022, appendix B), with S = T under full attention (causal or not, as PaLM counts).
A sliding window of w tokens each side sees S = min(T, 2w + 1) keys (w + 1 causal), plus its global
tokens' rows and columns: linear in T instead of quadratic. :func:`attention_flops_per_token` counts
this for a config and a length; given to :func:`plan`, the budget becomes C = (6 N + A) D.

A budget is given in one of three ways: FLOPs; GPU-hours on a named GPU (peak dense bf16 FLOP/s
x an assumed model-FLOPs utilisation, MFU, default 0.4); or a parameter count. Used by
``hfpipe plan``::

    hfpipe plan --gpu-hours 24 --gpu h100
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Mapping
from typing import Any

from hfpipe.errors import InputError

__all__ = [
    "CHINCHILLA_TOKENS_PER_PARAM",
    "GPU_PEAK_FLOPS",
    "attention_flops_per_token",
    "format_plan",
    "plan",
    "preset_parameter_counts",
    "recipe_attention_flops_per_token",
]

CHINCHILLA_TOKENS_PER_PARAM = 20.0
FLOPS_PER_PARAM_TOKEN = 6.0  # C ~= 6 N D

# Peak dense (no 2:4 sparsity) tensor-core FLOP/s in bf16 with fp32 accumulation, from the vendors'
# datasheets (NVIDIA A100, H100, H200, L4, L40S, A10, RTX A6000, GeForce RTX 4090 / Ada whitepaper,
# B200; AMD MI300X; Google Cloud TPU pages). V100 and T4 lack bf16: their fp16 tensor peak is given.
# A10G (AWS g5 only): NVIDIA publishes no datasheet; 70 TFLOP/s is the tensor figure in Baseten's
# "NVIDIA A10 vs A10G" comparison (the A10G trades tensor throughput for CUDA-core clocks).
GPU_PEAK_FLOPS: dict[str, float] = {
    "a100": 312e12,  # A100 SXM and PCIe
    "h100": 989e12,  # H100 SXM
    "h100-pcie": 756e12,
    "h200": 989e12,  # same compute as H100 SXM, more and faster memory
    "b200": 2250e12,
    "l4": 121e12,
    "l40s": 362e12,
    "a10": 125e12,
    "a10g": 70e12,
    "a6000": 155e12,  # RTX A6000
    "rtx4090": 165e12,  # fp32 accumulation (330 with fp16 accumulation)
    "v100": 125e12,  # fp16
    "t4": 65e12,  # fp16
    "mi300x": 1307e12,
    "tpu-v4": 275e12,
    "tpu-v5e": 197e12,
    "tpu-v5p": 459e12,
}
_GPU_ALIASES = {"4090": "rtx4090", "rtx-4090": "rtx4090", "h100-sxm": "h100", "a100-sxm": "a100",
                "a100-pcie": "a100", "rtx-a6000": "a6000", "v5e": "tpu-v5e", "v5p": "tpu-v5p", "v4": "tpu-v4"}

@functools.cache
def preset_parameter_counts(family: str | None = None) -> dict[str, int]:
    """Parameters of every hfpipe size preset (models.SIZE_PRESETS: "encoder base", ...), of one
    ``family`` if given, counted on the meta device (no memory, ~1 s); base and large match the
    published models (test_parity)."""
    import torch

    from hfpipe.models import MODEL_CLASSES, SIZE_PRESETS, config_for

    counts = {}
    with torch.device("meta"):
        for name, sizes in SIZE_PRESETS.items():
            if family is not None and name != family:
                continue
            model_class = next(iter(MODEL_CLASSES[name].values()))
            for size in sizes:
                model = model_class(config_for(name, size))
                counts[f"{name} {size}"] = sum(p.numel() for p in model.parameters())
    return counts


def _keys_per_sequence(length: int, causal: bool, window: int | None, dilation: int, global_tokens: int) -> float:
    """Query-key pairs one self-attention layer computes over a sequence of ``length`` tokens."""
    if window is None:
        return float(length) * length  # PaLM's count: causal attention is not halved
    reach = window + 1 if causal else 2 * window + 1  # keys in the window, the query itself included
    local = length * min(length, reach)
    if not global_tokens:
        return float(local)
    # global rows see all T keys and every other query the global columns: 2 G (T - reach) more
    # pairs than the window alone (edges ignored, as for the window itself)
    return float(local + 2 * min(global_tokens, length) * (length - min(length, reach)))


def attention_flops_per_token(
    seq_len: int,
    num_layers: int,
    hidden_size: int,
    *,
    causal: bool = False,
    attention_window: int | None = None,
    attention_dilation: int = 1,
    global_tokens: int = 0,
    global_attention_every_n_layers: int | None = None,
) -> float:
    """Training FLOPs per token of attention's scores and weighted values (not its projections,
    which 6 N counts): 12 d (pairs per layer) / T summed over the layers, ``hidden_size`` = d, the
    total width of the heads. Full attention: 12 L d T; windowed layers: 12 d (2w + 1) plus the
    global tokens' rows and columns; with ``global_attention_every_n_layers = n`` layers 0, n, 2n, ...
    count as full. These are the model's FLOPs (as MFU counts them), not a kernel's: the blocked CPU
    path computes 3w scores per query and masks the rest."""
    if seq_len < 1 or num_layers < 1 or hidden_size < 1:
        raise InputError("plan: attention needs a positive sequence length, layer count and width")
    full_layers = num_layers
    if attention_window is not None:
        every = global_attention_every_n_layers
        full_layers = 0 if every is None else -(-num_layers // every)
    full = _keys_per_sequence(seq_len, causal, None, 1, 0)
    local = _keys_per_sequence(seq_len, causal, attention_window, attention_dilation, global_tokens)
    pairs = full_layers * full + (num_layers - full_layers) * local
    return 12.0 * hidden_size * pairs / seq_len


def _recipe_config(recipe):
    """The model configuration a pretraining recipe trains (size preset and model.config, the
    recipe's vocabulary), or one error line for a recipe that pretrains nothing."""
    from hfpipe.models.configuration import config_for

    if recipe.kind != "pretrain":
        raise InputError(f"plan: --recipe: expected a pretraining recipe (kind: pretrain), got kind: {recipe.kind}")
    model = recipe.model
    overrides = {"vocab_size": recipe.tokenizer.vocab_size, **(model.config or {})}
    return config_for(model.family, model.size or "base", **overrides)


def recipe_parameter_count(recipe) -> int:
    """Parameters of the model a pretraining recipe trains, counted on the meta device (no memory)."""
    import torch

    from hfpipe.models import MODEL_CLASSES

    config = _recipe_config(recipe)
    with torch.device("meta"):
        model = next(iter(MODEL_CLASSES[recipe.model.family].values()))(config)
    return sum(p.numel() for p in model.parameters())


def recipe_attention_flops_per_token(recipe) -> float:
    """:func:`attention_flops_per_token` for a pretraining recipe: its model (family, size preset,
    model.config) at ``objective.max_seq_length``. An encoder-decoder counts its encoder at that
    length, and its decoder's self and cross attention as if targets were as long (an upper bound)."""
    model = recipe.model
    config = _recipe_config(recipe)
    length = recipe.objective.max_seq_length
    width = config.num_attention_heads * config.head_dim
    pattern = dict(attention_window=config.attention_window, attention_dilation=config.attention_dilation,
                   global_tokens=config.global_tokens,
                   global_attention_every_n_layers=config.global_attention_every_n_layers)
    causal = model.family == "decoder"
    total = attention_flops_per_token(length, config.num_hidden_layers, width, causal=causal, **pattern)
    if model.family == "seq2seq":
        layers = config.num_decoder_layers
        total += attention_flops_per_token(length, layers, width, causal=True, **pattern)
        total += attention_flops_per_token(length, layers, width)  # cross attention sees the whole input
    return total


def plan(
    compute_flops: float | None = None,
    gpu_hours: float | None = None,
    gpu: str | None = None,
    params: float | None = None,
    mfu: float = 0.4,
    presets: Mapping[str, float] | None = None,
    attention_flops: float = 0.0,
    family: str | None = None,
) -> dict[str, Any]:
    """The compute-optimal plan for one budget: exactly one of ``compute_flops``, ``gpu_hours`` (with
    ``gpu``) or ``params``. ``gpu`` with the other two adds the GPU-hours the plan needs.

    Returns a dict: ``budget`` ("compute" | "gpu_hours" | "params"), ``compute_flops`` (FLOPs),
    ``params`` (N), ``tokens`` (D), ``tokens_per_param`` (20), ``gpu``, ``gpu_peak_flops`` (FLOP/s),
    ``mfu``, ``gpu_hours`` (None without a GPU), ``nearest_preset`` and ``nearest_preset_params``
    (closest on a log scale among ``presets``: name -> parameter count; default
    hfpipe's own presets, :func:`preset_parameter_counts`), ``attention_flops_per_token`` (A).

    ``family``: the nearest preset is one of that family's (a recipe's plan names its own family).

    ``attention_flops``: A, attention's training FLOPs per token at the run's length and pattern
    (:func:`attention_flops_per_token`); the budget is then C = (6 N + A) D with D = 20 N.
    """
    given = [name for name, v in (("compute_flops", compute_flops), ("gpu_hours", gpu_hours), ("params", params))
             if v is not None]
    if len(given) != 1:
        raise InputError("plan: give exactly one budget: --compute FLOPS, --gpu-hours H with --gpu NAME, --params N "
                         "or --recipe RECIPE"
                         + (f" (got {', '.join(given)})" if given else ""))
    mfu = _positive("mfu", mfu)
    if mfu > 1:
        raise InputError(f"plan: --mfu: expected a fraction in (0, 1], got {mfu:g}")
    peak = _gpu_peak(gpu) if gpu is not None else None
    achieved = peak * mfu if peak is not None else None  # FLOP/s actually delivered to the model

    if isinstance(attention_flops, bool) or not isinstance(attention_flops, (int, float)) or attention_flops < 0:
        raise InputError(f"plan: attention FLOPs per token: expected a number >= 0, got {attention_flops!r}")
    a, k = float(attention_flops), CHINCHILLA_TOKENS_PER_PARAM
    if params is not None:
        n = _positive("params", params)
        compute = (FLOPS_PER_PARAM_TOKEN * n + a) * k * n
        budget = "params"
    else:
        if gpu_hours is not None:
            if achieved is None:
                raise InputError("plan: --gpu-hours needs --gpu NAME (known: " + ", ".join(GPU_PEAK_FLOPS) + ")")
            compute = _positive("gpu_hours", gpu_hours) * 3600.0 * achieved
            budget = "gpu_hours"
        else:
            compute = _positive("compute", compute_flops)
            budget = "compute"
        # C = (6 N + A) k N: the positive root of 6k N^2 + A k N - C = 0 (N = sqrt(C / 120) when A = 0)
        quadratic = FLOPS_PER_PARAM_TOKEN * k
        n = (-a * k + math.sqrt((a * k) ** 2 + 4 * quadratic * compute)) / (2 * quadratic)
    preset, preset_params = _nearest_preset(n, preset_parameter_counts(family) if presets is None else presets)
    return {
        "budget": budget,
        "compute_flops": compute,
        "params": n,
        "tokens": CHINCHILLA_TOKENS_PER_PARAM * n,
        "tokens_per_param": CHINCHILLA_TOKENS_PER_PARAM,
        "gpu": _gpu_key(gpu) if gpu is not None else None,
        "gpu_peak_flops": peak,
        "mfu": mfu,
        "gpu_hours": compute / achieved / 3600.0 if achieved is not None else None,
        "nearest_preset": preset,
        "nearest_preset_params": preset_params,
        "attention_flops_per_token": a,
    }


def format_plan(p: Mapping[str, Any]) -> str:
    """A few aligned lines for the terminal."""
    attention = p.get("attention_flops_per_token") or 0.0
    rows = [
        ("compute", f"{p['compute_flops']:.3g} FLOPs (C = 6 N D)" if not attention
         else f"{p['compute_flops']:.3g} FLOPs (C = (6 N + A) D)"),
        ("parameters", f"{_si(p['params'])} (given)" if p.get("budget") == "params"
         else f"{_si(p['params'])} (N = sqrt(C / 120))" if not attention
         else f"{_si(p['params'])} (C = (6 N + A) 20 N solved for N)"),
        ("tokens", f"{_si(p['tokens'])} (D = {p['tokens_per_param']:g} N, Chinchilla)"),
    ]
    if attention:
        share = attention / (FLOPS_PER_PARAM_TOKEN * p["params"] + attention)
        rows.append(("attention", f"A = {attention:.3g} FLOPs per token ({100 * share:.1f}% of the compute)"))
    if p.get("gpu") is not None:
        rows.append(("gpu", f"{p['gpu']}: {p['gpu_peak_flops'] / 1e12:g} TFLOP/s peak bf16 x MFU {p['mfu']:g}"))
        days = p["gpu_hours"] / 24
        rows.append(("gpu-hours", f"{p['gpu_hours']:,.1f} ({days:,.1f} GPU-days)"))
    if p.get("nearest_preset") is not None:
        ratio = p["nearest_preset_params"] / p["params"]
        rows.append(("nearest preset", f"{p['nearest_preset']} ({_si(p['nearest_preset_params'])} parameters, "
                     f"{ratio:.3g}x the plan)"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in rows)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"plan: --{name.replace('_', '-')}: expected a positive finite number, got {value!r}")
    return float(value)


def _gpu_key(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    for prefix in ("nvidia-", "amd-", "google-"):
        key = key.removeprefix(prefix)
    key = key.removeprefix("geforce-").replace("instinct-", "")
    return _GPU_ALIASES.get(key, key)


def _gpu_peak(name: str) -> float:
    key = _gpu_key(name)
    if key not in GPU_PEAK_FLOPS:
        guess = difflib.get_close_matches(key, list(GPU_PEAK_FLOPS), n=1)
        raise InputError(f"plan: --gpu: unknown GPU {name!r}" + (f" (did you mean '{guess[0]}'?)" if guess else "")
                         + "; known: " + ", ".join(GPU_PEAK_FLOPS))
    return GPU_PEAK_FLOPS[key]


def _nearest_preset(n: float, presets: Mapping[str, float]) -> tuple[str | None, float | None]:
    """Closest by |log(N / preset)|: 'nearest' in ratio, as model sizes grow geometrically."""
    sizes = {name: float(count) for name, count in presets.items() if count and count > 0}
    if not sizes:
        return None, None
    name = min(sizes, key=lambda k: abs(math.log(n / sizes[k])))
    return name, sizes[name]


def _si(x: float) -> str:
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"
