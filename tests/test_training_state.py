"""hfpipe.training.state: Trainer's pickled resume state <-> safetensors + JSON, exactly."""

import json
import math
import random

import numpy as np
import pytest
import torch

from hfpipe.training.state import STATE_LAYOUT, export_training_state, import_training_state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _round_trip(tmp_path, name: str, obj):
    torch.save(obj, tmp_path / name)
    assert export_training_state(tmp_path)
    (tmp_path / name).unlink()
    assert import_training_state(tmp_path) == [name]
    from transformers.trainer_pt_utils import safe_globals

    with safe_globals():
        return torch.load(tmp_path / name, weights_only=True)


def test_adamw_state_round_trips_and_continues_identically(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).square().mean().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    saved = {"optimizer.pt": optimizer.state_dict(), "scheduler.pt": scheduler.state_dict()}
    for name, state in saved.items():
        torch.save(state, tmp_path / name)
    export_training_state(tmp_path)
    for name in saved:
        (tmp_path / name).unlink()
    assert sorted(import_training_state(tmp_path)) == ["optimizer.pt", "scheduler.pt"]
    restored = {name: torch.load(tmp_path / name, weights_only=True) for name in saved}
    for name in saved:
        assert _same(saved[name], restored[name]), name
    assert restored["optimizer.pt"]["param_groups"][0]["betas"] == (0.8, 0.95)  # a tuple stays a tuple


def test_rng_state_with_numpy_and_python_state_round_trips(tmp_path):
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    back = _round_trip(tmp_path, "rng_state.pth", state)
    assert _same(state, back)
    random.setstate(back["python"]), np.random.set_state(back["numpy"])  # accepted as they are


def test_odd_values_round_trip(tmp_path):
    obj = {
        0: {"__tensor__": "not a marker", "bf16": torch.randn(3, dtype=torch.bfloat16), "u8": torch.arange(5, dtype=torch.uint8)},
        "nested": [(1, 2.5, None, True), {"nan": float("nan"), "inf": float("inf")}],
        "array": np.arange(6, dtype=np.uint32).reshape(2, 3),  # the dtype Trainer's loader allow-lists
    }
    assert _same(obj, _round_trip(tmp_path, "scaler.pt", obj))


def test_export_is_skipped_without_state_and_import_refuses_foreign_names(tmp_path):
    assert export_training_state(tmp_path) is False and import_training_state(tmp_path) == []
    torch.save({"x": torch.ones(1)}, tmp_path / "optimizer.pt")
    export_training_state(tmp_path)
    layout = json.loads((tmp_path / STATE_LAYOUT).read_text())
    layout["files"] = {"../evil.pt": layout["files"]["optimizer.pt"]}
    (tmp_path / STATE_LAYOUT).write_text(json.dumps(layout))
    with pytest.raises(ValueError, match="refusing to write '../evil.pt'"):
        import_training_state(tmp_path)
    assert not (tmp_path.parent / "evil.pt").exists()
