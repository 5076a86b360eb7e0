"""Compute planner: Chinchilla's compute-optimal model and data size for a budget.

Training a dense transformer of N parameters on D tokens costs C ~= 6 N D FLOPs (forward 2 N D,
backward 4 N D; Kaplan et al. 2020). Hoffmann et al. 2022 (Chinchilla) found about 20 tokens per
parameter compute-optimal (70B parameters on 1.4T tokens beat 280B on 300B), hence for a budget C:

    D = 20 N,  C = 6 N D = 120 N^2  =>  N = sqrt(C / 120),  D = 20 N.

A budget is given in one of three ways: FLOPs; GPU-hours on a named GPU (peak dense bf16 FLOP/s
x an assumed model-FLOPs utilisation, MFU, default 0.4); or a parameter count. Used by
``hfpipe plan``::

    hfpipe plan --gpu-hours 24 --gpu h100
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from hfpipe.errors import InputError

__all__ = ["CHINCHILLA_TOKENS_PER_PARAM", "DEFAULT_PRESET_PARAMS", "GPU_PEAK_FLOPS", "format_plan", "plan"]

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

# Published parameter counts of the models hfpipe's size presets reproduce (mission.md; Turc et al.
# 2019 for the small BERTs; Radford et al. 2019; Raffel et al. 2020). The CLI passes hfpipe's own
# counts instead (hfpipe.models), so the names it shows are its presets.
DEFAULT_PRESET_PARAMS: dict[str, float] = {
    "BERT-tiny": 4.4e6,
    "BERT-small": 29.1e6,
    "BERT-base": 110e6,
    "BERT-large": 340e6,
    "GPT-2 small": 124e6,
    "GPT-2 medium": 355e6,
    "GPT-2 large": 774e6,
    "GPT-2 XL": 1.5e9,
    "T5-small": 60e6,
    "T5-base": 220e6,
    "T5-large": 770e6,
}


def plan(
    compute_flops: float | None = None,
    gpu_hours: float | None = None,
    gpu: str | None = None,
    params: float | None = None,
    mfu: float = 0.4,
    presets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The compute-optimal plan for one budget: exactly one of ``compute_flops``, ``gpu_hours`` (with
    ``gpu``) or ``params``. ``gpu`` with the other two adds the GPU-hours the plan needs.

    Returns a dict: ``budget`` ("compute" | "gpu_hours" | "params"), ``compute_flops`` (FLOPs),
    ``params`` (N), ``tokens`` (D), ``tokens_per_param`` (20), ``gpu``, ``gpu_peak_flops`` (FLOP/s),
    ``mfu``, ``gpu_hours`` (None without a GPU), ``nearest_preset`` and ``nearest_preset_params``
    (closest on a log scale among ``presets``: name -> parameter count; default
    ``DEFAULT_PRESET_PARAMS``).
    """
    given = [name for name, v in (("compute_flops", compute_flops), ("gpu_hours", gpu_hours), ("params", params))
             if v is not None]
    if len(given) != 1:
        raise InputError("plan: give exactly one budget: --compute FLOPS, --gpu-hours H with --gpu NAME, or --params N"
                         + (f" (got {', '.join(given)})" if given else ""))
    mfu = _positive("mfu", mfu)
    if mfu > 1:
        raise InputError(f"plan: --mfu: expected a fraction in (0, 1], got {mfu:g}")
    peak = _gpu_peak(gpu) if gpu is not None else None
    achieved = peak * mfu if peak is not None else None  # FLOP/s actually delivered to the model

    if params is not None:
        n = _positive("params", params)
        compute = FLOPS_PER_PARAM_TOKEN * CHINCHILLA_TOKENS_PER_PARAM * n * n
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
        n = math.sqrt(compute / (FLOPS_PER_PARAM_TOKEN * CHINCHILLA_TOKENS_PER_PARAM))
    preset, preset_params = _nearest_preset(n, DEFAULT_PRESET_PARAMS if presets is None else presets)
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
    }


def format_plan(p: Mapping[str, Any]) -> str:
    """A few aligned lines for the terminal."""
    rows = [
        ("compute", f"{p['compute_flops']:.3g} FLOPs (C = 6 N D)"),
        ("parameters", f"{_si(p['params'])} (N = sqrt(C / 120))"),
        ("tokens", f"{_si(p['tokens'])} (D = {p['tokens_per_param']:g} N, Chinchilla)"),
    ]
    if p.get("gpu") is not None:
        rows.append(("gpu", f"{p['gpu']}: {p['gpu_peak_flops'] / 1e12:g} TFLOP/s peak bf16 x MFU {p['mfu']:g}"))
        days = p["gpu_hours"] / 24
        rows.append(("gpu-hours", f"{p['gpu_hours']:,.1f} ({days:,.1f} GPU-days)"))
    if p.get("nearest_preset") is not None:
        ratio = p["params"] / p["nearest_preset_params"]
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
