"""CUDA-only checks (marker ``gpu``: skipped without CUDA, see conftest.py): bf16 autocast, the
flash SDPA kernel, torch.compile, QLoRA in 4-bit on the GPU, and the inference verbs (generate,
in-context scoring, perplexity) on CUDA against their CPU results. bench/gpu.sh runs them."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

import hfpipe

pytestmark = pytest.mark.gpu
VOCAB = 512
AUTO = {"encoder": AutoModelForMaskedLM, "decoder": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}


def _model(family, **overrides):
    torch.manual_seed(0)
    config = hfpipe.config_for(family, "tiny", vocab_size=VOCAB, pad_token_id=0, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, **overrides)
    return AUTO[family].from_config(config).cuda()


def _batch(family, batch=4, length=64):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (batch, length), generator=g).cuda()
    if family == "seq2seq":
        return {"input_ids": ids, "labels": torch.randint(5, VOCAB, (batch, length // 4), generator=g).cuda()}
    labels = ids.clone()
    if family == "encoder":
        labels[torch.rand(ids.shape, generator=g).cuda() > 0.15] = -100
    return {"input_ids": ids, "labels": labels}


@pytest.mark.parametrize("family", ["encoder", "decoder", "seq2seq"])
def test_bf16_autocast_loss_and_gradients_match_fp32(family):
    model, batch = _model(family), _batch(family)
    loss32 = model(**batch).loss
    loss32.backward()
    grads32 = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss16 = model(**batch).loss
    loss16.backward()
    grads16 = [p.grad for p in model.parameters() if p.grad is not None]
    assert torch.isfinite(loss16) and abs(loss16.item() - loss32.item()) < 2e-2 * loss32.item()
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in grads32]),
                                                   torch.cat([g.flatten() for g in grads16]), dim=0)
    assert cosine > 0.99


@pytest.mark.parametrize("family", ["encoder", "decoder"])
def test_unpadded_batches_run_on_the_flash_kernel(family):
    """No attention mask (packed or unpadded input): the flash kernel alone must be able to run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, batch = _model(family).to(torch.bfloat16), _batch(family)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if the call needs another kernel
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_torch_compile_gives_the_eager_loss_and_gradients():
    model, batch = _model("decoder"), _batch("decoder")
    eager = model(**batch).loss
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model)(**batch).loss
    compiled.backward()
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("family", ["encoder", "decoder", "seq2seq"])
def test_training_step_makes_no_host_sync(family):
    """Forward and backward of a padded training batch (mask given, fused LM loss, bf16
    autocast) never wait for the device (issue 15; tests/models/test_host_syncs.py on CPU)."""
    model, batch = _model(family).train(), _batch(family)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][1, 40:] = 0
    batch["num_items_in_batch"] = (batch["labels"] != -100).sum()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(**batch).loss.backward()  # warm-up: lazy CUDA initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


def test_qlora_trains_a_4bit_base_on_cuda(tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    from hfpipe.adapters import apply_peft, prepare_quantized
    from hfpipe.recipes import PeftSection

    _model("decoder").save_pretrained(tmp_path)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quant, device_map={"": 0})
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    model = apply_peft(prepare_quantized(model), PeftSection(method="lora", r=8))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = _batch("decoder")
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step(), optimizer.zero_grad()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < losses[0]
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


# ---------------------------------------------------------------- inference verbs on CUDA (hfpipe/device.py)
WORDS = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 3)]


def _word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _saved_decoder(path, mixed_precision=None):
    """A tiny hfpipe decoder + tokenizer saved on CPU, as a finished run leaves them."""
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=1,
                               max_position_embeddings=256)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    _word_tokenizer().save_pretrained(path)
    if mixed_precision:
        (path / "recipe.yaml").write_text(f"train:\n  mixed_precision: {mixed_precision}\n")
    return path


PROMPTS = ["w3 w4 w5 w6", "w7", "w100 w200 w300"]


def test_greedy_generation_on_cuda_equals_cpu_in_float32(tmp_path, capsys):
    from hfpipe.cli import main
    from hfpipe.generate import generate, generation_kwargs, load_generator

    path = _saved_decoder(tmp_path)
    options = generation_kwargs(max_new_tokens=32)
    texts = {}
    for device in ("cpu", "cuda"):
        model, tokenizer = load_generator(str(path), device=device, dtype="float32")
        assert next(model.parameters()).device.type == device
        texts[device] = generate(model, tokenizer, PROMPTS, **options)
    assert texts["cuda"] == texts["cpu"] and all(len(t.split()) == 32 for t in texts["cpu"])
    # the verb itself: auto picks CUDA here, and prints what the CPU computed
    assert main(["generate", str(path), "--prompt", PROMPTS[0], "--max-new-tokens", "32", "--no-stream",
                 "--dtype", "float32"]) == 0
    assert capsys.readouterr().out.strip() == (PROMPTS[0] + texts["cpu"][0]).strip()


def test_generation_runs_in_the_runs_bf16_on_cuda(tmp_path):
    from hfpipe.generate import generate, generation_kwargs, load_generator

    model, tokenizer = load_generator(str(_saved_decoder(tmp_path, "bf16")))  # auto, auto
    assert next(model.parameters()).dtype == torch.bfloat16 and next(model.parameters()).is_cuda
    texts = generate(model, tokenizer, PROMPTS, **generation_kwargs(max_new_tokens=16))
    assert all(len(t.split()) == 16 for t in texts)


@pytest.mark.parametrize("family", ["decoder", "seq2seq"])
def test_in_context_scores_on_cuda_equal_cpu(family):
    from hfpipe.device import place_model
    from hfpipe.icl import score_continuations

    tokenizer = _word_tokenizer()
    model = _model(family).cpu().eval()
    if family == "seq2seq":
        model.config.decoder_start_token_id = 0
    prompts = [" ".join(f"w{(7 * i + j) % 400 + 3}" for j in range(5 + 3 * i)) + " " for i in range(12)]
    one_token, two_tokens = ["w10", "w20"], ["w10 w11", "w20"]
    expected = {w: score_continuations(model, tokenizer, prompts, list(w)) for w in (tuple(one_token), tuple(two_tokens))}
    place_model(model, torch.device("cuda"))
    for words, cpu_scores in expected.items():
        cuda_scores = score_continuations(model, tokenizer, prompts, list(words))
        assert cuda_scores.shape == (12, 2)
        np.testing.assert_allclose(cuda_scores, cpu_scores, rtol=1e-4, atol=1e-4)
        assert (cuda_scores.argmax(-1) == cpu_scores.argmax(-1)).all()


def test_perplexity_on_cuda_equals_cpu():
    from hfpipe.perplexity import sliding_window_nll

    model = _model("decoder", max_position_embeddings=128).cpu().eval()
    ids = torch.randint(5, VOCAB, (1000,), generator=torch.Generator().manual_seed(3))
    cpu_nll, cpu_count = sliding_window_nll(model, ids, max_length=128, stride=64)
    cuda_nll, cuda_count = sliding_window_nll(model.cuda(), ids, max_length=128, stride=64)
    assert cuda_count == cpu_count == 999
    assert cuda_nll == pytest.approx(cpu_nll, rel=1e-3)
    bf16_nll, _ = sliding_window_nll(model.to(torch.bfloat16), ids, max_length=128, stride=64)
    assert bf16_nll == pytest.approx(cpu_nll, rel=2e-2)  # bf16 weights: within bf16's precision


def test_evaluate_perplexity_verb_on_cuda_equals_cpu(tmp_path):
    pytest.importorskip("datasets")  # the corpus loader needs it; the GPU image may not carry it
    import json
    from pathlib import Path

    from hfpipe.cli import main
    from hfpipe.tokenization import train_tokenizer

    tokenizer = train_tokenizer((f"w{i} w{i + 1} w{i + 2}." for i in range(300)), "decoder", vocab_size=300)
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer), max_position_embeddings=128,
                               eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "gpt-clm.yaml"
    metrics = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(["evaluate", str(recipe), "--smoke", "--model", str(tmp_path / "model"), "--output-dir", str(out),
                     "--device", device]) == 0
        metrics[device] = json.loads((out / "eval_results.json").read_text())
    assert metrics["cuda"]["eval_tokens"] == metrics["cpu"]["eval_tokens"]
    assert metrics["cuda"]["perplexity"] == pytest.approx(metrics["cpu"]["perplexity"], rel=1e-3)
