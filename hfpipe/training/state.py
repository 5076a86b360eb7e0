"""Trainer's resumable state (optimizer, LR scheduler, gradient scaler, RNG) without pickles.

Trainer keeps that state in ``checkpoint-N/`` as pickles (``optimizer.pt``, ``scheduler.pt``,
``scaler.pt``, ``rng_state*.pth``). hfpipe never pushes a pickle to the Hub, so a checkpoint
pushed for resuming carries the same state as ``training_state.safetensors`` (every tensor and
numpy array) next to ``training_state.json`` (the nesting, Python numbers, strings, tuples).
Pulling writes the pickles back, locally, from those two files for Trainer to read: nothing from
the Hub is ever unpickled. safetensors holds flat tensors only and has no format for a nested
state dict, hence this small encoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "training_state.safetensors"
STATE_LAYOUT = "training_state.json"
_FORMAT = "hfpipe-training-state/1"


def pickled_state_files(checkpoint: str | Path) -> list[Path]:
    """The state pickles Trainer wrote into ``checkpoint`` (weights excluded)."""
    folder = Path(checkpoint)
    names = ["optimizer.pt", "scheduler.pt", "scaler.pt"]
    found = [folder / name for name in names if (folder / name).is_file()]
    return found + sorted(folder.glob("rng_state*.pth"))


def export_training_state(checkpoint: str | Path) -> bool:
    """Write ``training_state.{safetensors,json}`` from the checkpoint's pickles; False if it has none.

    Reads only files this machine's Trainer wrote, with ``weights_only=True`` as Trainer does.
    """
    from transformers.trainer_pt_utils import safe_globals  # numpy's RNG state, allow-listed

    folder = Path(checkpoint)
    sources = pickled_state_files(folder)
    if not sources:
        return False
    layout_path = folder / STATE_LAYOUT
    if layout_path.is_file() and all(layout_path.stat().st_mtime >= p.stat().st_mtime for p in sources):
        return True  # checkpoints are not rewritten once saved: exported already
    tensors: dict[str, torch.Tensor] = {}
    with safe_globals():
        files = {p.name: _encode(torch.load(p, map_location="cpu", weights_only=True), tensors) for p in sources}
    save_file(tensors, folder / STATE_TENSORS)
    # The layout goes last: its presence (and mtime) says the export is whole.
    layout_path.write_text(json.dumps({"format": _FORMAT, "files": files}) + "\n")
    return True


def import_training_state(checkpoint: str | Path) -> list[str]:
    """Write back the pickles Trainer resumes from; returns their names ([] if no exported state)."""
    folder = Path(checkpoint)
    layout_path = folder / STATE_LAYOUT
    if not layout_path.is_file():
        return []
    layout = json.loads(layout_path.read_text())
    if layout.get("format") != _FORMAT:
        raise ValueError(f"{layout_path}: unknown training-state format {layout.get('format')!r}")
    tensors = load_file(folder / STATE_TENSORS)
    written = []
    for name, encoded in layout["files"].items():
        if Path(name).name != name or not name.endswith((".pt", ".pth")):
            raise ValueError(f"{layout_path}: refusing to write {name!r} (not a training-state file name)")
        torch.save(_decode(encoded, tensors), folder / name)
        written.append(name)
    return written


def _encode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        # raw bytes: safetensors' dtypes need not include every numpy one (numpy's RNG key is uint32)
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).view(np.uint8).reshape(-1).copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return _encode(obj.item(), tensors)
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state holds a {type(obj).__name__}, which hfpipe cannot store without pickle")


def _decode(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        raw = tensors[obj["__ndarray__"]].numpy()
        return raw.view(np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


__all__ = ["export_training_state", "import_training_state", "pickled_state_files", "STATE_TENSORS", "STATE_LAYOUT"]
