"""SpanBERT span masking and whole-word masking: budget, span lengths, whole words, 80/10/10 per span."""

import numpy as np
import pytest
import torch
from scipy import stats

from hfpipe.data.collators import DataCollatorForBertPretraining, ReproducibleCollator
from hfpipe.data.span_masking import DataCollatorForSpanMasking
from hfpipe.data.word_masking import WordSpanMasker, span_length_distribution
from hfpipe.errors import InputError

PAD, UNK, CLS, SEP, MASK = range(5)
FIRST_WORD, FIRST_PIECE, VOCAB = 5, 605, 1005  # see conftest: words w0.., then ##p0.. pieces


def _blocks(rng, num_rows: int, lengths=(300, 511), pieces_per_word=(0.6, 0.3, 0.1)):
    """Rows framed [CLS] ... [SEP] with an inner [SEP] between packed documents now and then, as
    `mlm` blocks are; returns (rows, word_of) where word_of gives each token's word id (-1: special)."""
    rows, word_of, first_word = [], [], 0
    for _ in range(num_rows):
        length = int(rng.integers(*lengths))
        sep = rng.random(length) < 0.01  # a document boundary before word w
        size = sep + 1 + rng.choice(3, size=length, p=pieces_per_word)  # tokens per word slot
        word = np.repeat(np.arange(length), size)
        offset = np.arange(len(word)) - np.repeat(np.cumsum(size) - size, size)
        is_sep, is_first = sep[word] & (offset == 0), offset == sep[word]
        ids = np.where(is_first, rng.integers(FIRST_WORD, FIRST_PIECE, len(word)),
                       rng.integers(FIRST_PIECE, VOCAB, len(word)))
        ids, word = np.where(is_sep, SEP, ids)[: length - 2], np.where(is_sep, -1, word + first_word)[: length - 2]
        rows.append([CLS, *ids.tolist(), SEP])
        word_of.append([-1, *word.tolist(), -1])
        first_word += length
    return rows, word_of


def _padded(rows, value):
    out = np.full((len(rows), max(map(len, rows))), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _runs(chosen: np.ndarray) -> list[tuple[int, int, int]]:
    """(row, start, end) of each maximal run of chosen tokens."""
    padded = np.pad(chosen, ((0, 0), (1, 1))).astype(np.int8)
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return list(zip(starts[0], starts[1], ends[1]))


def _collate_all(collator, rows, batch_size=32):
    batches = [collator([{"input_ids": r} for r in rows[i : i + batch_size]]) for i in range(0, len(rows), batch_size)]
    width = max(b["input_ids"].shape[1] for b in batches)

    def cat(key, value):
        return np.concatenate([np.pad(b[key].numpy(), ((0, 0), (0, width - b[key].shape[1])), constant_values=value)
                               for b in batches])

    return {key: cat(key, value) for key, value in
            (("input_ids", PAD), ("labels", -100), ("attention_mask", 0), ("token_type_ids", 0))}


@pytest.fixture(scope="module")
def spanbert_batch(bert_tokenizer):
    rows, word_of = _blocks(np.random.default_rng(0), 520)
    batch = _collate_all(DataCollatorForSpanMasking(bert_tokenizer, seed=0), rows)
    return rows, _padded(word_of, -1), batch


def test_span_masking_budget_words_and_specials(spanbert_batch):
    rows, word_of, batch = spanbert_batch
    original = _padded(rows, PAD)
    chosen = batch["labels"] != -100
    maskable = word_of >= 0
    assert maskable.sum() > 200_000
    assert not (chosen & ~maskable).any(), "special tokens and padding are never chosen"
    np.testing.assert_array_equal(batch["labels"][chosen], original[chosen])
    np.testing.assert_array_equal(batch["input_ids"][~chosen], original[~chosen])
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), [len(r) for r in rows])
    assert not batch["token_type_ids"].any()
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.005
    # per row: the budget 0.15 n, missed or passed by less than one word (<= 3 pieces here)
    assert np.abs(chosen.sum(1) - 0.15 * maskable.sum(1)).max() < 3
    # whole words: every word is chosen with all its pieces or not at all
    ids = word_of[maskable]
    pieces, picked = np.bincount(ids), np.bincount(ids, weights=chosen[maskable])
    assert np.all((picked == 0) | (picked == pieces))


def test_span_masking_replacement_is_decided_per_span(spanbert_batch):
    rows, _, batch = spanbert_batch
    original = _padded(rows, PAD)
    chosen = batch["labels"] != -100
    kinds, mixed, random_kept = [], 0, []
    for row, start, end in _runs(chosen):
        masked, before = batch["input_ids"][row, start:end], original[row, start:end]
        if (masked == MASK).all():
            kinds.append("mask")
        elif (masked == before).all():
            kinds.append("kept")
        else:
            kinds.append("random")
            mixed += bool((masked == MASK).any())  # a random draw hits [MASK] 1 time in 1005
            random_kept.append((masked == before).mean())
    kinds = np.array(kinds)
    assert len(kinds) > 5000
    assert mixed <= 0.005 * len(kinds), "a span is all [MASK], all random or all kept"
    assert np.mean(random_kept) < 0.01  # random tokens equal the original 1 time in 1005
    for kind, share in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
        assert abs((kinds == kind).mean() - share) < 0.02, kind


def test_span_lengths_follow_the_clipped_geometric(bert_tokenizer):
    rows, word_of = _blocks(np.random.default_rng(1), 500)
    ids = torch.as_tensor(_padded(rows, PAD))
    masker = WordSpanMasker(bert_tokenizer, seed=3)
    drawn = masker.choose(ids, ids < FIRST_WORD)
    spans = drawn.spans
    probabilities = span_length_distribution(0.2, 10)
    assert abs((np.arange(1, 11) * probabilities).sum() - 3.797) < 1e-3  # the paper's mean 3.8
    observed = np.bincount(spans[:, 2], minlength=11)[1:]
    assert observed.sum() > 5000 and observed.sum() == len(spans)
    chi2 = ((observed - observed.sum() * probabilities) ** 2 / (observed.sum() * probabilities)).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=9)
    np.testing.assert_allclose(observed / observed.sum(), probabilities, atol=0.015)
    assert abs(spans[:, 2].mean() - 3.797) < 0.1
    # Every span but a row's last takes its drawn length in words, cut only by the row's end.
    num_words = np.array([len(set(w) - {-1}) for w in word_of])
    last = np.zeros(len(spans), bool)
    last[list({row: i for i, row in enumerate(spans[:, 0])}.values())] = True  # spans are in drawing order
    expected = np.minimum(spans[:, 2], num_words[spans[:, 0]] - spans[:, 1])
    np.testing.assert_array_equal(spans[~last, 3], expected[~last])
    assert (spans[last, 3] <= expected[last]).all()


def test_budget_hand_worked_the_crossing_word_is_taken_with_probability_need_over_pieces(bert_tokenizer):
    # 20 one-piece words: budget 0.15 * 20 = 3 -> exactly 3 chosen in every row.
    single = torch.tensor([[CLS, *range(FIRST_WORD, FIRST_WORD + 20), SEP]] * 500)
    masker = WordSpanMasker(bert_tokenizer, seed=0)
    assert (masker.choose(single, single < FIRST_WORD).chosen.sum(1) == 3).all()
    # 10 two-piece words (20 tokens): after one word 1 token is missing, half of the next word's
    # 2 pieces -> it is taken with probability 1/2: 2 or 4 chosen, 3 on average.
    double = torch.tensor([[CLS, *[t for w in range(10) for t in (FIRST_WORD + w, FIRST_PIECE + w)], SEP]] * 4000)
    counts = WordSpanMasker(bert_tokenizer, max_span_length=1, seed=0).choose(double, double < FIRST_WORD).chosen.sum(1)
    assert set(counts.tolist()) == {2, 4}
    assert abs((counts == 4).mean() - 0.5) < 0.03  # 4 standard deviations at 4000 rows


def test_same_seed_same_masks_and_reproducible_collator(bert_tokenizer):
    rows, _ = _blocks(np.random.default_rng(2), 16, lengths=(40, 120))
    examples = [{"input_ids": r} for r in rows]
    first = DataCollatorForSpanMasking(bert_tokenizer, seed=5, pad_to_multiple_of=8)(examples)
    again = DataCollatorForSpanMasking(bert_tokenizer, seed=5, pad_to_multiple_of=8)(examples)
    other = DataCollatorForSpanMasking(bert_tokenizer, seed=6, pad_to_multiple_of=8)(examples)
    assert all(torch.equal(first[k], again[k]) for k in first) and first["input_ids"].shape[1] % 8 == 0
    assert {k: v.dtype for k, v in first.items()} == dict.fromkeys(first, torch.int64)
    assert not torch.equal(first["labels"], other["labels"])
    # unseeded: torch's global RNG decides, so ReproducibleCollator pins the masks to the batch
    collator = ReproducibleCollator(DataCollatorForSpanMasking(bert_tokenizer), seed=7)
    masks = collator(examples)
    torch.rand(100)
    assert torch.equal(masks["labels"], collator(examples)["labels"])


def test_whole_word_masking_keeps_80_10_10_per_word(bert_tokenizer):
    rows, word_of = _blocks(np.random.default_rng(4), 450, lengths=(60, 200))
    batch = _collate_all(DataCollatorForBertPretraining(bert_tokenizer, whole_word_mask=True, seed=0), rows)
    original, word_of = _padded(rows, PAD), _padded(word_of, -1)
    chosen, maskable = batch["labels"] != -100, word_of >= 0
    assert not (chosen & ~maskable).any()
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.005
    ids = word_of[chosen]
    pieces = np.bincount(word_of[maskable])
    assert (np.bincount(ids, minlength=len(pieces))[np.unique(ids)] == pieces[np.unique(ids)]).all()
    masked, before = batch["input_ids"][chosen], original[chosen]
    words = np.unique(ids)
    all_mask = np.bincount(ids, weights=masked == MASK, minlength=len(pieces))[words] == pieces[words]
    all_kept = np.bincount(ids, weights=masked == before, minlength=len(pieces))[words] == pieces[words]
    assert len(words) > 5000
    assert abs(all_mask.mean() - 0.8) < 0.02
    assert abs(all_kept.mean() - 0.1) < 0.02  # a one-piece random word equals the original 1 time in 1005
    assert abs((~all_mask & ~all_kept).mean() - 0.1) < 0.02


def test_recipe_wiring_and_bad_values(bert_tokenizer):
    import datasets

    from hfpipe.recipes import Recipe

    def recipe(**objective):
        return Recipe.from_dict({"kind": "pretrain", "model": {"family": "encoder"},
                                 "objective": {"max_seq_length": 40, **objective}})

    r = recipe(name="span_mlm", geometric_p=0.3, max_span_length=4)
    vocab = bert_tokenizer.convert_ids_to_tokens(list(range(VOCAB)))
    rng = np.random.default_rng(6)
    texts = [" ".join(vocab[int(t)] for t in rng.integers(FIRST_WORD, FIRST_PIECE, 60)) for _ in range(20)]
    examples = r.objective.examples(r, datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts})}),
                                    bert_tokenizer)
    collator = examples.collator
    assert isinstance(collator, DataCollatorForSpanMasking)
    assert r.objective.auto_class == recipe(name="mlm").objective.auto_class == "AutoModelForMaskedLM"
    assert (collator.geometric_p, collator.max_span_length) == (0.3, 4)
    row = examples.train[0]["input_ids"]
    assert len(row) == 40 and row[0] == CLS and row[-1] == SEP
    with pytest.raises(InputError, match="objective.whole_word_mask"):
        recipe(name="span_mlm", whole_word_mask=True)
    with pytest.raises(InputError, match="objective.geometric_p"):
        recipe(name="mlm", geometric_p=0.3)
    with pytest.raises(InputError, match="geometric_p"):
        recipe(name="span_mlm", geometric_p=1.0)
    with pytest.raises(InputError, match="max_span_length"):
        DataCollatorForSpanMasking(bert_tokenizer, max_span_length=0)
