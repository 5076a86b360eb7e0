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


# ---------------------------------------------------------------- --device / --dtype (hfpipe/device.py)
def test_auto_device_is_the_best_available_and_explicit_cpu_is_cpu():
    from hfpipe.device import resolve_device

    mps = torch.backends.mps.is_available()
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--device"):
        resolve_device("tpu")


def test_run_precision_applies_on_accelerators_only():
    from hfpipe.device import inference_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert inference_dtype(cpu, "auto", "bf16") == torch.float32  # float32 on CPU unless asked
    assert inference_dtype(cpu, "bfloat16", "no") == torch.bfloat16  # ... and as asked when asked
    assert inference_dtype(cuda, "auto", "no") == torch.float32
    assert inference_dtype(cuda, "auto", None) == torch.float32
    assert inference_dtype(cuda, "auto", "fp16") == torch.float16
    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported():
        assert inference_dtype(cuda, "auto", "bf16") == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_one_exit_2_line_before_loading(tmp_path, capsys):
    missing = tmp_path / "not-a-model"  # were it loaded first, the error would name the folder instead
    assert main(["generate", str(missing), "--prompt", "w3", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hfpipe: error: --device cuda: no CUDA device")


def test_folder_without_config_is_an_input_error(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt", "w3", "--device", "cpu"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_cpu_device_leaves_outputs_and_precision_unchanged(tmp_path, model_and_tokenizer, capsys):
    """A checkpoint whose run trained in bf16 still generates in float32 on CPU, token for token
    as the in-memory model does."""
    from hfpipe.generate import load_generator

    model, tokenizer = model_and_tokenizer
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "recipe.yaml").write_text("train:\n  mixed_precision: bf16\n")
    options = generation_kwargs(max_new_tokens=12)
    expected = generate(model, tokenizer, PROMPTS, **options)
    loaded, loaded_tokenizer = load_generator(str(tmp_path), device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32 and next(loaded.parameters()).device.type == "cpu"
    assert generate(loaded, loaded_tokenizer, PROMPTS, **options) == expected
    assert main(["generate", str(tmp_path), "--prompt", PROMPTS[0], "--max-new-tokens", "12", "--device", "cpu",
                 "--no-stream"]) == 0
    assert capsys.readouterr().out.strip() == f"{PROMPTS[0]}{expected[0]}".strip()


def test_a_prompt_that_overruns_the_position_table_is_one_line_naming_it(tmp_path, model_and_tokenizer, capsys):
    model, tokenizer = model_and_tokenizer
    limit = model.config.max_position_embeddings
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("w3 w4\n" + " ".join(["w5"] * (limit - 4)) + "\n")  # the second: limit - 4 tokens
    assert main(["generate", str(tmp_path), "--prompt-file", str(prompts), "--max-new-tokens", "4"]) == 0
    capsys.readouterr()
    assert main(["generate", str(tmp_path), "--prompt-file", str(prompts), "--max-new-tokens", "5"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the weights' loading bar
    assert error.startswith(f"hfpipe: error: --prompt-file {prompts}: prompt 2 ")
    assert f"is {limit - 4} tokens; with --max-new-tokens 5 it needs {limit + 1} positions, the model has {limit}" \
        in error
