"""Text-to-text SQuAD (T5's format): windows and their targets, window scores, best-window answers."""

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoModelForSeq2SeqLM, PreTrainedTokenizerFast

import hfpipe
from hfpipe.tasks.generative_qa import (
    UNANSWERABLE,
    _mean_log_probability,
    best_window_answers,
    map_generative_features,
)
from hfpipe.tasks.squad import SQUAD_FEATURES

WORDS = [f"w{i}" for i in range(40)]
CONTEXT = " ".join(WORDS[:30])  # "w0 w1 ... w29": one token per word


@pytest.fixture(scope="module")
def tokenizer():
    """WordLevel, one token per word, T5's templates: "$A </s>" and "$A </s> $B </s>"."""
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "question:", "context:", UNANSWERABLE, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def squad(*rows):
    """rows: (id, answer word index or None)."""
    return datasets.Dataset.from_list([
        {"id": qid, "title": "t", "context": CONTEXT, "question": "w30 w31",
         "answers": {"text": [f"w{a} w{a + 1}"], "answer_start": [len(" ".join(WORDS[:a])) + 1]} if a is not None
         else {"text": [], "answer_start": []}}
        for qid, a in rows
    ], features=SQUAD_FEATURES)


def _decoded(tokenizer, features):
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in features["input_ids"]]


@pytest.mark.parametrize("version_2", [False, True])
def test_windows_hold_the_question_and_learn_the_answer_only_where_it_is_whole(tokenizer, version_2):
    # 16 tokens: "question: w30 w31 </s>" (4) + "</s>" (1) leave 11 for "context: w0 ... w29" (31 tokens),
    # read in windows that overlap by 4 tokens.
    examples = squad(("a", 12))
    features = map_generative_features(examples, tokenizer, max_seq_length=16, doc_stride=4, training=True,
                                       version_2=version_2)
    every = map_generative_features(examples, tokenizer, max_seq_length=16, doc_stride=4, training=False,
                                    version_2=version_2)
    inputs, targets = _decoded(tokenizer, features), _decoded(tokenizer, {"input_ids": features["labels"]})
    assert len(every) == 4 and all(len(ids) <= 16 for ids in every["input_ids"])
    assert all(text.startswith("question: w30 w31 ") for text in _decoded(tokenizer, every))
    holding = [text for text in _decoded(tokenizer, every) if " w12 w13" in text]
    assert holding and len(holding) < 4
    if version_2:  # every window trains: the answer where it is whole, "unanswerable" elsewhere
        assert len(features) == 4
        assert sorted(targets) == sorted(["w12 w13"] * len(holding) + [UNANSWERABLE] * (4 - len(holding)))
    else:  # v1 never says "unanswerable": windows without the answer are left out
        assert inputs == holding and targets == ["w12 w13"] * len(holding)
    assert all(labels[-1] == tokenizer.eos_token_id for labels in features["labels"])


def test_a_question_without_an_answer_is_unanswerable_in_every_window(tokenizer):
    features = map_generative_features(squad(("n", None)), tokenizer, max_seq_length=16, doc_stride=4,
                                       training=True, version_2=True)
    assert _decoded(tokenizer, {"input_ids": features["labels"]}) == [UNANSWERABLE] * 4


def test_the_best_scoring_window_answers_and_unanswerable_abstains():
    predictions, no_answer = best_window_answers(
        ["a", "b", "c"],
        ["a", "a", "a", "b", "b", "c"],
        [-2.0, -0.5, -0.5, -0.1, -3.0, -1.0],
        ["w1", " w2 w3 ", "w4", "Unanswerable", "w5", "w6"],
    )
    assert predictions == {"a": "w2 w3", "b": "", "c": "w6"}  # a: ties keep the first best window
    assert no_answer == {"a": 0.0, "b": 1.0, "c": 0.0}


def test_window_score_is_the_mean_log_probability_of_the_generation_up_to_eos(tokenizer):
    torch.manual_seed(0)
    config = hfpipe.config_for("seq2seq", "tiny", vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1,
                               decoder_start_token_id=0)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    with torch.no_grad():  # an EOS likely early in some rows: its logit raised
        model.lm_head.weight[1] += 0.05 * torch.randn_like(model.lm_head.weight[1]) + model.lm_head.weight.mean(0)
    batch = tokenizer(["question: w1 w2 context: w3 w4 w5", "question: w9 context: w10"], return_tensors="pt",
                      padding=True)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, num_beams=1, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0, eos_token_id=1)
    scores = _mean_log_probability(model, out.sequences, out.scores, eos_token_id=1)
    # reference: one teacher-forced pass over the generated tokens
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=out.sequences[:, :-1]).logits.log_softmax(-1)
    generated = out.sequences[:, 1:]
    for row in range(2):
        tokens = generated[row].tolist()
        length = tokens.index(1) + 1 if 1 in tokens else len(tokens)
        expected = logits[row, torch.arange(length), generated[row, :length]].mean()
        torch.testing.assert_close(scores[row], expected, atol=1e-5, rtol=1e-5)
