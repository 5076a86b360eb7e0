"""Packing into blocks (with an exact dropped-token count), prefix LM and causal LM collators."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from hfpipe.data.collators import DataCollatorForCausalLM, DataCollatorForPrefixLM
from hfpipe.data.packing import pack_dataset, pack_sequences
from hfpipe.errors import InputError

PAD, EOS = 0, 1


def test_pack_sequences_hand_worked():
    batch = {"input_ids": [[11, 12, 13], [14, 15], [16, 17, 18, 19]]}
    # Stream with EOS after each document: 11 12 13 1 14 15 1 16 17 18 19 1 (12 tokens).
    packed = pack_sequences(batch, block_size=4, eos_token_id=EOS)["input_ids"]
    assert packed.tolist() == [[11, 12, 13, 1], [14, 15, 1, 16], [17, 18, 19, 1]]
    packed = pack_sequences(batch, block_size=5, eos_token_id=EOS)["input_ids"]
    assert packed.tolist() == [[11, 12, 13, 1, 14], [15, 1, 16, 17, 18]]  # 19, EOS dropped
    kept = pack_sequences(batch, block_size=5, eos_token_id=EOS, drop_remainder=False)["input_ids"]
    assert [list(map(int, row)) for row in kept] == [[11, 12, 13, 1, 14], [15, 1, 16, 17, 18], [19, 1]]
    no_eos = pack_sequences(batch, block_size=3)["input_ids"]
    assert no_eos.tolist() == [[11, 12, 13], [14, 15, 16], [17, 18, 19]]


def test_pack_dataset_counts_dropped_tokens_exactly(caplog):
    lengths = [3, 2, 4, 5, 1]
    dataset = Dataset.from_dict({"input_ids": [list(range(100, 100 + n)) for n in lengths], "text": ["x"] * 5})
    # batch_size 2 -> batches of 4 + 3, 5 + 6 and 2 tokens (EOS included): blocks of 4 keep
    # 1 + 2 + 0 blocks and drop 3 + 3 + 2 tokens.
    with caplog.at_level(logging.WARNING, logger="hfpipe.data.packing"):
        packed, stats = pack_dataset(dataset, 4, eos_token_id=EOS, batch_size=2, load_from_cache_file=False)
    assert (stats.num_documents, stats.num_tokens, stats.num_blocks, stats.num_dropped_tokens) == (5, 20, 3, 8)
    assert stats.dropped_fraction == pytest.approx(0.4)
    assert packed.column_names == ["input_ids"] and all(len(row) == 4 for row in packed["input_ids"])
    assert "dropped 8 of 20 tokens" in caplog.text
    _, whole = pack_dataset(dataset, 4, eos_token_id=EOS, load_from_cache_file=False)  # one batch: 20 = 5 * 4
    assert (whole.num_blocks, whole.num_dropped_tokens) == (5, 0)
    _, kept = pack_dataset(dataset, 4, eos_token_id=EOS, batch_size=2, drop_remainder=False, load_from_cache_file=False)
    assert (kept.num_blocks, kept.num_dropped_tokens) == (6, 0)


def test_pack_rejects_bad_arguments():
    with pytest.raises(InputError, match="block_size"):
        pack_sequences({"input_ids": [[1]]}, block_size=0)
    with pytest.raises(InputError, match="no column 'input_ids'"):
        pack_sequences({"text": ["a"]}, block_size=4)


def _prefix_lm_reconstruct(batch: dict) -> list[list[int]]:
    rows = []
    for inputs, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        rows.append(inputs[: inputs.index(EOS)] + labels[: labels.index(EOS)])
    return rows


def test_prefix_lm_hand_worked_and_uniform_split(t5_tokenizer):
    collator = DataCollatorForPrefixLM(t5_tokenizer, seed=0)
    blocks = [[10, 11, 12, 13, 14]] * 8000
    batch = collator(blocks)
    assert _prefix_lm_reconstruct(batch) == blocks
    prefix_lengths = batch["attention_mask"].sum(dim=1) - 1  # s in [1, 4]
    shares = np.bincount(prefix_lengths.numpy(), minlength=5)[1:] / len(blocks)
    np.testing.assert_allclose(shares, 0.25, atol=0.02)
    assert batch["input_ids"].shape == (8000, 5) and batch["labels"].shape == (8000, 5)  # max s + 1, max n - s + 1
    # s = 2: inputs 10 11 </s> <pad> <pad>, labels 12 13 14 </s> -100, decoder inputs <pad> 12 13 14 </s>.
    row = int(torch.nonzero(prefix_lengths == 2)[0])
    assert batch["input_ids"][row].tolist() == [10, 11, EOS, PAD, PAD]
    assert batch["labels"][row].tolist() == [12, 13, 14, EOS, -100]
    assert batch["decoder_input_ids"][row].tolist() == [PAD, 12, 13, 14, EOS]


def test_prefix_lm_rejects_blocks_too_short_to_split(t5_tokenizer):
    with pytest.raises(InputError, match="example 1: needs at least 2 tokens"):
        DataCollatorForPrefixLM(t5_tokenizer)([[5, 6], [7]])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(2, 40), min_size=1, max_size=6),
    multiple=st.sampled_from([None, 8]),
    seed=st.integers(0, 1000),
)
def test_property_prefix_lm_invariants(t5_tokenizer, lengths, multiple, seed):
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(3, 200, n).tolist() for n in lengths]
    batch = DataCollatorForPrefixLM(t5_tokenizer, pad_to_multiple_of=multiple, seed=seed)(blocks)
    assert _prefix_lm_reconstruct(batch) == blocks
    prefix = batch["attention_mask"].sum(dim=1) - 1
    assert ((prefix >= 1) & (prefix <= torch.tensor(lengths) - 1)).all()
    assert batch["input_ids"][batch["attention_mask"] == 0].eq(PAD).all()
    assert torch.equal(batch["labels"].ne(-100).sum(dim=1), torch.tensor(lengths) - prefix + 1)
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1].clamp(min=PAD))
    for width in (batch["input_ids"].shape[1], batch["labels"].shape[1]):
        assert multiple is None or width % multiple == 0


def test_causal_lm_keeps_eos_labels_when_pad_is_eos(t5_tokenizer):
    gpt_style = PreTrainedTokenizerFast(
        tokenizer_object=t5_tokenizer.backend_tokenizer, eos_token="</s>", pad_token="</s>"
    )
    examples = [{"input_ids": [5, 6, EOS, 7]}, {"input_ids": [8, EOS]}]
    batch = DataCollatorForCausalLM(gpt_style)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, EOS, 7], [8, EOS, EOS, EOS]]
    assert batch["labels"].tolist() == [[5, 6, EOS, 7], [8, EOS, -100, -100]]
    # transformers' own collator loses every EOS label with this tokenizer: the reason for the wrapper.
    theirs = DataCollatorForLanguageModeling(gpt_style, mlm=False)(examples)
    assert theirs["labels"].tolist() == [[5, 6, -100, 7], [8, -100, -100, -100]]


def test_causal_lm_drops_the_attention_mask_of_unpadded_blocks(t5_tokenizer):
    """Packed blocks need no mask: without one the model takes the unmasked (flash) kernel, and the
    all-ones check happens here on the CPU rather than as a host sync in the model."""
    gpt_style = PreTrainedTokenizerFast(
        tokenizer_object=t5_tokenizer.backend_tokenizer, eos_token="</s>", pad_token="</s>"
    )
    packed = DataCollatorForCausalLM(gpt_style)([{"input_ids": [5, 6, EOS, 7]}, {"input_ids": [8, EOS, 9, 10]}])
    padded = DataCollatorForCausalLM(gpt_style)([{"input_ids": [5, 6, EOS, 7]}, {"input_ids": [8, EOS]}])
    assert "attention_mask" not in packed and packed["labels"].tolist() == [[5, 6, EOS, 7], [8, EOS, 9, 10]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
