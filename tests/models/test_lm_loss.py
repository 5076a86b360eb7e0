"""The chunked linear + cross-entropy (hfpipe/models/lm_loss.py) and the LM heads that use it.

The reference everywhere is the dense path: ``blocks.cross_entropy(F.linear(...))``, or the
same model with ``fused_lm_loss=False``. Float32 comparisons use assert_close's float32
defaults (rtol 1.3e-6, atol 1e-5).
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForSeq2SeqLM

import hfpipe
from hfpipe.models.blocks import cross_entropy, lm_logits_and_loss, normalise
from hfpipe.models.lm_loss import default_num_chunks, linear_cross_entropy

VOCAB, HIDDEN = 103, 24


def padded_batch(seed=0, batch=3, length=9):
    """hidden (B, T, C), labels (B, T): right padding (-100) of different lengths, and a few
    -100 inside the rows (SFT prompts, MLM's unpredicted positions)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, HIDDEN, generator=generator)
    labels = torch.randint(0, VOCAB, (batch, length), generator=generator)
    for row, real in enumerate((length, length - 3, 2)[:batch]):
        labels[row, real:] = -100
    labels[0, 1] = labels[1, 4] = -100
    return hidden, labels


def head_weights(bias: bool, seed=1):
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(VOCAB, HIDDEN, generator=generator) * 0.3).requires_grad_()
    b = (torch.randn(VOCAB, generator=generator) * 0.1).requires_grad_() if bias else None
    return weight, b


def dense_and_fused(hidden, labels, weight, bias, num_items_in_batch, num_chunks):
    """(loss, grads of hidden/weight/bias) of the dense reference and of the fused loss."""
    results = []
    for fused in (False, True):
        h = hidden.detach().clone().requires_grad_()
        params = [weight] + ([bias] if bias is not None else [])
        for p in params:
            p.grad = None
        if fused:
            total = linear_cross_entropy(h, weight, bias, labels, num_chunks=num_chunks)
            loss = normalise(total, (labels != -100).sum(), num_items_in_batch)
        else:
            loss = cross_entropy(F.linear(h, weight, bias), labels, num_items_in_batch)
        loss.backward()
        results.append((loss.detach(), h.grad, weight.grad.clone(), None if bias is None else bias.grad.clone()))
    return results


@pytest.mark.parametrize("num_chunks", [1, 4, 5, 27, 40])  # 27 rows: 4, 5 do not divide; 40 > rows
@pytest.mark.parametrize("num_items", [None, 31], ids=["mean", "num_items_in_batch"])
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
def test_loss_and_gradients_equal_the_dense_computation(num_chunks, num_items, bias):
    hidden, labels = padded_batch()
    weight, b = head_weights(bias)
    count = None if num_items is None else torch.tensor(num_items)
    dense, fused = dense_and_fused(hidden, labels, weight, b, count, num_chunks)
    for name, d, f in zip(("loss", "hidden", "weight", "bias"), dense, fused):
        if d is None:
            assert f is None
            continue
        torch.testing.assert_close(f, d, msg=lambda m: f"{name}: {m}")
    # rows with label -100 get no gradient at all
    assert (fused[1][labels == -100] == 0).all()


def test_default_chunking_follows_the_vocabulary_to_width_ratio():
    assert default_num_chunks(768, 50257) == 66  # GPT-2: chunk logits about as large as the hidden states
    assert default_num_chunks(768, 50257, num_rows=8 * 1024) == 16  # but chunks of 512 rows at least
    assert default_num_chunks(768, 30522, num_rows=632) == 1  # BERT's predicted positions: one chunk
    assert default_num_chunks(HIDDEN, VOCAB) == 5
    hidden, labels = padded_batch()
    weight, b = head_weights(True)
    dense, fused = dense_and_fused(hidden, labels, weight, b, None, None)
    for d, f in zip(dense, fused):
        torch.testing.assert_close(f, d)


def test_all_labels_ignored_gives_what_cross_entropy_gives():
    """No labelled token: the mean is 0/0 = NaN, as F.cross_entropy's (and today's dense head's);
    over Trainer's count the loss is 0. Gradients are 0 either way, never NaN."""
    hidden, labels = padded_batch()
    labels = torch.full_like(labels, -100)
    weight, b = head_weights(True)
    for count in (None, torch.tensor(5)):
        dense, fused = dense_and_fused(hidden, labels, weight, b, count, 4)
        if count is None:
            assert dense[0].isnan() and fused[0].isnan()
        else:
            assert dense[0] == 0 and fused[0] == 0
        for d, f in zip(dense[1:], fused[1:]):
            assert torch.equal(d, torch.zeros_like(d)) and torch.equal(f, torch.zeros_like(f))


def test_bfloat16_autocast_matches_the_dense_head():
    """Under autocast the matmuls run in bfloat16 as F.linear's would, the softmax in float32;
    float32 master weights get float32 gradients. bf16 rounding of the logits is the tolerance."""
    hidden, labels = padded_batch()
    weight, b = head_weights(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense, fused = dense_and_fused(hidden, labels, weight, b, torch.tensor(20), 3)
    assert fused[0].dtype == torch.float32
    torch.testing.assert_close(fused[0], dense[0], rtol=1e-3, atol=1e-3)
    for d, f in zip(dense[1:], fused[1:]):
        assert f.dtype == d.dtype == torch.float32
        torch.testing.assert_close(f, d, rtol=2e-2, atol=2e-3)


def test_a_hooked_projection_keeps_the_dense_path():
    """A forward hook (or a peft wrapper, a quantized Linear) changes what the head computes:
    the fused path, which reads the weight directly, must step aside."""
    config = hfpipe.config_for("decoder", "tiny", vocab_size=VOCAB)
    model = AutoModelForCausalLM.from_config(config).train()
    hidden, labels = padded_batch()
    projection = torch.nn.Linear(HIDDEN, VOCAB)
    projection.register_forward_hook(lambda module, args, out: out * 2)
    logits, loss = lm_logits_and_loss(model, projection, hidden, labels)
    torch.testing.assert_close(loss, cross_entropy(projection(hidden), labels))
    assert logits is not None


# --- every LM head: the fused training loss equals the dense one --------------------------------

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MODERN = dict(position_embedding_type="rope", norm_type="rmsnorm", gated_mlp=True, use_bias=False, hidden_act="silu")
# case -> (family, Auto class, config overrides, batch kind)
HEADS = {
    "decoder/clm": ("decoder", AutoModelForCausalLM, {}, "clm"),
    "decoder/sft": ("decoder", AutoModelForCausalLM, {}, "sft"),
    "decoder-modern/clm": ("decoder", AutoModelForCausalLM, MODERN, "clm"),
    "encoder/mlm": ("encoder", AutoModelForMaskedLM, {}, "mlm"),
    "encoder/mlm_sparse_prediction": ("encoder", AutoModelForMaskedLM, {"sparse_prediction": True}, "mlm"),
    "encoder/mlm_nsp": ("encoder", AutoModelForPreTraining, {}, "mlm_nsp"),
    "seq2seq-v1.0/span_corruption": ("seq2seq", AutoModelForSeq2SeqLM, {}, "seq2seq"),
    "seq2seq-v1.1/text_to_text": (
        "seq2seq", AutoModelForSeq2SeqLM, dict(gated_mlp=True, hidden_act="gelu_new", tie_word_embeddings=False),
        "seq2seq",
    ),
}


def head_batch(kind: str) -> dict[str, torch.Tensor]:
    """A right-padded batch of 3 rows of lengths 12, 8, 5 with the head's labels."""
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(5, VOCAB, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate((12, 8, 5)):
        ids[row, length:], mask[row, length:] = 0, 0
    batch = {"input_ids": ids, "attention_mask": mask}
    if kind in ("clm", "sft"):
        labels = ids.masked_fill(mask == 0, -100)
        if kind == "sft":
            labels[:, :4] = -100  # the prompt
        batch["labels"] = labels
    elif kind in ("mlm", "mlm_nsp"):
        chosen = (torch.rand(ids.shape, generator=generator) < 0.3) & (mask == 1)
        chosen[2, 1] = True
        batch["labels"] = torch.where(chosen, ids, -100)
        batch["input_ids"] = torch.where(chosen, 4, ids)
        if kind == "mlm_nsp":
            batch["next_sentence_label"] = torch.tensor([0, 1, 0])
    else:
        labels = torch.randint(2, VOCAB, (3, 6), generator=generator)
        labels[1, 4:] = labels[2, 2:] = -100
        batch["labels"] = labels
    return batch


def build_pair(case: str):
    family, auto_class, overrides, _ = HEADS[case]
    models = []
    for fused in (False, True):
        torch.manual_seed(0)
        config = hfpipe.config_for(family, "tiny", vocab_size=VOCAB, pad_token_id=0, fused_lm_loss=fused,
                                   **NO_DROPOUT, **overrides)
        models.append(auto_class.from_config(config))
    models[1].load_state_dict(models[0].state_dict())
    return models


@pytest.mark.parametrize("num_items", [None, 17], ids=["mean", "num_items_in_batch"])
@pytest.mark.parametrize("case", sorted(HEADS))
def test_each_head_trains_on_the_dense_loss_and_gradients(case, num_items):
    dense, fused = build_pair(case)
    batch = head_batch(HEADS[case][3])
    if num_items is not None:
        batch["num_items_in_batch"] = torch.tensor(num_items)
    outputs = []
    for model in (dense, fused):
        out = model.train()(**batch)
        out.loss.backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss)
    logits_field = "prediction_logits" if HEADS[case][1] is AutoModelForPreTraining else "logits"
    assert getattr(outputs[1], logits_field) is None  # no (tokens x vocab) tensor in training
    assert getattr(outputs[0], logits_field) is not None
    for (name, a), b in zip(dense.named_parameters(), fused.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, msg=lambda m: f"{name}: {m}")
    # evaluation: the logits, exactly as the dense model gives them
    dense.eval(), fused.eval()
    with torch.no_grad():
        expected, got = dense(**batch), fused(**batch)
    assert torch.equal(getattr(got, logits_field), getattr(expected, logits_field))
    assert torch.equal(got.loss, expected.loss)


@pytest.mark.parametrize("case", ["decoder/clm", "encoder/mlm", "seq2seq-v1.0/span_corruption"])
def test_tied_output_embedding_gets_the_head_gradient(case):
    """With tied weights the fused loss's weight gradient lands on the input embedding, which is
    the same Parameter: its gradient is the dense model's (embedding lookup + head together)."""
    dense, fused = build_pair(case)
    batch = head_batch(HEADS[case][3])
    grads = []
    for model in (dense, fused):
        embedding = model.get_input_embeddings().weight
        assert model.get_output_embeddings().weight is embedding
        model.train()(**batch).loss.backward()
        grads.append(embedding.grad)
    # rows of tokens that never occur as inputs only get the head's part: a nonzero check of it
    assert grads[1][VOCAB - 1].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0])
