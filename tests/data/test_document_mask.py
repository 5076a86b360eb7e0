"""Document masking of packed blocks: a block of several documents, collated with
``document_mask=True``, gives every document the logits and loss it gets on its own."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

import hfpipe  # noqa: F401  (registers the Auto classes)
from hfpipe.data.collators import DataCollatorForBertPretraining, DataCollatorForCausalLM
from hfpipe.data.packing import document_position_ids, pack_sequences
from hfpipe.data.span_corruption import DataCollatorForSpanCorruption
from hfpipe.data.span_masking import DataCollatorForSpanMasking
from hfpipe.errors import InputError
from hfpipe.models.configuration import config_for

TOL = 1e-5


def test_document_position_ids_hand_worked():
    sep = 9
    ids = torch.tensor([[4, 5, 9, 6, 9, 7, 8, 8], [9, 1, 2, 3, 9, 9, 4, 4]])
    assert document_position_ids(ids, sep).tolist() == [
        [0, 1, 2, 0, 1, 0, 1, 2],
        [0, 0, 1, 2, 3, 0, 0, 1],
    ]


def documents(lengths, low, high, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (n,), generator=generator).tolist() for n in lengths]


def model(auto, family, vocab_size, **extra):
    config = config_for(family, "tiny", vocab_size=vocab_size, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, pad_token_id=0, bos_token_id=None, eos_token_id=1, **extra)
    torch.manual_seed(0)
    return auto.from_config(config).eval()


@pytest.mark.parametrize("extra", [
    dict(),  # GPT-2: learned absolute positions
    dict(position_embedding_type="rope"),
    dict(position_embedding_type="rope", attention_window=3),  # documents and a sliding window together
])
def test_causal_lm_packed_block_equals_documents_one_by_one(t5_tokenizer, extra):
    eos = t5_tokenizer.eos_token_id
    docs = documents([7, 12, 5], 3, 200)
    block = pack_sequences({"input_ids": docs}, block_size=27, eos_token_id=eos)["input_ids"]  # 24 tokens + EOS x3
    assert block.shape == (1, 27)
    collator = DataCollatorForCausalLM(t5_tokenizer, document_mask=True)
    batch = collator([block[0].tolist()])
    assert batch["position_ids"].tolist() == [list(range(8)) + list(range(13)) + list(range(6))]
    # the first token of documents 2 and 3 is not predicted from the previous document's EOS
    assert (batch["labels"][0, [8, 21]] == -100).all() and (batch["labels"][0, 1:8] != -100).all()

    lm = model(AutoModelForCausalLM, "decoder", 300, **extra)
    with torch.no_grad():
        packed = lm(**batch)
        start, total, count = 0, 0.0, 0
        for doc in docs:
            ids = torch.tensor([doc + [eos]])
            alone = lm(input_ids=ids, labels=ids)
            end = start + ids.shape[1]
            assert (packed.logits[0, start:end] - alone.logits[0]).abs().max() < TOL
            total, count, start = total + alone.loss * (ids.shape[1] - 1), count + ids.shape[1] - 1, end
    assert packed.loss == pytest.approx(float(total / count), abs=TOL)

    # without the document mask the later documents see the earlier ones
    with torch.no_grad():
        leaky = lm(input_ids=batch["input_ids"], labels=batch["labels"]).logits
    assert (leaky[0, 8:] - packed.logits[0, 8:]).abs().max() > 1e-3


@pytest.mark.parametrize("collator_class", [DataCollatorForBertPretraining, DataCollatorForSpanMasking])
@pytest.mark.parametrize("extra", [dict(), dict(attention_window=2), dict(position_embedding_type="rope")])
def test_mlm_packed_block_equals_documents_one_by_one(bert_tokenizer, collator_class, extra):
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    docs = documents([9, 4, 14], 5, 600, seed=1)
    # RoBERTa's FULL-SENTENCES framing (hfpipe.objectives.masking.framed_blocks): [CLS] d1 [SEP] d2 [SEP] d3 [SEP]
    packed_docs = pack_sequences({"input_ids": docs}, block_size=30, eos_token_id=sep)["input_ids"][0]
    block = [cls, *packed_docs.tolist()]
    collator = collator_class(bert_tokenizer, document_mask=True, mlm_probability=0.3, seed=0)
    batch = collator([block, block])
    assert batch["position_ids"][0].tolist() == list(range(11)) + list(range(5)) + list(range(15))
    assert (batch["labels"] != -100).any()

    encoder = model(AutoModelForMaskedLM, "encoder", len(bert_tokenizer), **extra)
    with torch.no_grad():
        packed = encoder(**batch)
        start, total, count = 0, 0.0, 0
        for width in (11, 5, 15):
            piece = {k: batch[k][:, start:start + width] for k in ("input_ids", "token_type_ids", "labels")}
            alone = encoder(**piece)
            assert (packed.logits[:, start:start + width] - alone.logits).abs().max() < TOL
            labelled = int((piece["labels"] != -100).sum())
            if labelled:
                total, count = total + alone.loss * labelled, count + labelled
            start += width
    assert packed.loss == pytest.approx(float(total / count), abs=TOL)


def test_mlm_document_mask_refuses_sentence_pairs(bert_tokenizer):
    collator = DataCollatorForBertPretraining(bert_tokenizer, document_mask=True)
    pair = {"input_ids": [2, 7, 3, 8, 3], "token_type_ids": [0, 0, 0, 1, 1], "next_sentence_label": 0}
    with pytest.raises(InputError, match="sentence pairs"):
        collator([pair])


def test_without_document_mask_nothing_changes(bert_tokenizer, t5_tokenizer):
    block = [2, 7, 3, 8, 3]
    assert "position_ids" not in DataCollatorForBertPretraining(bert_tokenizer, seed=0)([block])
    assert "position_ids" not in DataCollatorForCausalLM(t5_tokenizer)([[5, 1, 6, 1]])
    span = DataCollatorForSpanCorruption(t5_tokenizer, input_length=16, seed=0)
    batch = span([list(range(3, 3 + span.raw_tokens_length))])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}


def _spans(positions: torch.Tensor, valid: torch.Tensor) -> list[tuple[int, int]]:
    """One row's documents as (start, end), cut where positions restart at 0; padding left out."""
    starts = [i for i, p in enumerate(positions.tolist()) if p == 0] + [int(valid.sum())]
    return list(zip(starts[:-1], starts[1:]))


@pytest.mark.parametrize("extra", [
    dict(),  # T5: relative position bias in both stacks
    dict(attention_window=2),  # documents and a sliding window together (LED-like)
])
def test_span_corruption_packed_block_equals_documents_one_by_one(t5_tokenizer, extra):
    eos = t5_tokenizer.eos_token_id
    collator = DataCollatorForSpanCorruption(t5_tokenizer, input_length=48, document_mask=True, seed=0)
    raw = collator.raw_tokens_length
    # as hfpipe.pretrain packs with document_mask: EOS between documents, the last one cut by the block
    blocks = [pack_sequences({"input_ids": documents(lengths, 3, 200, seed)}, block_size=raw,
                             eos_token_id=eos)["input_ids"][0].tolist()
              for lengths, seed in (([20, 9, 4, 40], 2), ([31, 40], 3))]
    batch = collator(blocks)

    t5 = model(AutoModelForSeq2SeqLM, "seq2seq", 300, **extra)
    with torch.no_grad():
        packed = t5(**batch)
        total, count, pieces = 0.0, 0, 0
        for row in range(2):
            encoder_spans = _spans(batch["position_ids"][row], batch["attention_mask"][row])
            decoder_spans = _spans(batch["decoder_position_ids"][row], batch["labels"][row] != -100)
            assert len(encoder_spans) == len(decoder_spans) >= 2
            for (a, b), (c, d) in zip(encoder_spans, decoder_spans):
                # alone: the plain path (no positions, no mask), the model shifting the labels itself
                labels = batch["labels"][row : row + 1, c:d]
                alone = t5(input_ids=batch["input_ids"][row : row + 1, a:b], labels=labels)
                assert (packed.logits[row, c:d] - alone.logits[0]).abs().max() < TOL
                total, count, pieces = total + alone.loss * (d - c), count + (d - c), pieces + 1
    assert pieces >= 5
    assert packed.loss == pytest.approx(float(total / count), abs=TOL)
    # training (dropout is 0 here): the fused loss, no shortcut for rows of one document
    with torch.no_grad():
        assert t5.train()(**batch).loss == pytest.approx(float(total / count), abs=TOL)
    t5.eval()

    # without the document mask (the same tokens) the later documents see the earlier ones
    with torch.no_grad():
        leaky = t5(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels", "decoder_input_ids")}).logits
    c, d = _spans(batch["decoder_position_ids"][0], batch["labels"][0] != -100)[1]
    assert (leaky[0, c:d] - packed.logits[0, c:d]).abs().max() > 1e-3


def test_seq2seq_document_positions_go_in_pairs(t5_tokenizer):
    t5 = model(AutoModelForSeq2SeqLM, "seq2seq", 300)
    ids = torch.tensor([[5, 6, 1]])
    with pytest.raises(ValueError, match="both or neither"):
        t5(input_ids=ids, labels=ids, position_ids=torch.tensor([[0, 1, 2]]))


def test_span_corruption_recipe_keeps_eos_between_documents(t5_tokenizer):
    # hfpipe.pretrain packs span corruption with EOS separators only when document_mask is on:
    # they are what the collator splits at (T5 itself packs without separators).
    from types import SimpleNamespace

    from datasets import Dataset

    from hfpipe.objectives.span_corruption import SpanCorruptionObjectiveSection

    texts = [" ".join(f"w{(7 * i + j) % 190}" for j in range(n)) for i, n in enumerate([30, 12, 25, 40, 18, 33])]
    corpus = {"train": Dataset.from_dict({"text": texts})}
    eos = t5_tokenizer.eos_token_id
    for document_mask in (False, True):
        recipe = SimpleNamespace(data=SimpleNamespace(text_column="text", preprocessing_num_workers=None))
        objective = SpanCorruptionObjectiveSection(name="span_corruption", max_seq_length=48, noise_density=0.15,
                                                   mean_noise_span_length=3.0, document_mask=document_mask)
        examples = objective.examples(recipe, corpus, t5_tokenizer)
        block = examples.train[0]["input_ids"]
        assert (eos in block) == document_mask
        assert examples.collator.document_mask == document_mask
        batch = examples.collator([block])
        assert ("decoder_position_ids" in batch) == document_mask
        if document_mask:  # each separator starts a new document on both sides
            assert int((batch["position_ids"] == 0).sum()) == block.count(eos) + (block[-1] != eos)
            assert int((batch["decoder_position_ids"] == 0).sum()) == block.count(eos) + (block[-1] != eos)
