"""CUDA-only checks (marker ``gpu``: skipped without CUDA, see conftest.py): bf16 autocast, the
flash SDPA kernel, torch.compile and QLoRA in 4-bit on the GPU. bench/gpu.sh runs them."""

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
