"""BERT pretraining data: NSP/SOP pair construction and MLM (80/10/10) masking statistics."""

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfpipe.data.collators import DataCollatorForBertPretraining
from hfpipe.data.nsp import BertPretrainingPairs, create_bert_pretraining_pairs, truncate_seq_pair
from hfpipe.errors import InputError

PAD, UNK, CLS, SEP, MASK = range(5)
FIRST_WORD, FIRST_PIECE, VOCAB = 5, 605, 1005

# Pair-construction corpora use ids unique across the corpus, id = BASE * (doc + 1) + position,
# so that every token tells which document and position it came from.
BASE = 10_000


def _unique_id_corpus(num_documents: int, seed: int, sentences=(5, 30), tokens=(3, 20)) -> list:
    rng = np.random.default_rng(seed)
    corpus = []
    for d in range(num_documents):
        lengths = rng.integers(tokens[0], tokens[1], size=rng.integers(*sentences))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        corpus.append([list(range(BASE * (d + 1) + s, BASE * (d + 1) + e)) for s, e in zip(starts, starts[1:])])
    return corpus


def _split_pair(example: dict) -> tuple[list[int], list[int]]:
    ids, types = example["input_ids"], example["token_type_ids"]
    first_sep = ids.index(SEP)
    assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    return ids[1:first_sep], ids[first_sep + 1 : -1]


def _document_and_positions(tokens: list[int]) -> tuple[int, list[int]]:
    documents = {t // BASE - 1 for t in tokens}
    assert len(documents) == 1, "a segment comes from one document"
    positions = [t % BASE for t in tokens]
    assert positions == list(range(positions[0], positions[0] + len(positions))), "a segment is contiguous"
    return documents.pop(), positions


def test_truncate_seq_pair_trims_the_longer_segment_from_either_end():
    tokens_a, tokens_b = list(range(1, 11)), [11, 12, 13]
    truncate_seq_pair(tokens_a, tokens_b, 8, random.Random(0))
    assert tokens_b == [11, 12, 13] and len(tokens_a) == 5
    assert tokens_a == list(range(tokens_a[0], tokens_a[0] + 5))  # still a contiguous piece
    tokens_a, tokens_b = [1, 2, 3, 4], [5, 6, 7, 8, 9, 10]
    truncate_seq_pair(tokens_a, tokens_b, 6, random.Random(0))  # b 6 -> 3 (a tie cuts b), then a 4 -> 3
    assert len(tokens_a) + len(tokens_b) == 6 and len(tokens_a) == 3 and len(tokens_b) == 3


def test_pairs_hand_worked_is_next_only(bert_tokenizer):
    # Sentences of 4 tokens, max_seq_length 15 -> 12 tokens per pair: a chunk closes after 3 sentences.
    # Document 0 (6 sentences) -> 2 pairs; document 1 (7) -> 2 pairs + its lone last sentence,
    # cut into A and B. With nsp_probability=0 every pair is the true continuation.
    documents = [[[10 * d + s] * 4 for s in range(n)] for d, n in ((1, 6), (2, 7))]
    examples = create_bert_pretraining_pairs(
        documents, bert_tokenizer, max_seq_length=15, nsp_probability=0.0, short_seq_probability=0.0
    )
    assert [e["next_sentence_label"] for e in examples] == [0] * 5
    assert [len(e["input_ids"]) for e in examples] == [15, 15, 15, 15, 7]
    stream = [t for e in examples for t in sum(_split_pair(e), [])]
    assert stream == [t for document in documents for sentence in document for t in sentence]


def test_nsp_pairs_statistics_and_provenance(bert_tokenizer):
    corpus = _unique_id_corpus(400, seed=0)
    examples = create_bert_pretraining_pairs(corpus, bert_tokenizer, max_seq_length=64, seed=0)
    assert len(examples) > 1500
    labels = np.array([e["next_sentence_label"] for e in examples])
    assert abs(labels.mean() - 0.5) < 0.035  # 3 standard deviations at ~2000 pairs
    assert max(len(e["input_ids"]) for e in examples) == 64
    short = [e for e in examples if len(e["input_ids"]) < 40]
    assert 0.03 < len(short) / len(examples) < 0.3  # short_seq_probability = 0.1 per document
    for example in examples:
        tokens_a, tokens_b = _split_pair(example)
        doc_a, positions_a = _document_and_positions(tokens_a)
        doc_b, positions_b = _document_and_positions(tokens_b)
        if example["next_sentence_label"] == 1:
            assert doc_a != doc_b
        else:
            assert doc_a == doc_b and positions_a[-1] < positions_b[0]
            if len(tokens_a) + len(tokens_b) < 61:  # not truncated: B starts right after A
                assert positions_b[0] == positions_a[-1] + 1


def test_sop_pairs_are_swapped_half_of_the_time(bert_tokenizer):
    corpus = _unique_id_corpus(400, seed=1)
    examples = create_bert_pretraining_pairs(corpus, bert_tokenizer, max_seq_length=64, sentence_order=True, seed=1)
    labels = np.array([e["next_sentence_label"] for e in examples])
    assert abs(labels.mean() - 0.5) < 0.04
    for example in examples:
        (doc_a, positions_a), (doc_b, positions_b) = map(_document_and_positions, _split_pair(example))
        assert doc_a == doc_b  # SOP never uses another document (all sentences here have >= 3 tokens)
        in_order = positions_a[-1] < positions_b[0]
        assert in_order == (example["next_sentence_label"] == 0)


def test_pairs_as_a_datasets_map_draw_random_segments_from_the_batch(bert_tokenizer):
    corpus = _unique_id_corpus(300, seed=2, sentences=(3, 12))
    dataset = Dataset.from_dict({"sentences": corpus, "title": [f"doc {i}" for i in range(300)]})
    builder = BertPretrainingPairs(bert_tokenizer, max_seq_length=48, seed=5)

    def run():
        return dataset.map(
            builder, batched=True, batch_size=100, with_indices=True,
            remove_columns=dataset.column_names, load_from_cache_file=False,
        )

    pairs = run()
    assert pairs.column_names == ["input_ids", "token_type_ids", "next_sentence_label"]
    assert pairs[:] == run()[:]  # seeded per batch: reproducible
    labels = np.array(pairs["next_sentence_label"])
    assert abs(labels.mean() - 0.5) < 0.06
    for example in pairs:
        tokens_a, tokens_b = _split_pair(example)
        doc_a, doc_b = tokens_a[0] // BASE - 1, tokens_b[0] // BASE - 1
        assert (doc_a != doc_b) == (example["next_sentence_label"] == 1)
        assert doc_a // 100 == doc_b // 100  # the random document came from the same map batch
        assert len(example["input_ids"]) <= 48


def test_pairs_bad_input_is_an_input_error(bert_tokenizer, t5_tokenizer):
    with pytest.raises(InputError, match="needs a CLS and a SEP token"):
        BertPretrainingPairs(t5_tokenizer)
    with pytest.raises(InputError, match="document 1: expected a list of tokenized sentences"):
        create_bert_pretraining_pairs([[[5, 6]], "raw text"], bert_tokenizer)
    with pytest.raises(InputError, match="only 1 non-empty document"):
        create_bert_pretraining_pairs([[[5, 6], [7, 8]], [[]]], bert_tokenizer)
    with pytest.raises(InputError, match="no column 'sentences'"):
        BertPretrainingPairs(bert_tokenizer)({"text": [["a"]]})


# -- masking ------------------------------------------------------------------------------------
def _word_pairs(tokenizer, num_documents: int, seed: int, max_seq_length: int = 128) -> list[dict]:
    rng = np.random.default_rng(seed)
    corpus = [
        [rng.integers(FIRST_WORD, VOCAB, size=rng.integers(3, 25)).tolist() for _ in range(rng.integers(2, 20))]
        for _ in range(num_documents)
    ]
    return create_bert_pretraining_pairs(corpus, tokenizer, max_seq_length=max_seq_length, seed=seed)


def _check_mlm_invariants(examples: list[dict], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks what must hold for every batch; returns bool (B, T) masks of chosen and maskable tokens."""
    original = torch.full_like(batch["input_ids"], PAD)
    for i, example in enumerate(examples):
        original[i, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
    chosen = batch["labels"] != -100
    maskable = (original >= FIRST_WORD) & (batch["attention_mask"] == 1)
    assert not (chosen & ~maskable).any(), "special tokens and padding are never chosen"
    assert torch.equal(batch["labels"][chosen], original[chosen]), "labels hold the original token"
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen]), "unchosen tokens are untouched"
    lengths = torch.tensor([len(e["input_ids"]) for e in examples])
    assert torch.equal(batch["attention_mask"].sum(dim=1), lengths)
    return chosen, maskable


def test_mlm_80_10_10_statistics_and_nsp_labels(bert_tokenizer):
    collator = DataCollatorForBertPretraining(bert_tokenizer, seed=0)
    examples = _word_pairs(bert_tokenizer, 1200, seed=3)
    counts = dict(maskable=0, chosen=0, mask=0, random=0, kept=0)
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        batch = collator(chunk)
        width = max(len(e["input_ids"]) for e in chunk)
        assert batch["input_ids"].shape == batch["token_type_ids"].shape == (len(chunk), width)
        assert torch.equal(batch["next_sentence_label"], torch.tensor([e["next_sentence_label"] for e in chunk]))
        for i, example in enumerate(chunk):
            types = batch["token_type_ids"][i]
            assert types[: len(example["token_type_ids"])].tolist() == example["token_type_ids"]
            assert types[len(example["token_type_ids"]) :].eq(0).all()
        chosen, maskable = _check_mlm_invariants(chunk, batch)
        counts["maskable"] += int(maskable.sum())
        counts["chosen"] += int(chosen.sum())
        counts["mask"] += int((batch["input_ids"][chosen] == MASK).sum())
        counts["kept"] += int((batch["input_ids"][chosen] == batch["labels"][chosen]).sum())
    counts["random"] = counts["chosen"] - counts["mask"] - counts["kept"]
    assert counts["maskable"] > 100_000
    assert abs(counts["chosen"] / counts["maskable"] - 0.15) < 0.005
    # A random replacement equals the original 1 time in 1005: "kept" is 10% + 0.01%.
    assert abs(counts["mask"] / counts["chosen"] - 0.80) < 0.015
    assert abs(counts["random"] / counts["chosen"] - 0.10) < 0.015
    assert abs(counts["kept"] / counts["chosen"] - 0.10) < 0.015


def test_mlm_seed_reproducible_and_pad_to_multiple_of(bert_tokenizer):
    examples = _word_pairs(bert_tokenizer, 30, seed=4, max_seq_length=50)[:16]
    first = DataCollatorForBertPretraining(bert_tokenizer, seed=1, pad_to_multiple_of=16)(examples)
    again = DataCollatorForBertPretraining(bert_tokenizer, seed=1, pad_to_multiple_of=16)(examples)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["input_ids"].shape[1] % 16 == 0 and first["input_ids"].shape[1] >= 50 - 15


def test_whole_word_masking_masks_all_pieces_of_a_word(bert_tokenizer):
    rng = np.random.default_rng(5)
    examples = []
    for _ in range(256):
        # a word: one word id, then 0-2 "##" continuation pieces
        words = [
            [int(rng.integers(FIRST_WORD, FIRST_PIECE)), *rng.integers(FIRST_PIECE, VOCAB, rng.integers(0, 3)).tolist()]
            for _ in range(rng.integers(5, 30))
        ]
        examples.append({"input_ids": [CLS] + [t for w in words for t in w] + [SEP], "words": words})
    collator = DataCollatorForBertPretraining(
        bert_tokenizer, whole_word_mask=True, mask_replace_prob=1.0, random_replace_prob=0.0, seed=0
    )
    batch = collator([{"input_ids": e["input_ids"]} for e in examples])
    chosen, _ = _check_mlm_invariants(examples, batch)
    num_words = chosen_words = 0
    for i, example in enumerate(examples):
        position = 1
        for word in example["words"]:
            flags = chosen[i, position : position + len(word)]
            assert flags.all() or not flags.any(), "a word is masked whole or not at all"
            num_words += 1
            chosen_words += bool(flags.all())
            position += len(word)
    assert abs(chosen_words / num_words - 0.15) < 0.02
    assert batch["input_ids"][chosen].eq(MASK).all()  # mask_replace_prob=1: [MASK] only


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=6),
    multiple=st.sampled_from([None, 8]),
    seed=st.integers(0, 1000),
)
def test_property_mlm_invariants_on_random_pairs_and_padding(bert_tokenizer, lengths, multiple, seed):
    rng = np.random.default_rng(seed)
    examples = []
    for length_a, length_b in lengths:
        tokens_a, tokens_b = (rng.integers(FIRST_WORD, VOCAB, n).tolist() for n in (length_a, length_b))
        ids = [CLS, *tokens_a, SEP, *tokens_b, SEP]
        examples.append({"input_ids": ids, "token_type_ids": [0] * (length_a + 2) + [1] * (length_b + 1),
                         "next_sentence_label": int(rng.integers(2))})
    collator = DataCollatorForBertPretraining(
        bert_tokenizer, mlm_probability=0.5, pad_to_multiple_of=multiple, seed=seed
    )
    batch = collator(examples)
    _check_mlm_invariants(examples, batch)
    width = max(a + b + 3 for a, b in lengths)
    assert batch["labels"].shape[1] == (width if multiple is None else -(-width // 8) * 8)
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in examples]


def test_collator_output_feeds_bert_for_pretraining(bert_tokenizer):
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    examples = _word_pairs(bert_tokenizer, 20, seed=6, max_seq_length=64)
    batch = DataCollatorForBertPretraining(bert_tokenizer, seed=0)(examples)
    output = BertForPreTraining(config)(**batch)
    # Untrained: MLM loss near ln(1005) = 6.91 plus NSP loss near ln(2) = 0.69.
    assert abs(output.loss.item() - (np.log(VOCAB) + np.log(2))) < 0.3


def test_reproducible_collator_masks_depend_only_on_the_batch(bert_tokenizer):
    """Resuming must re-draw the same masks even though the global RNG moved on."""
    from hfpipe.data.collators import DataCollatorForBertPretraining, ReproducibleCollator

    collator = ReproducibleCollator(DataCollatorForBertPretraining(bert_tokenizer), seed=7)
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    examples = [{"input_ids": [cls, *range(10, 40), sep, *range(50, 70), sep], "token_type_ids": [0] * 32 + [1] * 21,
                 "next_sentence_label": 0} for _ in range(8)]
    first = collator(examples)
    torch.rand(1000)  # move the global RNG, as a prefetched batch would
    state = torch.random.get_rng_state()
    second = collator(examples)
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is untouched
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    other = ReproducibleCollator(DataCollatorForBertPretraining(bert_tokenizer), seed=8)(examples)
    assert not torch.equal(first["labels"], other["labels"])


def test_whole_word_masking_on_packed_mlm_blocks_from_the_recipe_key(bert_tokenizer):
    """objective.whole_word_mask reaches the `mlm` objective (RoBERTa blocks: no pairs, no NSP)."""
    import datasets

    from hfpipe.recipes import Recipe

    recipe = Recipe.from_dict({"kind": "pretrain", "model": {"family": "encoder"},
                               "objective": {"name": "mlm", "max_seq_length": 40, "whole_word_mask": True}})
    rng = np.random.default_rng(6)
    vocab = bert_tokenizer.convert_ids_to_tokens(list(range(VOCAB)))
    texts = [" ".join(vocab[int(t)] for t in rng.integers(FIRST_WORD, FIRST_PIECE, 60)) for _ in range(40)]
    examples = recipe.objective.examples(recipe, datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})}),
                         bert_tokenizer)
    assert examples.collator.whole_word_mask
    rows = [{"input_ids": row} for row in examples.train["input_ids"]]
    # now blocks whose words have continuation pieces, masked by that collator
    blocks, words_of = [], []
    for _ in range(300):
        words = [[int(rng.integers(FIRST_WORD, FIRST_PIECE)), *rng.integers(FIRST_PIECE, VOCAB, rng.integers(0, 3)).tolist()]
                 for _ in range(12)]
        blocks.append({"input_ids": [CLS] + [t for w in words for t in w] + [SEP]})
        words_of.append(words)
    batch = examples.collator(blocks)
    chosen = batch["labels"] != -100
    whole = total = 0
    for i, words in enumerate(words_of):
        position = 1
        for word in words:
            flags = chosen[i, position:position + len(word)]
            assert flags.all() or not flags.any(), "a word is masked whole or not at all"
            whole += bool(flags.all())
            total += 1
            position += len(word)
    assert abs(whole / total - 0.15) < 0.02
    assert "next_sentence_label" not in batch and len(rows) > 0
