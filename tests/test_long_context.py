"""Long sequences: attention's FLOPs in `hfpipe plan` follow the pattern (quadratic when full,
linear when windowed), and the long-document encoder recipe runs as written through the CLI."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hfpipe.errors import InputError
from hfpipe.models.attention_patterns import uses_blocked_path
from hfpipe.plan import attention_flops_per_token, format_plan, plan, recipe_attention_flops_per_token
from hfpipe.recipes import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "long-encoder.yaml"


def test_full_attention_flops_are_palms():
    # PaLM (Chowdhery et al. 2022, app. B): 12 L H Q T per token; BERT-base at 512 tokens
    per_token = attention_flops_per_token(512, 12, 768)
    assert per_token == 12 * 12 * 768 * 512
    # per sequence, 12 L d T^2: quadruples as T doubles; causal counts the same (PaLM does not halve)
    assert attention_flops_per_token(1024, 12, 768) * 1024 == 4 * per_token * 512
    assert attention_flops_per_token(512, 12, 768, causal=True) == per_token


def test_windowed_attention_flops_are_linear():
    window = dict(attention_window=256)
    per_sequence = {t: attention_flops_per_token(t, 12, 768, **window) * t for t in (4096, 8192, 16384)}
    # 12 L d T (2w + 1): doubles with T
    assert per_sequence[4096] == 12 * 12 * 768 * 4096 * 513
    assert per_sequence[8192] == 2 * per_sequence[4096] and per_sequence[16384] == 4 * per_sequence[4096]
    # causal windows see w keys to the left and the query itself
    assert attention_flops_per_token(4096, 12, 768, causal=True, **window) == 12 * 12 * 768 * 257
    # a global token adds its row and its column outside the window: 2 (T - 513) pairs per layer
    with_global = attention_flops_per_token(4096, 12, 768, global_tokens=1, **window) * 4096
    assert with_global - per_sequence[4096] == 12 * 12 * 768 * 2 * (4096 - 513)
    # a window wider than the sequence is full attention
    assert attention_flops_per_token(256, 12, 768, **window) == attention_flops_per_token(256, 12, 768)
    # ModernBERT's schedule, every third layer full: 4 of 12 layers at T, 8 at 2w + 1
    mixed = attention_flops_per_token(4096, 12, 768, global_attention_every_n_layers=3, **window)
    assert mixed == 12 * 768 * (4 * 4096 + 8 * 513)


def test_plan_adds_attention_to_the_budget():
    a = attention_flops_per_token(4096, 12, 768)
    p = plan(params=110e6, attention_flops=a)
    # C = (6 N + A) D with D = 20 N
    assert p["compute_flops"] == pytest.approx((6 * 110e6 + a) * 20 * 110e6, rel=1e-12)
    assert p["attention_flops_per_token"] == a
    # the compute budget inverts exactly to the same model size
    assert plan(compute_flops=p["compute_flops"], attention_flops=a)["params"] == pytest.approx(110e6, rel=1e-9)
    # without attention the plan is Chinchilla's, unchanged
    assert plan(compute_flops=p["compute_flops"])["params"] == pytest.approx((p["compute_flops"] / 120) ** 0.5)
    assert "attention" in format_plan(p) and "attention" not in format_plan(plan(params=110e6))
    with pytest.raises(InputError):
        plan(params=1e6, attention_flops=-1)


def test_long_encoder_recipe_counts_its_window():
    recipe = load_recipe(RECIPE)
    windowed = recipe_attention_flops_per_token(recipe)
    # per token: 12 L d (2w + 1), plus the [CLS] row and column: 2 (T - 513) pairs over T tokens
    assert windowed == pytest.approx(12 * 12 * 768 * (513 + 2 * (4096 - 513) / 4096), rel=1e-12)
    pattern = ("attention_window", "global_tokens")
    recipe.model.config = {k: v for k, v in recipe.model.config.items() if k not in pattern}
    full = recipe_attention_flops_per_token(recipe)
    assert full == 12 * 12 * 768 * 4096
    assert full / windowed > 7  # at 4096 tokens the window does an eighth of full attention's work


def test_plan_cli_takes_the_recipes_model_length_and_pattern(capsys):
    from hfpipe.cli import main
    from hfpipe.plan import recipe_parameter_count

    assert main(["plan", "--recipe", str(RECIPE)]) == 0
    out = capsys.readouterr().out
    recipe = load_recipe(RECIPE)
    expected = plan(params=recipe_parameter_count(recipe), attention_flops=recipe_attention_flops_per_token(recipe))
    assert f"A = {expected['attention_flops_per_token']:.3g} FLOPs per token" in out
    assert f"{expected['compute_flops']:.3g} FLOPs (C = (6 N + A) D)" in out
    assert 100e6 < recipe_parameter_count(recipe) < 150e6  # BERT-base's shape with RoPE: no position table


def test_plan_cli_refuses_a_recipe_that_pretrains_nothing(capsys):
    from hfpipe.cli import main

    assert main(["plan", "--recipe", str(RECIPE.parents[1] / "finetune" / "glue-sst2.yaml")]) == 2
    assert "expected a pretraining recipe" in capsys.readouterr().err


def _wikipedia_parquet(path: Path, count: int = 300) -> Path:
    """Wikipedia's parquet columns, with documents of a few hundred words from the embedded corpus."""
    from hfpipe.data.embedded_corpus import embedded_corpus

    words = " ".join(embedded_corpus(300_000)).split()
    rng = random.Random(0)
    texts = [" ".join(words[start:start + rng.randint(80, 400)])
             for start in (rng.randrange(len(words) - 400) for _ in range(count))]
    pq.write_table(pa.table({"id": [str(i) for i in range(count)],
                             "url": [f"https://en.wikipedia.org/wiki?curid={i}" for i in range(count)],
                             "title": [f"Article {i}" for i in range(count)], "text": texts}), path)
    return path


@pytest.mark.slow
def test_long_encoder_recipe_runs_as_written_with_the_window(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "hfpipe", "pretrain", str(RECIPE), "--smoke", "--output-dir", str(out),
         "--max-steps", "1", "--train-file", str(_wikipedia_parquet(tmp_path / "wikipedia.parquet"))],
        capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    config = json.loads((out / "config.json").read_text())
    assert (config["attention_window"], config["global_tokens"]) == (8, 1)

    # The trained model on a smoke-length block (64 tokens) takes the blocked path, which agrees
    # with the dense masked one.
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(out).eval()
    stack = model.model.encoder
    length = load_recipe(RECIPE, smoke=True).objective.max_seq_length
    assert uses_blocked_path(stack, length, length, 0)
    ids = torch.randint(5, model.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(0))
    logits = {}
    for implementation in ("auto", "dense"):
        stack.pattern_implementation = implementation
        with torch.no_grad():
            logits[implementation] = model(input_ids=ids).logits
    assert (logits["auto"] - logits["dense"]).abs().max() < 1e-4
