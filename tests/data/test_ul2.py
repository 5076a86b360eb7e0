"""UL2's mixture of denoisers: exact lengths, reconstruction, corruption statistics, mixture proportions."""

import functools
import math

import numpy as np
import pytest
import torch

from hfpipe.data.span_corruption import span_corruption_lengths
from hfpipe.data.ul2 import (
    PARADIGM_TOKENS,
    UL2_DENOISERS,
    DataCollatorForUL2,
    Denoiser,
    add_ul2_tokens,
    ul2_lengths,
)
from hfpipe.errors import InputError
from hfpipe.recipes import load_recipe

from .conftest import make_t5_tokenizer

EOS, PAD, FIRST_WORD, LAST_WORD = 1, 0, 3, 199
RECIPE = "recipes/pretrain/t5-ul2.yaml"


@functools.cache
def ul2_tokenizer(input_length: int):
    """The conftest T5 tokenizer (100 sentinels) with UL2's paradigm tokens and the sentinels it lacks."""
    tokenizer = make_t5_tokenizer()
    add_ul2_tokens(tokenizer, UL2_DENOISERS, input_length)
    return tokenizer


def sentinel_ids(tokenizer) -> np.ndarray:
    return np.asarray([i for token, i in tokenizer.get_vocab().items() if token.startswith("<extra_id_")])


def blocks(count: int, length: int, seed: int = 0) -> list[dict]:
    words = np.random.default_rng(seed).integers(FIRST_WORD, LAST_WORD + 1, size=(count, length))
    return [{"input_ids": row.tolist()} for row in words]


def reconstruct(tokenizer, input_ids: torch.Tensor, labels: torch.Tensor) -> tuple[list[list[int]], list[list[int]]]:
    """Fill each sentinel of the inputs with its span from the labels (S: append the labels).

    Returns the raw tokens per example (paradigm token, EOS and padding dropped) and the
    lengths of the spans the labels held."""
    sentinels = set(sentinel_ids(tokenizer).tolist())
    originals, span_lengths = [], []
    for inputs, targets in zip(input_ids.tolist(), labels.tolist()):
        spans, order, current = {}, [], None
        for token in targets:
            if token in (EOS, -100):
                break
            if token in sentinels:
                current = spans.setdefault(token, [])
                order.append(token)
            elif current is None:  # S: the target is the suffix itself
                current = spans.setdefault(None, [])
                order.append(None)
                current.append(token)
            else:
                current.append(token)
        span_lengths.append([len(spans[s]) for s in order])
        original = []
        for token in inputs[1:]:
            if token == EOS:
                break
            original.extend(spans.pop(token) if token in spans else [token])
        original.extend(spans.pop(None, []))
        assert not spans, "every sentinel of the labels appears in the inputs"
        originals.append(original)
    return originals, span_lengths


def test_lengths_are_t5s_formula_after_the_paradigm_token():
    lengths = ul2_lengths(512)
    assert lengths.block_length == 1004
    got = [(n.raw, n.inputs, n.targets, n.noise_tokens, n.noise_spans) for n in lengths.denoisers]
    assert got == [(567, 512, 114, 85, 28), (587, 512, 100, 88, 11), (765, 512, 510, 382, 127),
                   (906, 512, 511, 453, 57), (599, 512, 92, 90, 1), (1004, 512, 511, 502, 8), (680, 512, 171, 170, 1)]
    # R and X: T5's random_spans_helper for the 511 tokens after the paradigm token.
    for d, n in zip(UL2_DENOISERS[:6], lengths.denoisers):
        assert (n.raw, n.targets) == span_corruption_lengths(511, d.noise_density, d.mean_noise_span_length)
    # S: 510 prefix tokens + 170 target tokens, 170 = round(680 / 4); 681 tokens would need a 511-token prefix.
    assert 680 - round(680 * 0.25) == 510 and 681 - round(681 * 0.25) == 511
    # Packed at 1004, the uniform mixture reads 729.7 tokens per block on average.
    assert lengths.unused_fraction([1] * 7) == pytest.approx((1004 - 5108 / 7) / 1004)
    assert lengths.unused_fraction([1] * 7) == pytest.approx(0.2732, abs=1e-4)


def test_every_default_denoiser_fits_the_smoke_input_length():
    """--smoke shrinks max_seq_length to 64: the mixture stays the same seven, each with full 64-token inputs
    (mean span 64 then yields a single span: T5's count, max(round(noise / 64), 1))."""
    lengths = ul2_lengths(64)
    assert lengths.block_length == 122
    assert [n.inputs for n in lengths.denoisers] == [64] * 7
    assert [n.targets for n in lengths.denoisers] == [14, 13, 62, 63, 13, 63, 22]
    assert [n.noise_spans for n in lengths.denoisers] == [3, 1, 15, 7, 1, 1, 1]
    assert load_recipe(RECIPE, smoke=True).objective.max_seq_length == 64


@pytest.mark.parametrize("k", range(len(UL2_DENOISERS)), ids=lambda k: "{}-{}-{}".format(*[
    getattr(UL2_DENOISERS[k], f) for f in ("paradigm", "mean_noise_span_length", "noise_density")]))
def test_each_denoiser_exact_lengths_paradigm_token_and_reconstruction(k):
    tokenizer = ul2_tokenizer(512)
    denoiser = UL2_DENOISERS[k]
    collator = DataCollatorForUL2(tokenizer, (denoiser,), input_length=512, seed=k)
    n = collator.lengths.denoisers[0]
    examples = blocks(16, n.raw, seed=k)
    batch = collator(examples)
    assert collator.block_length == n.raw  # one denoiser: blocks as long as it needs
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].shape == (16, n.inputs) and batch["labels"].shape == (16, n.targets)
    assert batch["attention_mask"].sum(dim=1).eq(n.inputs).all()
    assert batch["labels"].ne(-100).sum(dim=1).eq(n.targets).all()
    paradigm_id = tokenizer.convert_tokens_to_ids(PARADIGM_TOKENS[denoiser.paradigm])
    assert batch["input_ids"][:, 0].eq(paradigm_id).all()
    assert batch["input_ids"][:, n.inputs - 1].eq(EOS).all() and batch["labels"][:, n.targets - 1].eq(EOS).all()
    originals, spans = reconstruct(tokenizer, batch["input_ids"], batch["labels"])
    assert originals == [e["input_ids"] for e in examples]
    assert [sum(s) for s in spans] == [n.noise_tokens] * 16 and [len(s) for s in spans] == [n.noise_spans] * 16
    assert batch["decoder_input_ids"][:, 0].eq(PAD).all()
    assert torch.equal(batch["decoder_input_ids"][:, 1:], batch["labels"][:, :-1].clamp(min=PAD))


@pytest.mark.parametrize("denoiser", UL2_DENOISERS, ids=lambda d: f"{d.paradigm}-{d.mean_noise_span_length}-"
                         f"{d.noise_density}")
def test_realised_corruption_rate_and_mean_span_length(denoiser):
    """At input length 2048 T5's rounding of the span count is small (64-token spans: 6 or 31 of them)."""
    tokenizer = ul2_tokenizer(2048)
    collator = DataCollatorForUL2(tokenizer, (denoiser,), input_length=2048, seed=1)
    raw = collator.block_length
    batch = collator(blocks(48, raw, seed=2))
    _, spans = reconstruct(tokenizer, batch["input_ids"], batch["labels"])
    span_lengths = np.concatenate([np.asarray(s) for s in spans])
    rate = span_lengths.sum() / (48 * raw)
    assert rate == pytest.approx(denoiser.noise_density, abs=0.002)
    if denoiser.paradigm == "s":
        assert span_lengths.tolist() == [round(raw * 0.25)] * 48  # one suffix, a quarter of the block
    else:
        assert span_lengths.mean() == pytest.approx(denoiser.mean_noise_span_length, rel=0.07)
        assert span_lengths.min() >= 1 and span_lengths.std() > 0  # random composition, not fixed-length spans


def _denoiser_of_each_example(collator, batch) -> np.ndarray:
    """Which denoiser made each example: (paradigm token, target length, sentinels in the input) is unique."""
    sentinels = torch.from_numpy(sentinel_ids(collator.tokenizer))
    keys = list(zip(batch["input_ids"][:, 0].tolist(), batch["labels"].ne(-100).sum(dim=1).tolist(),
                    torch.isin(batch["input_ids"], sentinels).sum(dim=1).tolist()))
    table = {}
    for k, (d, n) in enumerate(zip(collator.denoisers, collator.lengths.denoisers)):
        key = (collator.tokenizer.convert_tokens_to_ids(PARADIGM_TOKENS[d.paradigm]), n.targets,
               0 if d.paradigm == "s" else n.noise_spans)
        assert key not in table
        table[key] = k
    return np.asarray([table[key] for key in keys])


@pytest.mark.parametrize("weights", [[1] * 7, [8, 1, 1, 1, 1, 1, 3]], ids=["uniform", "skewed"])
def test_realised_mixture_matches_the_weights(weights):
    denoisers = tuple(Denoiser(d.paradigm, d.mean_noise_span_length, d.noise_density, w)
                      for d, w in zip(UL2_DENOISERS, weights))
    collator = DataCollatorForUL2(ul2_tokenizer(64), denoisers, input_length=64, seed=5)
    examples = blocks(700, collator.block_length, seed=3)
    chosen = np.concatenate([_denoiser_of_each_example(collator, collator(examples)) for _ in range(20)])
    realised = np.bincount(chosen, minlength=7) / len(chosen)  # 14,000 draws: standard error <= 0.0042
    np.testing.assert_allclose(realised, np.asarray(weights) / sum(weights), atol=0.013)


def test_same_seed_same_batch_and_torch_rng_without_seed():
    tokenizer = ul2_tokenizer(64)
    examples = blocks(32, ul2_lengths(64).block_length, seed=4)
    first = DataCollatorForUL2(tokenizer, input_length=64, seed=9)(examples)
    again = DataCollatorForUL2(tokenizer, input_length=64, seed=9)(examples)
    other = DataCollatorForUL2(tokenizer, input_length=64, seed=10)(examples)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["input_ids"], other["input_ids"])
    unseeded = DataCollatorForUL2(tokenizer, input_length=64)
    torch.manual_seed(7)
    a = unseeded(examples)
    torch.manual_seed(7)
    b = unseeded(examples)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["input_ids"], unseeded(examples)["input_ids"])


def test_mixed_batch_pads_to_the_longest_example_and_a_tiny_model_takes_it():
    import transformers

    import hfpipe

    tokenizer = ul2_tokenizer(64)
    collator = DataCollatorForUL2(tokenizer, input_length=64, pad_to_multiple_of=8, seed=0)
    batch = collator(blocks(64, collator.block_length, seed=6))
    assert batch["input_ids"].shape == (64, 64) and batch["labels"].shape == (64, 64)  # 63 rounded up to 8
    targets = batch["labels"].ne(-100).sum(dim=1)
    assert set(targets.tolist()) <= {14, 13, 62, 63, 22}
    assert batch["decoder_input_ids"][:, 1:].masked_select(batch["labels"][:, :-1].eq(-100)).eq(PAD).all()
    assert batch["attention_mask"].sum(dim=1).eq(64).all()  # every denoiser fills the encoder

    torch.manual_seed(0)
    config = hfpipe.config_for("seq2seq", "tiny", vocab_size=len(tokenizer), pad_token_id=PAD, eos_token_id=EOS,
                               decoder_start_token_id=PAD)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config).eval()
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert math.isfinite(loss) and abs(loss - math.log(len(tokenizer))) < 1.0  # untrained: about ln(vocabulary)


def test_add_ul2_tokens_to_a_trained_t5_tokenizer_is_idempotent():
    from hfpipe.tokenization import train_tokenizer

    words = "the model reads a text and writes its missing spans back in order".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(300)]
    tokenizer = train_tokenizer(texts, "seq2seq", vocab_size=300)
    before = len(tokenizer)
    assert add_ul2_tokens(tokenizer, UL2_DENOISERS, 512) == 3 + 27  # paradigm tokens, <extra_id_100..126>
    assert len(tokenizer) == before + 30 and add_ul2_tokens(tokenizer, UL2_DENOISERS, 512) == 0
    assert tokenizer.convert_tokens_to_ids(["[NLU]", "[NLG]", "[S2S]", "<extra_id_126>"]) == [
        before, before + 1, before + 2, before + 29]
    ids = tokenizer("[S2S] the model").input_ids
    assert ids[0] == before + 2 and tokenizer.convert_ids_to_tokens(ids[0]) == "[S2S]"
    collator = DataCollatorForUL2(tokenizer, input_length=512, seed=0)
    pieces = np.random.default_rng(7).integers(3, before - 100, size=(64, collator.block_length))  # no sentinels
    batch = collator([{"input_ids": row.tolist()} for row in pieces])
    assert set(batch["input_ids"][:, 0].tolist()) == {before, before + 1, before + 2}
    # X(3, 0.5) examples use all 127 sentinels: T5's 100 (counting down from the top of the pieces) then the added 27.
    x3 = batch["labels"].ne(-100).sum(dim=1).eq(510)
    assert x3.any()
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{j}>" for j in range(127)])
    labels = batch["labels"][x3][0]
    assert labels[torch.isin(labels, torch.tensor(sentinels))].tolist() == sentinels


def test_a_checkpoint_gets_embedding_rows_for_the_added_tokens(tmp_path):
    import transformers

    import hfpipe
    from hfpipe.recipes import Recipe

    tokenizer = make_t5_tokenizer()
    config = hfpipe.config_for("seq2seq", "tiny", vocab_size=len(tokenizer), pad_token_id=PAD, eos_token_id=EOS,
                               decoder_start_token_id=PAD)
    transformers.AutoModelForSeq2SeqLM.from_config(config).save_pretrained(tmp_path / "t5")
    recipe = Recipe.from_dict({"kind": "pretrain", "model": {"family": "seq2seq", "name_or_path": str(tmp_path / "t5")},
                               "objective": {"name": "ul2", "max_seq_length": 512}})
    added = add_ul2_tokens(tokenizer, UL2_DENOISERS, 512)
    assert added == 30 and len(tokenizer) == 330
    model = recipe.objective.build_model(recipe, tokenizer, added)
    assert model.get_input_embeddings().weight.shape[0] == 330 and model.config.vocab_size == 330
    with pytest.raises(InputError, match="330 entries but the embedding"):
        recipe.objective.build_model(recipe, tokenizer)  # tokens the objective did not add are a mismatched tokenizer


@pytest.mark.parametrize(("override", "message"), [
    ("[{paradigm: r, mean_noise_span_length: 3, noise_density: 0.15}, {paradigm: x, mean_noise_span_length: 3, "
     "noise_density: 0.15, weight: 0}]", r"objective\.denoisers\[1\]\.weight: expected a number > 0"),
    ("[{paradigm: x, mean_noise_span_length: 3, noise_density: 0.9}]",
     r"objective\.denoisers\[0\]\.noise_density: 0\.9 makes targets of 2556 tokens"),
    ("[{paradigm: s, mean_noise_span_length: 3, noise_density: 0.25}]",
     r"objective\.denoisers\[0\]\.mean_noise_span_length: has no effect with paradigm s"),
    ("[{paradigm: r, noise_density: 0.15}]", r"objective\.denoisers\[0\]\.mean_noise_span_length: expected a number"),
    ("[{paradigm: q, mean_noise_span_length: 3, noise_density: 0.15}]", r"objective\.denoisers\[0\]\.paradigm"),
    ("[{paradigm: r, mean_noise_span_length: 3}]", r"objective\.denoisers\[0\]\.noise_density: missing required"),
])
def test_bad_denoisers_are_input_errors_naming_the_key(override, message):
    with pytest.raises(InputError, match=message):
        load_recipe(RECIPE, overrides=[f"objective.denoisers={override}"])


def test_denoisers_only_apply_to_ul2_and_default_to_the_papers_seven():
    with pytest.raises(InputError, match=r"objective\.denoisers: has no effect with objective\.name: span_corruption"):
        load_recipe(RECIPE, overrides=["objective.name=span_corruption"])
    recipe = load_recipe(RECIPE, overrides=["objective.denoisers=[]"])
    from hfpipe.data.ul2 import as_denoisers

    assert as_denoisers(recipe.objective.denoisers) == UL2_DENOISERS
    assert as_denoisers(load_recipe(RECIPE).objective.denoisers) == UL2_DENOISERS  # the recipe lists them all


def test_wrong_block_length_and_missing_tokens_are_input_errors():
    collator = DataCollatorForUL2(ul2_tokenizer(64), input_length=64)
    with pytest.raises(InputError, match=r"example 1: input_ids holds 121 tokens, expected exactly 122"):
        collator(blocks(1, 122) + blocks(1, 121))
    with pytest.raises(InputError, match=r"lacks \[NLU\], \[NLG\], \[S2S\] \.\.\..*add_ul2_tokens"):
        DataCollatorForUL2(make_t5_tokenizer(), input_length=512)
