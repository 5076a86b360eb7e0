"""Where and in what precision the inference verbs (``generate``, ``icl``, perplexity in
``evaluate``) run: ``--device auto|cpu|cuda|mps`` and ``--dtype auto|float32|bfloat16|float16``.

Training and GLUE/SQuAD evaluation go through Trainer, which picks the device itself (CUDA, then
MPS, then CPU; ``train.use_cpu`` forces CPU) and autocasts to ``train.mixed_precision``. The
inference verbs call the model directly, so they need the same choice made here.
"""

from __future__ import annotations

import torch

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# train.mixed_precision -> the dtype the weights are cast to for inference on an accelerator
_RUN_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: cuda if available, else mps if available, else cpu. An explicit accelerator that
    is not there is an InputError, raised before anything is loaded."""
    if name not in DEVICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is visible to torch (use --device cpu or auto)")
    elif name == "mps" and not _mps_available():
        raise InputError("--device mps: no Apple MPS device is available (use --device cpu or auto)")
    return torch.device(name)


def inference_dtype(device: torch.device, dtype: str = "auto", mixed_precision: str | None = None) -> torch.dtype:
    """``auto``: the run's ``train.mixed_precision`` on an accelerator, float32 on CPU (bf16/fp16
    matmuls on CPU are slower and less exact); an explicit dtype is taken as asked."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cpu" or mixed_precision is None:
        return torch.float32
    if (mixed_precision == "bf16" and device.type == "cuda" and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        return torch.float16  # pre-Ampere GPUs: the closest half precision they compute in
    return _RUN_PRECISION.get(mixed_precision, torch.float32)


def run_precision(model_dir) -> str | None:
    """``train.mixed_precision`` of the run that wrote ``model_dir`` (its recipe.yaml), if any."""
    from pathlib import Path

    import yaml

    path = Path(str(model_dir)) / "recipe.yaml"
    if not path.is_file():
        return None
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None  # a checkpoint's recipe copy is informative only; weights load without it
    train = recipe.get("train") if isinstance(recipe, dict) else None
    return train.get("mixed_precision") if isinstance(train, dict) else None


def place_model(model, device: torch.device, dtype: torch.dtype = torch.float32):
    """Move ``model`` to ``device`` and cast its floating-point weights to ``dtype``. Models that
    bitsandbytes quantized while loading stay where ``device_map`` put them (they cannot move)."""
    if getattr(model, "is_quantized", False) or getattr(model, "hf_device_map", None):
        return model
    return model.to(device=device, dtype=dtype)


def trainer_device_options(recipe, device: str = "auto", dtype: str = "auto") -> None:
    """``hfpipe evaluate`` on GLUE/SQuAD runs through Trainer, which already takes the best device
    (CUDA, else MPS, else CPU) and autocasts to ``train.mixed_precision``: only a narrower choice
    is passed on, as ``train.use_cpu`` and ``train.mixed_precision``."""
    target = resolve_device(device)
    if device == "cpu":
        recipe.train.use_cpu = True
    if dtype != "auto":
        recipe.train.mixed_precision = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}[dtype]
    elif target.type == "cpu":
        recipe.train.mixed_precision = "no"  # float32 on CPU unless asked, as for the other verbs


def model_device(model) -> torch.device:
    """The device of the model's first parameter: where its inputs go."""
    return next(model.parameters()).device
