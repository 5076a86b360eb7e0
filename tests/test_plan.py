"""Chinchilla arithmetic of hfpipe.plan against the paper's own numbers, and its input errors."""

import math

import pytest

from hfpipe.errors import InputError
from hfpipe.plan import GPU_PEAK_FLOPS, format_plan, plan, preset_parameter_counts


def test_params_budget_matches_chinchilla():
    # Hoffmann et al. 2022: 70B parameters on 1.4T tokens is compute optimal; C = 6 * 70e9 * 1.4e12.
    p = plan(params=70e9)
    assert p["budget"] == "params"
    assert p["tokens"] == pytest.approx(1.4e12, rel=1e-12)
    assert p["compute_flops"] == pytest.approx(5.88e23, rel=1e-12)
    assert p["tokens_per_param"] == 20
    assert p["gpu_hours"] is None


def test_compute_budget_inverts_to_chinchilla():
    p = plan(compute_flops=5.88e23)
    assert p["params"] == pytest.approx(70e9, rel=0.01)
    assert p["tokens"] == pytest.approx(1.4e12, rel=0.01)
    # Exact inverse: N = sqrt(C / 120) and 6 N D gives C back.
    assert 6 * p["params"] * p["tokens"] == pytest.approx(5.88e23, rel=1e-12)


def test_gpu_hours_budget_by_hand():
    # 24 h on one H100 SXM at 40% MFU: C = 24 * 3600 * 989e12 * 0.4 = 3.418e19 FLOPs.
    p = plan(gpu_hours=24, gpu="H100")
    c = 24 * 3600 * 989e12 * 0.4
    assert p["compute_flops"] == pytest.approx(c, rel=1e-12)
    assert p["params"] == pytest.approx(math.sqrt(c / 120), rel=1e-12)  # ~533.7M
    assert p["params"] == pytest.approx(533.7e6, rel=1e-3)
    assert p["gpu_hours"] == pytest.approx(24, rel=1e-12)
    assert (p["gpu"], p["gpu_peak_flops"], p["mfu"]) == ("h100", 989e12, 0.4)
    # Half the MFU, half the compute.
    assert plan(gpu_hours=24, gpu="h100", mfu=0.2)["compute_flops"] == pytest.approx(c / 2, rel=1e-12)


def test_gpu_with_params_gives_hours_needed():
    # BERT-base size, compute-optimal: C = 120 * (110e6)^2 = 1.452e18; on an A100 at 40%: 3.23 GPU-hours.
    p = plan(params=110e6, gpu="nvidia a100")
    assert p["compute_flops"] == pytest.approx(1.452e18, rel=1e-12)
    assert p["gpu_hours"] == pytest.approx(1.452e18 / (312e12 * 0.4) / 3600, rel=1e-12)
    assert p["gpu_hours"] == pytest.approx(3.232, rel=1e-3)


def test_gpu_table_values():
    assert GPU_PEAK_FLOPS["a100"] == 312e12
    assert GPU_PEAK_FLOPS["h100"] == GPU_PEAK_FLOPS["h200"] == 989e12
    assert GPU_PEAK_FLOPS["v100"] == 125e12
    assert plan(params=1e6, gpu="RTX 4090")["gpu"] == "rtx4090"


def test_nearest_preset_on_log_scale():
    assert plan(params=115e6)["nearest_preset"] == "encoder base"  # BERT-base's 110M beats GPT-2 small's 124M
    assert plan(params=123e6)["nearest_preset"] == "decoder base"
    assert plan(params=70e9)["nearest_preset"] == "seq2seq large"  # the largest preset, T5-large's 738M
    # On a log scale 45M is nearer 60M than 29.1M: |ln(45/29.1)| = 0.436 > |ln(60/45)| = 0.288.
    assert plan(params=45e6, presets={"a": 29.1e6, "b": 60e6})["nearest_preset"] == "b"
    p = plan(params=1e9, presets={"encoder-base": 109_482_240, "encoder-large": 335_141_888})
    assert (p["nearest_preset"], p["nearest_preset_params"]) == ("encoder-large", 335_141_888)
    assert plan(params=1e9, presets={})["nearest_preset"] is None
    counts = preset_parameter_counts()
    assert set(counts) == {f"{f} {s}" for f in ("encoder", "decoder", "seq2seq") for s in ("tiny", "small", "base", "large")}
    assert counts["encoder tiny"] < counts["encoder small"] < counts["encoder base"] < counts["encoder large"]


def test_format_plan_lines():
    text = format_plan(plan(params=70e9, gpu="h100"))
    assert "5.88e+23 FLOPs" in text
    assert "70B" in text and "1.4T" in text
    assert "989 TFLOP/s" in text and "MFU 0.4" in text
    hours = 5.88e23 / (989e12 * 0.4) / 3600
    assert f"{hours:,.1f}" in text
    assert "nearest preset" in text
    assert "gpu" not in format_plan(plan(compute_flops=1e20))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give exactly one budget"),
        ({"params": 1e9, "compute_flops": 1e20}, "got compute_flops, params"),
        ({"params": -5}, "--params: expected a positive finite number, got -5"),
        ({"compute_flops": 0}, "--compute: expected a positive finite number"),
        ({"compute_flops": float("nan")}, "--compute: expected a positive"),
        ({"gpu_hours": 10}, "--gpu-hours needs --gpu NAME (known: a100, h100"),
        ({"gpu_hours": -1, "gpu": "a100"}, "--gpu-hours: expected a positive"),
        ({"gpu_hours": 10, "gpu": "h10"}, "unknown GPU 'h10' (did you mean 'h100'?); known: a100, h100"),
        ({"params": 1e9, "mfu": 1.5}, "--mfu: expected a fraction in (0, 1], got 1.5"),
        ({"params": True}, "--params: expected a positive finite number, got True"),
    ],
)
def test_bad_inputs_raise_input_error(kwargs, message):
    with pytest.raises(InputError) as info:
        plan(**kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_recipes_plan_names_a_preset_of_its_own_family_and_its_size_relative_to_the_plan():
    from hfpipe.plan import format_plan, plan, preset_parameter_counts

    result = plan(gpu_hours=100, gpu="h100", family="encoder")
    assert result["nearest_preset"].startswith("encoder ")
    assert set(preset_parameter_counts("encoder")) == {n for n in preset_parameter_counts() if n.startswith("encoder")}
    ratio = result["nearest_preset_params"] / result["params"]
    assert f"{ratio:.3g}x the plan" in format_plan(result)  # the preset's size as a multiple of the plan's
