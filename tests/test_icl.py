"""In-context scoring: label words ranked by the model's own likelihood."""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from hfpipe.icl import draw_demonstrations, fill, score_continuations
from hfpipe.tasks.glue import get_glue_task

WORDS = ["<pad>", "</s>", "<unk>", "Review", ":", "good", "bad", "film", "Sentiment", "great", "terrible", "a"]


@pytest.fixture
def tokenizer():
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def naive_log_likelihood(model, prefix_ids, word_ids):
    ids = torch.tensor([prefix_ids + word_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    return sum(log_probs[len(prefix_ids) - 1 + i, t].item() for i, t in enumerate(word_ids))


def test_decoder_scores_equal_a_direct_computation_and_pick_the_likelier_word(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=1, n_head=2)).eval()
    prompts = ["Review: good film Sentiment: ", "Review: bad film Sentiment: "]
    words = ["great", "terrible a"]
    scores = score_continuations(model, tokenizer, prompts, words)
    assert scores.shape == (2, 2)
    for i, prompt in enumerate(prompts):
        prefix = tokenizer(prompt.rstrip(" "), add_special_tokens=False)["input_ids"]
        for j, word in enumerate(words):
            expected = naive_log_likelihood(model, prefix, tokenizer(" " + word, add_special_tokens=False)["input_ids"])
            assert scores[i, j] == pytest.approx(expected, abs=1e-5)
    # one-token words take the one-forward path: the same numbers as the direct computation
    mixed = [*prompts, "good Sentiment: "]  # lengths differ: right padding
    single = score_continuations(model, tokenizer, mixed, ["great", "terrible"])
    for i, prompt in enumerate(mixed):
        prefix = tokenizer(prompt.rstrip(" "), add_special_tokens=False)["input_ids"]
        for j, word in enumerate(["great", "terrible"]):
            expected = naive_log_likelihood(model, prefix, tokenizer(" " + word, add_special_tokens=False)["input_ids"])
            assert single[i, j] == pytest.approx(expected, abs=1e-5)
    # hand-checked: zero the (tied) output layer and add +10 to "great": every position then
    # predicts "great" with probability e^10 / (e^10 + V - 1)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    bias = torch.zeros(len(WORDS))
    bias[WORDS.index("great")] = 10.0
    model.lm_head.register_forward_hook(lambda module, inputs, out: out + bias)
    scores = score_continuations(model, tokenizer, prompts, ["great", "terrible"])
    assert (scores.argmax(-1) == 0).all()
    assert scores[0, 0] == pytest.approx(np.log(np.exp(10) / (np.exp(10) + len(WORDS) - 1)), abs=1e-4)


def test_seq2seq_scores_equal_a_direct_computation(tokenizer):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, d_ff=16, num_layers=1,
                                                num_heads=2, decoder_start_token_id=0)).eval()
    scores = score_continuations(model, tokenizer, ["Review: good film Sentiment: "], ["great", "terrible"])
    source = torch.tensor([tokenizer("Review: good film Sentiment:", add_special_tokens=False)["input_ids"] + [1]])
    for j, word in enumerate(["great", "terrible"]):
        labels = torch.tensor([tokenizer(" " + word, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=source, labels=labels).loss.item() * labels.shape[1]
        assert scores[0, j] == pytest.approx(-loss, abs=1e-4)


def test_balanced_demonstrations_and_template_filling():
    spec = get_glue_task("sst2")
    train = Dataset.from_dict({"sentence": [f"s{i}" for i in range(20)], "label": [0] * 15 + [1] * 5,
                               "idx": list(range(20))})
    demos = draw_demonstrations(train, 4, True, random.Random(0), 2)
    assert sorted(d["label"] for d in demos) == [0, 0, 1, 1]
    row = {"sentence": "a fine film", "label": 1, "idx": 0}
    assert fill("Review: {text}\nSentiment: {label}", row, spec, "great") == "Review: a fine film\nSentiment: great"
    assert fill("Review: {text}\nSentiment: {label}", row, spec, None) == "Review: a fine film\nSentiment: "


def test_demonstrations_are_distinct_and_a_too_long_query_keeps_its_end(tokenizer):
    train = Dataset.from_dict({"sentence": [f"s{i}" for i in range(20)], "label": [0] * 15 + [1] * 5,
                               "idx": list(range(20))})
    for seed in range(20):
        demos = draw_demonstrations(train, 8, True, random.Random(seed), 2)
        assert len({d["idx"] for d in demos}) == 8 and sorted(d["label"] for d in demos) == [0] * 4 + [1] * 4
    # a prompt longer than the model's 16 positions: only its last tokens are scored against
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()
    long_prompt = "Review: " + "good film " * 20 + "Sentiment: "
    scores = score_continuations(model, tokenizer, [long_prompt], ["great"], max_length=16)
    prefix = tokenizer(long_prompt.rstrip(" "), add_special_tokens=False)["input_ids"][-14:]  # 16 - word - 1
    expected = naive_log_likelihood(model, prefix, tokenizer(" great", add_special_tokens=False)["input_ids"])
    assert scores[0, 0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_icl_on_cuda_without_cuda_is_one_exit_2_line(tmp_path, capsys):
    from pathlib import Path

    from hfpipe.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "icl" / "glue-sst2.yaml"
    assert main(["icl", str(recipe), "--model", str(tmp_path / "nothing"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hfpipe: error: --device cuda: no CUDA device")
