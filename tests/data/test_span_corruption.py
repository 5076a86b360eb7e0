"""T5 span corruption: T5's length formula, the noise mask's statistics, and exact reconstruction."""

from math import comb

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfpipe.data.collators import DataCollatorForSpanCorruption, span_corruption_lengths
from hfpipe.data.span_corruption import noise_span_counts, random_spans_noise_mask
from hfpipe.errors import InputError

from .conftest import T5_SENTINELS, make_t5_tokenizer

EOS, PAD, FIRST_WORD, EXTRA_ID_0 = 1, 0, 3, 299


@pytest.mark.parametrize(
    ("inputs_length", "expected"),
    [(512, (568, 114)), (128, (141, 29)), (568, (630, 126)), (256, (284, 58)), (1024, (1137, 229))],
)
def test_lengths_match_t5_random_spans_helper(inputs_length, expected):
    assert span_corruption_lengths(inputs_length, 0.15, 3.0) == expected


def test_lengths_apply_t5_noise_density_half_adjustment():
    # 767 raw tokens: round(383.5) = 384 noise (half to even) in 128 spans, inputs
    # 383 + 128 + 1 = 512, targets 384 + 128 + 1 = 513 > 512, so T5 takes one raw token
    # and one target position off: (766, 512).
    assert span_corruption_lengths(512, 0.5, 3.0) == (766, 512)


def test_noise_mask_counts_and_alternation_per_row():
    rng = np.random.default_rng(0)
    mask = random_spans_noise_mask(568, 0.15, 3.0, rng, batch_size=256)
    assert mask.shape == (256, 568) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(axis=1), 85)  # round(568 * .15)
    span_starts = mask & ~np.pad(mask[:, :-1], ((0, 0), (1, 0)))
    np.testing.assert_array_equal(span_starts.sum(axis=1), 28)  # round(85 / 3)
    assert not mask[:, 0].any()  # the first span is non-noise
    assert mask[:, -1].all()  # spans alternate and end with a noise span, as T5


def test_noise_span_lengths_are_uniform_compositions():
    # 10 noise tokens in 3 spans: P(first span = j) = C(10 - j - 1, 1) / C(9, 2) for j in 1..8.
    rng = np.random.default_rng(1)
    n = 20000
    mask = random_spans_noise_mask(40, 0.25, 10 / 3, rng, batch_size=n)
    assert noise_span_counts(40, 0.25, 10 / 3) == (10, 3)
    first_start = mask.argmax(axis=1)
    first_length = (~mask[np.arange(n)[:, None], first_start[:, None] + np.arange(9)]).argmax(axis=1)
    observed = np.bincount(first_length, minlength=9)[1:9] / n
    expected = np.array([comb(10 - j - 1, 1) / comb(9, 2) for j in range(1, 9)])
    np.testing.assert_allclose(observed, expected, atol=0.012)
    # The first non-noise span: 30 tokens in 3 spans, mean length 10.
    assert abs(first_start.mean() - 10.0) < 0.25


def _reconstruct(input_ids: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """Put each labelled span back in place of its sentinel; drop EOS and padding."""
    originals = []
    for inputs, targets in zip(input_ids.tolist(), labels.tolist()):
        spans, current = {}, None
        for token in targets:
            if token in (EOS, -100):
                break
            if token > EXTRA_ID_0 - len(T5_SENTINELS):
                current = spans.setdefault(token, [])
            else:
                current.append(token)
        original = []
        for token in inputs:
            if token == EOS:
                break
            original.extend(spans.pop(token) if token in spans else [token])
        assert not spans, "every sentinel of the targets appears in the inputs"
        originals.append(original)
    return originals


def _raw_examples(batch_size: int, length: int, seed: int = 0) -> list[dict]:
    words = np.random.default_rng(seed).integers(FIRST_WORD, EXTRA_ID_0 - 99, size=(batch_size, length))
    return [{"input_ids": row.tolist()} for row in words]


def test_collator_shapes_reconstruction_and_t5_layout(t5_tokenizer):
    collator = DataCollatorForSpanCorruption(t5_tokenizer, input_length=512, seed=0)
    examples = _raw_examples(8, 568)
    batch = collator(examples)
    assert batch["input_ids"].shape == (8, 512) and batch["attention_mask"].shape == (8, 512)
    assert batch["labels"].shape == (8, 114) and batch["decoder_input_ids"].shape == (8, 114)
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["attention_mask"].eq(1).all()  # no padding: T5's lengths fill the inputs exactly
    assert _reconstruct(batch["input_ids"], batch["labels"]) == [e["input_ids"] for e in examples]
    assert batch["input_ids"][:, -1].eq(EOS).all() and batch["labels"][:, -1].eq(EOS).all()
    # Sentinels count down from <extra_id_0> = 299, in order, in both inputs and labels.
    for row in torch.cat([batch["input_ids"], batch["labels"]], dim=1):
        sentinels = row[row > 199].tolist()
        assert sentinels == list(range(299, 299 - 28, -1)) * 2
    assert batch["labels"][:, 0].eq(EXTRA_ID_0).all()
    # Per example: 85 noise tokens (labels minus 28 sentinels and EOS) and 28 spans.
    np.testing.assert_array_equal((batch["labels"] < 200).sum(dim=1) - 1, 85)
    assert batch["decoder_input_ids"][:, 0].eq(PAD).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1])


def test_seed_and_torch_rng_make_masks_reproducible(t5_tokenizer):
    examples = _raw_examples(4, 141)
    first = DataCollatorForSpanCorruption(t5_tokenizer, input_length=128, seed=3)(examples)
    again = DataCollatorForSpanCorruption(t5_tokenizer, input_length=128, seed=3)(examples)
    assert torch.equal(first["input_ids"], again["input_ids"])
    unseeded = DataCollatorForSpanCorruption(t5_tokenizer, input_length=128)
    torch.manual_seed(7)
    a = unseeded(examples)["labels"]
    torch.manual_seed(7)
    assert torch.equal(a, unseeded(examples)["labels"])
    assert not torch.equal(a, unseeded(examples)["labels"])  # the next batch draws new masks


def test_wrong_raw_length_is_an_input_error(t5_tokenizer):
    collator = DataCollatorForSpanCorruption(t5_tokenizer, input_length=512)
    with pytest.raises(InputError, match=r"example 1: input_ids holds 512 tokens, expected exactly 568"):
        collator(_raw_examples(1, 568) + _raw_examples(1, 512))


def test_tokenizer_without_t5_sentinels_is_an_input_error():
    shuffled = make_t5_tokenizer(sentinels=[f"<extra_id_{i}>" for i in range(100)])  # <extra_id_0> lowest
    with pytest.raises(InputError, match="lacks T5 sentinels"):
        DataCollatorForSpanCorruption(shuffled, input_length=128)
    few = make_t5_tokenizer(sentinels=[f"<extra_id_{i}>" for i in range(9, -1, -1)])  # 10 < 28 spans
    with pytest.raises(InputError, match="lacks T5 sentinels"):
        DataCollatorForSpanCorruption(few, input_length=512)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    input_length=st.integers(3, 160),
    noise_density=st.floats(0.02, 0.9),
    mean_noise_span_length=st.floats(1.0, 8.0),
    batch_size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_property_collator_invariants(
    t5_tokenizer, input_length, noise_density, mean_noise_span_length, batch_size, seed
):
    raw_length, targets_length = span_corruption_lengths(input_length, noise_density, mean_noise_span_length)
    num_noise, num_spans = noise_span_counts(raw_length, noise_density, mean_noise_span_length)
    if num_spans > len(T5_SENTINELS):
        with pytest.raises(InputError, match="lacks T5 sentinels"):
            DataCollatorForSpanCorruption(t5_tokenizer, noise_density, mean_noise_span_length, input_length)
        return
    collator = DataCollatorForSpanCorruption(
        t5_tokenizer, noise_density, mean_noise_span_length, input_length, seed=seed
    )
    examples = _raw_examples(batch_size, raw_length, seed)
    batch = collator(examples)
    assert batch["input_ids"].shape == (batch_size, input_length)
    assert batch["labels"].shape == (batch_size, targets_length)
    assert _reconstruct(batch["input_ids"], batch["labels"]) == [e["input_ids"] for e in examples]
    real_inputs = raw_length - num_noise + num_spans + 1
    assert batch["attention_mask"].sum(dim=1).eq(real_inputs).all()
    assert batch["input_ids"][:, real_inputs:].eq(PAD).all()  # padding only after T5's 0.5 adjustment
    assert batch["labels"].ne(-100).sum(dim=1).eq(num_noise + num_spans + 1).all()


def test_collator_trains_a_tiny_t5_with_trainer(t5_tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import T5Config, T5ForConditionalGeneration, Trainer, TrainingArguments

    torch.manual_seed(0)
    config = T5Config(vocab_size=300, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                      pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    collator = DataCollatorForSpanCorruption(t5_tokenizer, input_length=32)
    train = Dataset.from_list(_raw_examples(16, collator.raw_tokens_length))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, use_cpu=True,
                             report_to=[], save_strategy="no", logging_steps=1, seed=0)
    model = T5ForConditionalGeneration(config)
    batch = collator(train.to_list()[:4])
    assert torch.equal(batch["decoder_input_ids"], model._shift_right(batch["labels"]))  # T5's own shift
    result = Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    assert result.global_step == 3 and 4.0 < result.training_loss < 8.0  # untrained: about ln(300) = 5.7


def _documents_block(lengths: list[int], raw_length: int, seed: int) -> tuple[list[int], list[list[int]]]:
    """A raw block as hfpipe.pretrain packs it with document_mask: documents of ``lengths``, each
    followed by EOS, then a last document cut at ``raw_length``; returns (block, documents)."""
    rng = np.random.default_rng(seed)
    documents = [rng.integers(FIRST_WORD, 200, n).tolist() for n in lengths]
    used = sum(lengths) + len(lengths)
    documents.append(rng.integers(FIRST_WORD, 200, raw_length - used).tolist())
    block = [token for document in documents[:-1] for token in (*document, EOS)] + documents[-1]
    assert len(block) == raw_length
    return block, documents


def _split_by_positions(ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> list[list[int]]:
    """One row -> its documents' real tokens, cut where positions restart at 0."""
    pieces = []
    for token, position, real in zip(ids.tolist(), positions.tolist(), valid.tolist()):
        if not real:
            break
        if position == 0:
            pieces.append([])
        pieces[-1].append(token)
    return pieces


def test_document_mask_corrupts_each_document_on_its_own(t5_tokenizer):
    collator = DataCollatorForSpanCorruption(t5_tokenizer, input_length=64, document_mask=True, seed=0)
    raw = collator.raw_tokens_length
    # an empty document (EOS EOS) and a one-token document are kept apart correctly too
    block_a, docs_a = _documents_block([30, 0, 1, 12], raw, seed=1)
    block_b, docs_b = _documents_block([50], raw, seed=2)
    docs_a = [d for d in docs_a if d]  # the empty document yields nothing
    batch = collator([block_a, block_b])
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids", "position_ids",
                          "decoder_position_ids"}
    for row, docs in ((0, docs_a), (1, docs_b)):
        inputs = _split_by_positions(batch["input_ids"][row], batch["position_ids"][row], batch["attention_mask"][row])
        targets = _split_by_positions(batch["labels"][row], batch["decoder_position_ids"][row],
                                      batch["labels"][row] != -100)
        decoder_inputs = _split_by_positions(batch["decoder_input_ids"][row], batch["decoder_position_ids"][row],
                                             batch["labels"][row] != -100)
        assert len(inputs) == len(targets) == len(docs)  # document k on both sides
        for doc, doc_inputs, doc_targets, doc_decoder in zip(docs, inputs, targets, decoder_inputs):
            assert doc_inputs[-1] == EOS and doc_targets[-1] == EOS  # each document ends with EOS on both sides
            assert _reconstruct(torch.tensor([doc_inputs]), torch.tensor([doc_targets])) == [doc]
            # T5's own corruption of a block of len(doc) tokens: counts, and sentinels from <extra_id_0>
            if len(doc) >= 2:
                noise, spans = noise_span_counts(len(doc), 0.15, 3.0)
                assert len(doc_inputs) == len(doc) - noise + spans + 1 and len(doc_targets) == noise + spans + 1
                assert doc_targets[0] == EXTRA_ID_0
            else:
                assert doc_inputs == doc + [EOS] and doc_targets == [EOS]
            # per-document shift: the start token, never the previous document's last label
            assert doc_decoder == [PAD, *doc_targets[:-1]]
    # the lengths vary: padded to the batch's longest, padding continues the last document
    real = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(real.max())
    short = int(real.argmin())
    assert batch["input_ids"][short, real[short]:].eq(PAD).all()
    assert batch["position_ids"][short, real[short]:].ne(0).all()


def test_document_mask_with_one_document_is_t5_span_corruption(t5_tokenizer):
    # A block without separators is one document: the same inputs and targets as T5's collator,
    # from the same generator, with positions 0..n-1 on both sides.
    plain = DataCollatorForSpanCorruption(t5_tokenizer, input_length=64, seed=3)
    documents = DataCollatorForSpanCorruption(t5_tokenizer, input_length=64, document_mask=True, seed=3)
    block = np.random.default_rng(4).integers(FIRST_WORD, 200, plain.raw_tokens_length).tolist()
    expected, got = plain([block]), documents([block])
    for key in ("input_ids", "attention_mask", "labels", "decoder_input_ids"):
        assert torch.equal(got[key], expected[key]), key
    assert got["position_ids"].tolist() == [list(range(64))]
    assert got["decoder_position_ids"].tolist() == [list(range(plain.targets_length))]
