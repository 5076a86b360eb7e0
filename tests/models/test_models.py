"""Behaviour of the three families: padding, causality, KV cache, save/load, remote code."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import hfpipe
from remote_code import BLOCK_HFPIPE

VOCAB = 97
MODERN = dict(norm_type="rmsnorm", norm_position="pre", position_embedding_type="rope", gated_mlp=True,
              hidden_act="silu", use_bias=False, type_vocab_size=0)


def tiny(family, **overrides):
    torch.manual_seed(0)
    return hfpipe.config_for(family, "tiny", vocab_size=VOCAB, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, **overrides)


def build(auto_class, family, **overrides):
    return auto_class.from_config(tiny(family, **overrides)).eval()


LAYOUTS = {
    "encoder": [{}, MODERN],
    "decoder": [{}, MODERN],
    "seq2seq": [{}, dict(gated_mlp=True, hidden_act="gelu_new", tie_word_embeddings=False)],
}


def _forward(model, family, ids, mask):
    if family == "seq2seq":
        decoder_ids = torch.tensor([[0, 5, 6, 7]]).expand(ids.shape[0], -1)
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family, auto_class", [("encoder", AutoModelForMaskedLM), ("decoder", AutoModelForCausalLM),
                                                ("seq2seq", AutoModelForSeq2SeqLM)])
@pytest.mark.parametrize("layout", [0, 1], ids=["classic", "modern"])
def test_padding_does_not_change_real_positions(family, auto_class, layout):
    model = build(auto_class, family, **LAYOUTS[family][layout])
    ids = torch.randint(5, VOCAB, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        alone = _forward(model, family, ids, torch.ones_like(ids))
        with_padding = _forward(model, family, padded, mask)
    if family == "seq2seq":
        torch.testing.assert_close(alone, with_padding, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(alone, with_padding[:, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", [0, 1], ids=["gpt2", "modern"])
def test_decoder_never_sees_the_future(layout):
    model = build(AutoModelForCausalLM, "decoder", **LAYOUTS["decoder"][layout])
    ids = torch.randint(5, VOCAB, (2, 10))
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=0, rtol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-4


def test_seq2seq_decoder_never_sees_the_future():
    model = build(AutoModelForSeq2SeqLM, "seq2seq")
    ids = torch.randint(5, VOCAB, (2, 8))
    decoder_ids = torch.randint(5, VOCAB, (2, 7))
    changed = decoder_ids.clone()
    changed[:, 4] += 1
    with torch.no_grad():
        a = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        b = model(input_ids=ids, decoder_input_ids=changed).logits
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-4


@pytest.mark.parametrize("family, auto_class", [("decoder", AutoModelForCausalLM), ("seq2seq", AutoModelForSeq2SeqLM)])
@pytest.mark.parametrize("layout", [0, 1])
def test_generation_with_cache_equals_without(family, auto_class, layout):
    model = build(auto_class, family, **LAYOUTS[family][layout])
    ids = torch.randint(5, VOCAB, (2, 6))
    kwargs = dict(max_new_tokens=15, min_new_tokens=15, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


HEADS = {
    "encoder": [AutoModel, AutoModelForPreTraining, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                AutoModelForTokenClassification, AutoModelForQuestionAnswering],
    "decoder": [AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForQuestionAnswering],
    "seq2seq": [AutoModel, AutoModelForSeq2SeqLM],
}
CASES = [(family, auto) for family, autos in HEADS.items() for auto in autos]


def _outputs(model, family):
    ids = torch.tensor([[7, 8, 9, 10, 11], [12, 13, 14, 0, 0]])
    mask = (ids != 0).long()
    kwargs = dict(input_ids=ids, attention_mask=mask)
    if family == "seq2seq":
        kwargs["decoder_input_ids"] = torch.tensor([[0, 3, 4], [0, 5, 6]])
    with torch.no_grad():
        out = model(**kwargs)
    return [v for v in out.values() if torch.is_tensor(v)]


@pytest.mark.parametrize("family, auto_class", CASES, ids=[f"{f}-{a.__name__}" for f, a in CASES])
def test_save_load_round_trip_is_exact(tmp_path, family, auto_class):
    model = build(auto_class, family, pad_token_id=0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"hfpipe_{family}"
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel"}
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    for a, b in zip(_outputs(model, family), _outputs(reloaded, family)):
        assert torch.equal(a, b)


REMOTE = BLOCK_HFPIPE + textwrap.dedent(
    """
    import transformers
    folder, auto_name, family = sys.argv[1], sys.argv[2], sys.argv[3]
    model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.tensor([[7, 8, 9, 10, 11], [12, 13, 14, 0, 0]])
    kwargs = dict(input_ids=ids, attention_mask=(ids != 0).long())
    if family == "seq2seq":
        kwargs["decoder_input_ids"] = torch.tensor([[0, 3, 4], [0, 5, 6]])
    with torch.no_grad():
        out = model(**kwargs)
    print(json.dumps({"class": type(model).__name__,
                      "outputs": [v.tolist() for v in out.values() if torch.is_tensor(v)]}))
    """
)


@pytest.mark.parametrize(
    "family, auto_class",
    [("encoder", AutoModelForSequenceClassification), ("encoder", AutoModelForPreTraining),
     ("decoder", AutoModelForCausalLM), ("seq2seq", AutoModelForSeq2SeqLM)],
)
def test_checkpoint_loads_with_trust_remote_code_where_hfpipe_is_absent(tmp_path, family, auto_class):
    model = build(auto_class, family, pad_token_id=0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "blocks.py").is_file() and (tmp_path / "configuration.py").is_file()
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(tmp_path), auto_class.__name__, family],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class"] == type(model).__name__
    for a, b in zip(_outputs(model, family), remote["outputs"]):
        # float32 noise of another thread count: T5's init gives hidden states of order 1-10
        torch.testing.assert_close(a, torch.tensor(b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, auto_class", [("encoder", AutoModelForPreTraining), ("decoder", AutoModelForCausalLM),
                                                ("seq2seq", AutoModelForSeq2SeqLM)])
def test_gradient_checkpointing_gives_the_same_gradients(family, auto_class):
    ids = torch.randint(5, VOCAB, (2, 8))
    labels = ids if family != "seq2seq" else ids[:, :5]
    grads = []
    for checkpointing in (False, True):
        model = build(auto_class, family).train()
        if checkpointing:
            # transformers 5.24 renamed it activation checkpointing; earlier 5.x only has the old name
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids=ids, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family, auto_class", [("encoder", AutoModelForMaskedLM), ("decoder", AutoModelForCausalLM),
                                                ("seq2seq", AutoModelForSeq2SeqLM)])
def test_bfloat16_forward_is_close_to_float32(family, auto_class):
    model = build(auto_class, family)
    ids = torch.randint(5, VOCAB, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        full = _forward(model, family, ids, mask)
        half = _forward(model.to(torch.bfloat16), family, ids, mask)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.1


def test_sequence_classification_uses_last_real_token_for_decoders():
    model = build(AutoModelForSequenceClassification, "decoder", pad_token_id=0, num_labels=3)
    right = torch.tensor([[5, 6, 7, 0, 0]])
    left = torch.tensor([[0, 0, 5, 6, 7]])
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([[5, 6, 7]])).logits
        a = model(input_ids=right, attention_mask=(right != 0).long()).logits
        b = model(input_ids=left, attention_mask=(left != 0).long(),
                  position_ids=torch.tensor([[0, 0, 0, 1, 2]])).logits
    torch.testing.assert_close(plain, a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, b, atol=1e-5, rtol=1e-5)


def test_regression_head_for_one_label():
    model = build(AutoModelForSequenceClassification, "encoder", num_labels=1)
    out = model(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([2.5]))
    assert out.logits.shape == (1, 1)
    assert abs(out.loss.item() - (out.logits.item() - 2.5) ** 2) < 1e-5


def test_mean_pooling_reads_the_unpadded_tokens_only():
    model = build(AutoModelForSequenceClassification, "encoder", classifier_pooling="mean", num_labels=2)
    ids = torch.randint(5, VOCAB, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], dim=1).long()
    alone = model(input_ids=ids, attention_mask=torch.ones(1, 6, dtype=torch.long)).logits
    torch.testing.assert_close(model(input_ids=padded, attention_mask=mask).logits, alone)
    hidden = model.model(input_ids=ids).last_hidden_state
    expected = model.classifier(torch.tanh(model.model.pooler.dense(hidden.mean(dim=1))))
    torch.testing.assert_close(alone, expected)
    cls = build(AutoModelForSequenceClassification, "encoder", num_labels=2)
    cls.load_state_dict(model.state_dict())  # the same weights read [CLS] instead: other logits
    assert not torch.allclose(cls(input_ids=ids).logits, alone)
    with pytest.raises(ValueError, match="classifier_pooling must be 'cls' or 'mean'"):
        tiny("encoder", classifier_pooling="max")


def test_pretraining_loss_is_mlm_plus_nsp():
    model = build(AutoModelForPreTraining, "encoder")
    ids = torch.randint(5, VOCAB, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    nsp = torch.tensor([0, 1])
    out = model(input_ids=ids, labels=labels, next_sentence_label=nsp)
    mlm = torch.nn.functional.cross_entropy(out.prediction_logits[:, 3], ids[:, 3])
    nsp_loss = torch.nn.functional.cross_entropy(out.seq_relationship_logits, nsp)
    assert abs(out.loss.item() - (mlm + nsp_loss).item()) < 1e-5


def test_gradient_accumulation_normalisation_matches_one_big_batch():
    """With num_items_in_batch (what Trainer passes), two half batches sum to the full-batch loss."""
    model = build(AutoModelForCausalLM, "decoder")
    ids = torch.randint(5, VOCAB, (4, 8))
    labels = ids.clone()
    labels[0, 2:] = -100
    full = model(input_ids=ids, labels=labels).loss
    total = (labels[:, 1:] != -100).sum()
    halves = sum(model(input_ids=ids[i:i + 2], labels=labels[i:i + 2], num_items_in_batch=total).loss
                 for i in (0, 2))
    assert abs(full.item() - halves.item()) < 1e-5


@pytest.mark.parametrize("fused_lm_loss", [False, True], ids=["logits", "fused"])
@pytest.mark.parametrize("head", ["pretraining", "masked_lm"])
def test_sparse_prediction_gives_the_dense_loss_and_gradients(head, fused_lm_loss):
    """config.sparse_prediction runs the MLM head on the predicted positions only, in training;
    with the fused LM loss (lm_loss.py) training makes no logits at all."""
    import hfpipe

    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    auto = {"pretraining": AutoModelForPreTraining, "masked_lm": AutoModelForMaskedLM}[head]
    torch.manual_seed(0)
    config = hfpipe.config_for("encoder", "tiny", vocab_size=97, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, fused_lm_loss=False)
    dense = auto.from_config(config).train()
    sparse = auto.from_config(hfpipe.config_for("encoder", "tiny", vocab_size=97, hidden_dropout_prob=0.0,
                                                attention_probs_dropout_prob=0.0, sparse_prediction=True,
                                                fused_lm_loss=fused_lm_loss)).train()
    sparse.load_state_dict(dense.state_dict())
    ids = torch.randint(5, 97, (3, 16), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, -100)
    labels[:, ::5] = ids[:, ::5]
    extra = {"next_sentence_label": torch.tensor([0, 1, 0])} if head == "pretraining" else {}
    outs = [m(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(9), **extra) for m in (dense, sparse)]
    for out in outs:
        out.loss.backward()
    torch.testing.assert_close(outs[1].loss, outs[0].loss, atol=1e-6, rtol=1e-6)
    logits = outs[1].prediction_logits if head == "pretraining" else outs[1].logits
    if fused_lm_loss:
        assert logits is None
    else:
        assert logits.shape == (int((labels != -100).sum()), 97)
    for (name, a), b in zip(dense.named_parameters(), sparse.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)
    sparse.eval()
    assert sparse(input_ids=ids, labels=labels, **extra)[1].shape == (3, 16, 97)  # dense outside training
