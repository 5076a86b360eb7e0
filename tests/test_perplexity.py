"""Sliding-window perplexity: exact on short text, every token scored once on long text."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

import hfpipe
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
