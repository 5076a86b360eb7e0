"""ELECTRA (Clark et al. 2020): replaced-token labels and both losses against a direct computation,
where the gradients go, the masking and replacement statistics, and the two saved checkpoints.

Tiny models from configs and a WordPiece tokenizer built on the fly; no download, no mocks.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import hfpipe
from hfpipe.models.electra import (
    GENERATOR_FOLDER,
    HfpipeElectraForPreTraining,
    electra_generator_config,
    sample_tokens,
)
from hfpipe.recipes import load_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "electra.yaml"
PAD, UNK, CLS, SEP, MASK = range(5)
VOCAB = 60  # 5 specials + 55 words


def _config(**overrides):
    return hfpipe.config_for("encoder", "tiny", vocab_size=VOCAB, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, **overrides)


def _model(seed=0, **overrides) -> HfpipeElectraForPreTraining:
    torch.manual_seed(seed)
    return HfpipeElectraForPreTraining(_config(**overrides))


def _tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(VOCAB - 5)])}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    roles = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **dict(zip(roles, specials)))


def _batch():
    """Two sequences, the second padded; positions 2 and 5 masked, 7 chosen but kept (ELECTRA's 15% kept)."""
    original = torch.tensor([[CLS, 10, 11, 12, 13, 14, 15, 16, 17, SEP],
                             [CLS, 20, 21, 22, 23, 24, 25, 26, SEP, PAD]])
    attention_mask = (original != PAD).long()
    chosen = torch.zeros_like(original, dtype=torch.bool)
    chosen[:, [2, 5, 7]] = True
    input_ids = original.clone()
    input_ids[:, [2, 5]] = MASK
    labels = torch.where(chosen, original, -100)
    return input_ids, attention_mask, labels, chosen


# ---------------------------------------------------------------------------- labels and losses
def test_replaced_labels_and_both_losses_match_a_direct_computation():
    model = _model().eval()
    input_ids, attention_mask, labels, chosen = _batch()
    with torch.no_grad():
        hidden = model.generator.model(input_ids, attention_mask).last_hidden_state
        greedy = model.generator.mlm_head(hidden).argmax(-1)  # (B, T): what a cold sample picks
    # Originals chosen so that the sample equals the original at [0, 2] and [1, 7] (label 0) and differs elsewhere.
    labels = labels.clone()
    labels[0, 2], labels[1, 7] = greedy[0, 2], greedy[1, 7]
    for b, t in ((0, 5), (0, 7), (1, 2), (1, 5)):
        labels[b, t] = 5 + (greedy[b, t] - 5 + 1) % (VOCAB - 5)  # any word but the sample
    original = torch.where(chosen, labels, input_ids)
    model.temperature = 1e-6  # sampling becomes the argmax: the direct computation knows the samples

    out = model(input_ids, attention_mask, labels=labels)

    corrupted = torch.where(chosen, greedy, original)
    expected = torch.where(corrupted != original, 1, 0).masked_fill(attention_mask == 0, -100)
    assert out.replaced.tolist() == expected.tolist()
    assert out.replaced[0, 2] == 0 and out.replaced[1, 7] == 0  # a sample equal to the original is "original"
    assert int((out.replaced == 1).sum()) == 4 and out.replaced[1, 9] == -100

    with torch.no_grad():
        logits = model.generator(input_ids, attention_mask).logits  # (B, T, V), eval: every position
        generator_loss = F.cross_entropy(logits[chosen], original[chosen])
        scores = model.discriminator(corrupted, attention_mask).logits  # (B, T)
        real = attention_mask.bool()
        discriminator_loss = F.binary_cross_entropy_with_logits(scores[real], (corrupted != original)[real].float())
    assert out.generator_loss.item() == pytest.approx(generator_loss.item(), rel=1e-5)
    assert out.discriminator_loss.item() == pytest.approx(discriminator_loss.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(generator_loss.item() + 50 * discriminator_loss.item(), rel=1e-5)
    assert torch.allclose(out.logits, scores, atol=1e-6)
    assert out.generator_predictions[chosen].tolist() == greedy[chosen].tolist()
    assert (out.generator_predictions[~chosen] == -100).all()


def test_the_loss_over_micro_batches_with_the_step_counts_is_the_full_batch_loss():
    """The loss contract: with Trainer's masked-token count and hfpipe's non-padding count of the step,
    the micro-batch losses add up to the full batch's."""
    model = _model().eval()
    model.temperature = 1e-6  # the same samples in both runs
    input_ids, attention_mask, labels, _ = _batch()
    full = model(input_ids, attention_mask, labels=labels)
    counts = dict(num_items_in_batch=(labels != -100).sum(), num_tokens_in_batch=attention_mask.sum())
    parts = [model(input_ids[i:i + 1], attention_mask[i:i + 1], labels=labels[i:i + 1], **counts) for i in (0, 1)]
    for key in ("loss", "generator_loss", "discriminator_loss"):
        assert sum(getattr(p, key) for p in parts).item() == pytest.approx(getattr(full, key).item(), rel=1e-5)


# ---------------------------------------------------------------------------- gradients
def test_gradients_reach_both_networks_and_the_shared_embeddings_from_both_losses():
    model = _model().train()
    input_ids, attention_mask, labels, _ = _batch()
    out = model(input_ids, attention_mask, labels=labels)
    embedding = model.discriminator.model.embeddings.word_embeddings.weight
    assert embedding is model.generator.model.embeddings.word_embeddings.weight
    assert model.generator.mlm_head.decoder.weight is embedding
    # (the tied mlm_head.decoder.weight is the embedding, listed once under its first name)
    generator_only = [p for n, p in model.generator.named_parameters() if ".embeddings." not in n]
    discriminator_only = [p for n, p in model.discriminator.named_parameters() if ".embeddings." not in n]
    # a key bias shifts every score of a query alike, so softmax gives it no gradient: None-checks only
    key_biases = {id(p) for n, p in model.named_parameters() if n.endswith("k_proj.bias")}

    def grads(loss, params):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    from_generator = grads(out.generator_loss, [embedding, *generator_only, *discriminator_only])
    from_discriminator = grads(out.discriminator_loss, [embedding, *generator_only, *discriminator_only])
    n = len(generator_only)
    assert from_generator[0].abs().sum() > 0 and from_discriminator[0].abs().sum() > 0  # shared: both losses
    def learns(gradients, params):
        return all(g is not None and (id(p) in key_biases or g.abs().sum() > 0) for g, p in zip(gradients, params))

    assert learns(from_generator[1:1 + n], generator_only)  # the generator learns MLM
    assert all(g is None for g in from_generator[1 + n:])  # ... and nothing of the discriminator
    assert learns(from_discriminator[1 + n:], discriminator_only)
    # the sampled tokens pass no gradient: the discriminator's loss never reaches the generator
    assert all(g is None for g in from_discriminator[1:1 + n])
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------- statistics
def test_masking_follows_the_recipe_over_many_batches():
    """ELECTRA's masking (the official code): 15% of the non-special tokens chosen, 85% of those
    [MASK], the rest kept, none random; special tokens and padding never."""
    objective = load_recipe(RECIPE).objective
    assert (objective.mlm_probability, objective.mask_replace_prob, objective.random_replace_prob) == (0.15, 0.85, 0)
    collator = objective.collator(_tokenizer())
    generator = torch.Generator().manual_seed(0)
    chosen = masked = kept = maskable = 0
    for _ in range(60):
        lengths = torch.randint(20, 64, (16,), generator=generator).tolist()
        rows = [[CLS, *torch.randint(5, VOCAB, (n,), generator=generator).tolist(), SEP] for n in lengths]
        batch = collator([{"input_ids": row} for row in rows])
        original = torch.full_like(batch["input_ids"], PAD)
        for i, row in enumerate(rows):
            original[i, :len(row)] = torch.tensor(row)
        picked = batch["labels"] != -100
        assert (batch["labels"][picked] == original[picked]).all()
        assert not picked[(original < 5)].any()  # [CLS], [SEP], padding
        assert (batch["input_ids"][~picked] == original[~picked]).all()
        assert ((batch["input_ids"][picked] == MASK) | (batch["input_ids"][picked] == original[picked])).all()
        chosen += int(picked.sum())
        masked += int((batch["input_ids"][picked] == MASK).sum())
        kept += int((batch["input_ids"][picked] == original[picked]).sum())
        maskable += int((original >= 5).sum())
    assert chosen / maskable == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.85, abs=0.02)
    assert masked + kept == chosen  # no random replacement


def test_samples_follow_the_generator_distribution():
    probabilities = torch.tensor([0.6, 0.25, 0.1, 0.05])
    torch.manual_seed(0)
    draws = sample_tokens(probabilities.log().expand(40_000, 4).clone())
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(frequencies, probabilities, atol=0.01)
    sharp = sample_tokens(probabilities.log().expand(1000, 4).clone(), temperature=0.01)
    assert (sharp == 0).all()


def test_evaluation_draws_the_same_replacements_every_time():
    model = _model().eval()
    input_ids, attention_mask, labels, _ = _batch()
    first, second = (model(input_ids, attention_mask, labels=labels) for _ in range(2))
    assert torch.equal(first.replaced, second.replaced) and first.loss.item() == second.loss.item()


def test_replacements_follow_the_generator_over_many_batches():
    """A generator whose distribution is fixed (its head's norm zeroed: logits = output bias): a chosen
    token is replaced exactly when the sample differs from it, so the replaced fraction of chosen
    tokens whose original has probability p is 1 - p; nothing else is ever labelled replaced."""
    model = _model().train()  # training draws fresh samples for every batch (no dropout in _config)
    probabilities = torch.full((VOCAB,), 0.5 / (VOCAB - 1))
    probabilities[7] = 0.5
    with torch.no_grad():
        model.generator.mlm_head.norm.weight.zero_()
        model.generator.mlm_head.norm.bias.zero_()
        model.generator.mlm_head.decoder.bias.copy_(probabilities.log())
    collator = load_recipe(RECIPE).objective.collator(_tokenizer())
    torch.manual_seed(0)
    replaced_when = {True: [0, 0], False: [0, 0]}  # original is token 7 -> [replaced, chosen]
    for _ in range(40):
        rows = [[CLS, *torch.randint(5, 10, (40,)).tolist(), SEP] for _ in range(16)]
        batch = collator([{"input_ids": row} for row in rows])
        with torch.no_grad():
            out = model(**batch)
        picked = batch["labels"] != -100
        assert not (out.replaced[~picked] == 1).any()
        for is_seven in (True, False):
            where = picked & ((batch["labels"] == 7) == is_seven)
            replaced_when[is_seven][0] += int(out.replaced[where].sum())
            replaced_when[is_seven][1] += int(where.sum())
    seven, other = (replaced / count for replaced, count in replaced_when.values())
    assert seven == pytest.approx(0.5, abs=0.04)  # about 950 chosen sevens
    assert other == pytest.approx(1 - 0.5 / (VOCAB - 1), abs=0.01)


# ---------------------------------------------------------------------------- shapes and checkpoints
def test_the_generator_is_a_quarter_of_the_discriminator_and_shares_its_embedding_width():
    small = load_recipe(RECIPE)
    config = hfpipe.config_for("encoder", small.model.size, **small.model.config)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size,
            config.embedding_size) == (12, 256, 4, 1024, 128)
    generator = electra_generator_config(config, small.objective.generator_size_fraction)
    assert (generator.num_hidden_layers, generator.hidden_size, generator.num_attention_heads,
            generator.head_dim, generator.intermediate_size, generator.embedding_size) == (12, 64, 1, 64, 256, 128)
    assert small.objective.discriminator_weight == 50
    train = small.train
    assert (train.learning_rate, train.per_device_train_batch_size * train.gradient_accumulation_steps,
            small.objective.max_seq_length, train.max_steps, train.warmup_steps, train.weight_decay,
            train.adam_epsilon) == (5e-4, 128, 128, 1_000_000, 10_000, 0.01, 1e-6)


@pytest.mark.parametrize("embedding_size", [None, 32])
def test_the_discriminator_and_generator_save_as_ordinary_encoder_checkpoints(tmp_path, embedding_size):
    model = _model(embedding_size=embedding_size).eval()
    model.save_pretrained(tmp_path)
    input_ids, attention_mask, labels, _ = _batch()
    expected = model.discriminator.model(input_ids, attention_mask).last_hidden_state
    for auto_class in (transformers.AutoModel, transformers.AutoModelForSequenceClassification,
                       transformers.AutoModelForTokenClassification, transformers.AutoModelForQuestionAnswering):
        loaded = auto_class.from_pretrained(tmp_path).eval()
        backbone = loaded if auto_class is transformers.AutoModel else loaded.model
        assert torch.allclose(backbone(input_ids, attention_mask).last_hidden_state, expected, atol=1e-6)
    generator = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / GENERATOR_FOLDER).eval()
    assert generator.config.hidden_size == 16 and generator.config.model_type == "hfpipe_encoder"
    assert torch.allclose(generator(input_ids, attention_mask).logits,
                          model.generator(input_ids, attention_mask).logits, atol=1e-6)
    resumed = _model(seed=1, embedding_size=embedding_size).eval()
    resumed.load_saved(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
    assert resumed.generator.model.embeddings is resumed.discriminator.model.embeddings  # still shared
    model.temperature = resumed.temperature = 1e-6
    assert resumed(input_ids, attention_mask, labels=labels).loss.item() == pytest.approx(
        model(input_ids, attention_mask, labels=labels).loss.item(), rel=1e-6)


def test_perplexity_is_the_generators():
    """eval_loss adds 50 x the discriminator's BCE; the reported perplexity is the generator MLM's."""
    from transformers import EvalPrediction

    from hfpipe.objectives.electra import electra_metrics

    # discriminator logits, replaced labels (-100: padding, as Trainer pads batches), generator argmax and NLL
    outputs = (np.array([[1.0, 2.0, -1.0, -3.0, -100]]), np.array([[0, 1, 0, 0, -100]]),
               np.array([[-100, 7, -100, 3, -100]]), np.array([[0.0, 0.5, 0.0, 1.5, 0.0]]))
    metrics = electra_metrics(EvalPrediction(predictions=outputs, label_ids=np.array([[-100, 7, -100, 9, -100]])))
    assert metrics == {"generator_loss": 1.0, "generator_accuracy": 0.5, "replaced_fraction": 0.5,
                       "discriminator_accuracy": 0.75}
    assert math.exp(metrics["generator_loss"]) == pytest.approx(math.e)


@pytest.mark.parametrize("embedding_size", [None, 32])
def test_the_saved_pair_exports_to_transformers_electra_with_the_same_outputs(tmp_path, embedding_size):
    """hfpipe's post-LN encoder is BERT's layout, which ELECTRA's discriminator and generator share:
    ``hfpipe convert --to transformers`` writes ElectraForPreTraining and ElectraForMaskedLM."""
    from hfpipe.models.convert import export_checkpoint

    model = _model(embedding_size=embedding_size).eval()
    model.save_pretrained(tmp_path / "run")
    assert export_checkpoint(str(tmp_path / "run"), str(tmp_path / "discriminator")) == "ElectraForPreTraining"
    assert export_checkpoint(str(tmp_path / "run" / GENERATOR_FOLDER), str(tmp_path / "generator")) == \
        "ElectraForMaskedLM"
    input_ids, attention_mask, _, _ = _batch()
    discriminator = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    generator = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    assert type(discriminator).__name__ == "ElectraForPreTraining" and discriminator.config.embedding_size == (
        embedding_size or 64)
    assert generator.config.hidden_size == 16 and generator.config.embedding_size == (embedding_size or 64)
    with torch.no_grad():
        assert torch.allclose(discriminator(input_ids, attention_mask).logits,
                              model.discriminator(input_ids, attention_mask).logits, atol=1e-5)
        assert torch.allclose(generator(input_ids, attention_mask).logits,
                              model.generator(input_ids, attention_mask).logits, atol=1e-5)
        base = transformers.ElectraModel.from_pretrained(tmp_path / "discriminator").eval()
        assert torch.allclose(base(input_ids, attention_mask).last_hidden_state,
                              model.discriminator.model(input_ids, attention_mask).last_hidden_state, atol=1e-5)


def test_a_crammed_discriminator_has_a_random_twin_for_the_pretraining_comparison(tmp_path):
    """The cram protocol finetunes a checkpoint and its random twin (build.save_random_twin)."""
    from hfpipe.build import save_random_twin

    model = _model()
    model.save_pretrained(tmp_path / "electra")
    _tokenizer().save_pretrained(tmp_path / "electra")
    twin_dir = save_random_twin(tmp_path / "electra", tmp_path / "twin", seed=3)
    trained = transformers.AutoModel.from_pretrained(tmp_path / "electra")
    twin = transformers.AutoModel.from_pretrained(twin_dir)
    same = {k: v for k, v in twin.config.to_dict().items() if k != "_name_or_path"}
    assert type(twin) is type(trained) and same == {k: v for k, v in trained.config.to_dict().items()
                                                    if k != "_name_or_path"}
    assert transformers.AutoConfig.from_pretrained(twin_dir).architectures == ["HfpipeEncoderForReplacedTokenDetection"]
    weights = trained.state_dict()
    assert all(not torch.equal(weights[name], value) for name, value in twin.state_dict().items()
               if name.endswith("dense.weight"))  # drawn afresh
