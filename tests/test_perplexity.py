"""Sliding-window perplexity: exact on short text, every token scored once on long text."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import hfpipe
from hfpipe.cli import main
from hfpipe.errors import InputError
from hfpipe.perplexity import sliding_window_nll


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=50, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(config).eval()


def test_short_text_equals_the_direct_computation(model):
    ids = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0, :-1]
    direct = F.cross_entropy(logits, ids[1:], reduction="sum").item()
    nll, count = sliding_window_nll(model, ids, max_length=32, stride=16)
    assert count == 29 and nll == pytest.approx(direct, rel=1e-6)


@pytest.mark.parametrize("stride", [1, 7, 16, 31])
def test_long_text_scores_every_token_once_and_windows_match_by_hand(model, stride):
    ids = torch.randint(0, 50, (100,), generator=torch.Generator().manual_seed(2))
    nll, count = sliding_window_nll(model, ids, max_length=32, stride=stride)
    assert count == 99
    # by hand: token p (p >= 1) is scored in the first window that reaches it, with that window's context
    expected = 0.0
    scored = set()
    with torch.no_grad():
        for begin in range(0, 100, stride):
            end = min(begin + 32, 100)
            log_probs = torch.log_softmax(model(input_ids=ids[begin:end][None]).logits[0], -1)
            for p in range(max(begin + 1, 1), end):
                if p not in scored:
                    expected -= log_probs[p - begin - 1, ids[p]].item()
                    scored.add(p)
            if end == 100:
                break
    assert nll == pytest.approx(expected, rel=1e-5)
    assert math.exp(nll / count) > 1


def test_stride_must_leave_context(model):
    with pytest.raises(InputError):
        sliding_window_nll(model, torch.arange(10), max_length=8, stride=8)


# ---------------------------------------------------------------- --device / --dtype of `hfpipe evaluate`
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("recipe", ["pretrain/gpt-clm.yaml", "finetune/glue-sst2.yaml"])
def test_evaluate_on_cuda_without_cuda_is_one_exit_2_line(tmp_path, capsys, recipe):
    assert main(["evaluate", str(RECIPES / recipe), "--model", str(tmp_path / "nothing"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hfpipe: error: --device cuda: no CUDA device")


def test_perplexity_on_cpu_stays_float32_whatever_the_run_precision(tmp_path, capsys):
    """A bf16 recipe evaluated on CPU scores in float32: the same numbers as --dtype float32, and the
    same as sliding_window_nll on the float32 model."""
    from hfpipe.tokenization import train_tokenizer

    tokenizer = train_tokenizer((f"w{i} w{i + 1} w{i + 2}." for i in range(300)), "decoder", vocab_size=300)
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer), max_position_embeddings=128,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model_dir = tmp_path / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    runs = []
    for options in (["--set", "train.mixed_precision=bf16"], ["--dtype", "float32"]):
        out = tmp_path / f"out{len(runs)}"
        assert main(["evaluate", str(RECIPES / "pretrain/gpt-clm.yaml"), "--smoke", "--model", str(model_dir),
                     "--output-dir", str(out), "--device", "cpu", *options]) == 0
        runs.append(json.loads((out / "eval_results.json").read_text()))
    assert "(cpu, float32)" in capsys.readouterr().out
    assert runs[0] == runs[1] and runs[0]["eval_tokens"] > 100
