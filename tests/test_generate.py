"""Decoding options of `hfpipe generate` (through transformers' generate on hfpipe models)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import hfpipe
from hfpipe.cli import main
from hfpipe.errors import InputError
from hfpipe.generate import generate, generation_kwargs

WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(37)]


@pytest.fixture
def model_and_tokenizer():
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=len(WORDS), pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return AutoModelForCausalLM.from_config(config).eval(), tokenizer


PROMPTS = ["w3 w4 w5", "w7"]


def test_temperature_zero_and_top_k_one_equal_greedy(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    greedy = generate(model, tokenizer, PROMPTS, **generation_kwargs(max_new_tokens=12))
    assert generate(model, tokenizer, PROMPTS, **generation_kwargs(max_new_tokens=12, temperature=0)) == greedy
    top1 = generate(model, tokenizer, PROMPTS, seed=5, **generation_kwargs(max_new_tokens=12, top_k=1, do_sample=True))
    assert top1 == greedy


def test_sampling_is_reproducible_with_a_seed(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    options = generation_kwargs(max_new_tokens=20, temperature=1.5, top_p=0.95)
    assert options["do_sample"]
    a = generate(model, tokenizer, PROMPTS, seed=3, **options)
    b = generate(model, tokenizer, PROMPTS, seed=3, **options)
    c = generate(model, tokenizer, PROMPTS, seed=4, **options)
    assert a == b and a != c


def test_top_p_never_samples_outside_the_nucleus(model_and_tokenizer):
    """Hand-built next-token distribution: w0 0.5, w1 0.3, w2 0.15, the rest share 0.05."""
    model, tokenizer = model_and_tokenizer
    probs = torch.full((len(WORDS),), 0.05 / (len(WORDS) - 6))
    probs[:3] = 0.0  # specials never
    first = WORDS.index("w0")
    probs[first:first + 3] = torch.tensor([0.5, 0.3, 0.15])
    logits = probs.clamp_min(1e-12).log()
    model.lm_head.register_forward_hook(lambda module, inputs, out: torch.zeros_like(out) + logits)
    texts = generate(model, tokenizer, ["w9"] * 16, seed=0,
                     **generation_kwargs(max_new_tokens=25, top_p=0.7, do_sample=True))
    tokens = [t for text in texts for t in text.split()]
    assert len(tokens) == 16 * 25
    assert set(tokens) <= {"w0", "w1"}  # 0.5 + 0.3 >= 0.7: the nucleus is exactly these two
    assert 0.5 < tokens.count("w0") / len(tokens) < 0.75  # renormalised: 0.5 / 0.8 = 0.625


def test_beam_search_and_repetition_penalty_run_through_the_cli(tmp_path, model_and_tokenizer, capsys):
    model, tokenizer = model_and_tokenizer
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w3 w4\nw5\n")
    assert main(["generate", str(tmp_path), "--prompt-file", str(prompts), "--num-beams", "3",
                 "--repetition-penalty", "1.3", "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("-" * 40) == 1 and out.startswith("w3 w4")


def test_bad_generation_options_are_input_errors():
    with pytest.raises(InputError):
        generation_kwargs(top_p=1.5)
    with pytest.raises(InputError):
        generation_kwargs(max_new_tokens=0)


def test_chat_prompts_go_through_the_chat_template(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    options = generation_kwargs(max_new_tokens=8)
    with pytest.raises(InputError, match="no chat template"):
        generate(model, tokenizer, PROMPTS, chat=True, **options)
    tokenizer.chat_template = ("{% for m in messages %}w9 {{ m['content'] }} w10 {% endfor %}"
                               "{% if add_generation_prompt %}w11{% endif %}")
    templated = [f"w9 {p} w10 w11" for p in PROMPTS]
    assert generate(model, tokenizer, PROMPTS, chat=True, **options) == generate(model, tokenizer, templated, **options)
