"""Cloze probing (`hfpipe probe`): ranks and precision@k against distributions set by hand."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from hfpipe.errors import InputError
from hfpipe.probe import ClozeScorer, load_probe_model, probe, read_statements

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "capital", "of", "france", "germany", "is", "paris", "berlin", "london", "new", "york", "city",
         "a", "in", "."] + [f"w{i}" for i in range(25)]
VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS)}


def word_tokenizer(bert: bool) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if bert:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])])
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def write_facts(path, rows):
    path.write_text("".join(json.dumps({"text": t, "answer": a}) + "\n" for t, a in rows))
    return path


FACTS = [("the capital of france is [MASK] .", "paris"),
         ("the capital of germany is [MASK] .", "berlin"),
         ("w3 is a city in [MASK] .", "london")]


def test_bad_statement_files_name_the_line(tmp_path):
    cases = {"two blanks": ('{"text": "[MASK] is [MASK]", "answer": "a"}', "exactly one [MASK]"),
             "no json": ("{text: 1}", "not JSON"),
             "no answer": ('{"text": "a [MASK]"}', '"answer"')}
    for name, (line, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text('{"text": "the [MASK] .", "answer": "a"}\n' + line + "\n")
        with pytest.raises(InputError, match=re.escape(f"{path.name}:2: ") + ".*" + re.escape(message)):
            read_statements(path)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A BERT masked LM whose prediction at any position is its output bias: the transform's
    LayerNorm is zeroed, so the decoder sees zeros and the logits are the bias, set by hand."""
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=32))
    bias = torch.linspace(0, -len(VOCAB) + 1, len(VOCAB))  # token 0 likeliest, then 1, 2, ...
    order = ["london", "w0", "w1", "paris", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "berlin"]
    ranked = [VOCAB[w] for w in order] + [i for i in range(len(VOCAB)) if i not in {VOCAB[w] for w in order}]
    with torch.no_grad():
        model.cls.predictions.transform.LayerNorm.weight.zero_()
        model.cls.predictions.transform.LayerNorm.bias.zero_()
        model.cls.predictions.bias.copy_(bias[torch.argsort(torch.tensor(ranked))])
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder)
    word_tokenizer(bert=True).save_pretrained(folder)
    return folder


def test_encoder_ranks_the_answer_over_the_vocabulary(bert_dir, tmp_path):
    model, tokenizer = load_probe_model(str(bert_dir), device="cpu")
    metrics, rows = probe(model, tokenizer, read_statements(write_facts(tmp_path / "f.jsonl", FACTS)))
    # hand-set order: london 1st, paris 4th, berlin 13th
    assert [r["rank"] for r in rows] == [4, 13, 1]
    assert rows[2]["top10"][:4] == ["london", "w0", "w1", "paris"]
    assert metrics["single_token_precision@1"] == pytest.approx(1 / 3)
    assert metrics["single_token_precision@10"] == pytest.approx(2 / 3)
    assert metrics["not_scored"] == 0


def test_encoder_reports_multi_token_answers_as_not_scored(bert_dir, tmp_path):
    model, tokenizer = load_probe_model(str(bert_dir), device="cpu")
    facts = write_facts(tmp_path / "f.jsonl", FACTS + [("w1 is in [MASK] .", "new york")])
    metrics, rows = probe(model, tokenizer, read_statements(facts))
    assert rows[-1]["rank"] is None and metrics["not_scored"] == 1 and metrics["all_count"] == 3


def test_a_checkpoint_without_its_mlm_head_is_refused(tmp_path):
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "m")
    word_tokenizer(bert=True).save_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match="no trained language-model head"):
        load_probe_model(str(tmp_path / "m"), device="cpu")


def test_decoder_ranks_next_tokens_and_multi_token_answers_by_likelihood(tmp_path):
    """GPT-2 with ln_f's weight zeroed and its bias b: every position's logits are wte @ b."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(VOCAB), n_embd=16, n_layer=1, n_head=2, n_positions=32))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(3 * model.transformer.wte.weight[VOCAB["paris"]])
    model.save_pretrained(tmp_path / "gpt")
    word_tokenizer(bert=False).save_pretrained(tmp_path / "gpt")
    model, tokenizer = load_probe_model(str(tmp_path / "gpt"), device="cpu")
    facts = FACTS + [("the city is [MASK] .", "new york")]
    metrics, rows = probe(model, tokenizer, read_statements(write_facts(tmp_path / "f.jsonl", facts)))
    log_probs = (model.transformer.wte.weight @ model.transformer.ln_f.bias).log_softmax(-1)
    for row in rows[:3]:
        expected = int((log_probs > log_probs[VOCAB[row["answer"]]]).sum()) + 1
        assert row["kind"] == "single-token" and row["rank"] == expected
    assert rows[0]["rank"] == 1  # paris is set likeliest
    # multi-token: among the file's answers by summed log-likelihood (the logits are the same everywhere)
    candidates = {a: sum(log_probs[VOCAB[w]].item() for w in a.split()) for a in ["paris", "berlin", "london", "new york"]}
    assert rows[3]["rank"] == 1 + sum(v > candidates["new york"] for v in candidates.values())
    assert rows[3]["top10"] == sorted(candidates, key=lambda a: -candidates[a])
    assert metrics["all_count"] == 4


def test_seq2seq_scores_the_token_after_the_first_sentinel(tmp_path):
    """T5 reads the text with <extra_id_0> at the blank; the probe's log-probabilities equal one
    direct forward with decoder input [start, <extra_id_0>]."""
    import hfpipe
    from transformers import AutoModelForSeq2SeqLM

    vocab = {**VOCAB, "</s>": len(VOCAB), "<extra_id_0>": len(VOCAB) + 1}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="</s>",
                                        unk_token="[UNK]", extra_special_tokens=["<extra_id_0>"])
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(hfpipe.config_for(
        "seq2seq", "tiny", vocab_size=len(vocab), pad_token_id=0, eos_token_id=vocab["</s>"],
        decoder_start_token_id=0)).eval()
    statement = read_statements(write_facts(tmp_path / "f.jsonl", FACTS[:1]))[0]
    scorer = ClozeScorer(model, tokenizer, "seq2seq")
    inputs = tokenizer("the capital of france is <extra_id_0> .", return_tensors="pt")
    with torch.no_grad():
        direct = model(**inputs, decoder_input_ids=torch.tensor([[0, vocab["<extra_id_0>"]]])).logits[0, -1]
    torch.testing.assert_close(scorer.next_token(statement), direct.log_softmax(-1))


@pytest.mark.slow
def test_probe_cli_writes_results_and_refuses_to_overwrite(bert_dir, tmp_path):
    facts = write_facts(tmp_path / "facts.jsonl", FACTS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "hfpipe", "probe", str(bert_dir), "--file", str(facts),
                               "--output-dir", str(tmp_path / "out"), *args], capture_output=True, text=True, env=env)

    first, again = run(), run()
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "probe_results.json").read_text())
    assert results["single_token_precision@1"] == pytest.approx(1 / 3)
    assert len((tmp_path / "out" / "probe_predictions.jsonl").read_text().splitlines()) == 3
    assert "precision@10" in first.stdout
    assert again.returncode == 2 and "earlier probe" in again.stderr


def test_an_encoder_probe_of_only_multi_token_answers_says_why_instead_of_a_table_of_nan(bert_dir, tmp_path):
    facts = write_facts(tmp_path / "f.jsonl", [("w1 is in [MASK] .", "new york"), ("w2 is in [MASK] .", "new york")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "hfpipe", "probe", str(bert_dir), "--file", str(facts),
                             "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    lines = [line for line in result.stderr.splitlines() if line.startswith("hfpipe")]  # (after the load's bar)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "none of its 2 statements" in lines[0] and "several tokens" in lines[0]
    assert "nan" not in result.stdout.lower()
    model, tokenizer = load_probe_model(str(bert_dir), device="cpu")
    metrics, _ = probe(model, tokenizer, read_statements(write_facts(tmp_path / "g.jsonl", FACTS)))
    assert not any(key.startswith("multi_token_precision") for key in metrics)  # no empty group's NaN row
