"""A pretraining objective is one module: a toy one, registered from this test module, is a recipe
section with its own keys and checks, and `hfpipe pretrain` trains it, with no other change to hfpipe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml
from tiny_runs import four_steps

import hfpipe  # noqa: F401  (registers the built-in objectives)
from hfpipe.errors import InputError
from hfpipe.objectives import Examples, Objective
from hfpipe.objectives.examples import argmax_logits, lm_metrics, packed_blocks
from hfpipe.recipes import OBJECTIVES, Recipe
from hfpipe.recipes.engine import AT_LEAST_ONE, checked, error


@dataclass
class BackwardsLmObjectiveSection(Objective):
    """A toy: causal LM on packed blocks read from the last token to the first."""

    family = "decoder"
    auto_class = "AutoModelForCausalLM"

    name: Literal["toy_backwards_lm"]
    reversed_span: int = checked(8, AT_LEAST_ONE)  # reverse the block in chunks of this many tokens

    def check(self, where: str) -> None:
        if self.reversed_span > self.max_seq_length:
            raise error(where, "objective.reversed_span", f"must be <= max_seq_length ({self.max_seq_length})")

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        from hfpipe.data.collators import DataCollatorForCausalLM

        splits, counters = packed_blocks(recipe, corpus, tokenizer, self.max_seq_length, tokenizer.eos_token_id)
        span = self.reversed_span

        def backwards(batch):
            return {"input_ids": [[t for i in range(0, len(ids), span) for t in reversed(ids[i:i + span])]
                                  for ids in batch["input_ids"]]}

        splits = {split: blocks.map(backwards, batched=True) for split, blocks in splits.items()}
        return Examples(splits["train"], splits.get("validation"), DataCollatorForCausalLM(tokenizer),
                        lm_metrics(True), argmax_logits, counters)


@pytest.fixture
def toy_objective(register_plugin):
    return register_plugin(OBJECTIVES, BackwardsLmObjectiveSection)  # the one registry line


def recipe(tmp_path, **objective):
    return {"kind": "pretrain", "model": {"family": "decoder", "size": "tiny"},
            "objective": {"name": "toy_backwards_lm", "max_seq_length": 32, **objective},
            "tokenizer": {"vocab_size": 300},
            "data": {"validation_samples": 8},
            "train": four_steps(tmp_path / "run", batch_size=4)}


def test_a_registered_objective_is_a_recipe_section_with_its_keys_and_checks(toy_objective, tmp_path):
    r = Recipe.from_dict(recipe(tmp_path, reversed_span=4))
    assert isinstance(r.objective, toy_objective) and r.objective.reversed_span == 4
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(InputError, match=r"objective.reversed_span: must be <= max_seq_length \(32\)"):
        Recipe.from_dict(recipe(tmp_path, reversed_span=64))
    with pytest.raises(InputError, match="objective.document_mask: has no effect with objective.name: "
                                         "toy_backwards_lm .it applies to mlm, span_mlm, electra, clm, span_corruption"):
        Recipe.from_dict(recipe(tmp_path, document_mask=True))
    with pytest.raises(InputError, match="objective.reversed_span: has no effect with objective.name: clm"):
        Recipe.from_dict({**recipe(tmp_path), "objective": {"name": "clm", "reversed_span": 4}})
    with pytest.raises(InputError, match="toy_backwards_lm needs model.family: decoder, got encoder"):
        Recipe.from_dict({**recipe(tmp_path), "model": {"family": "encoder"}})


def test_an_unregistered_objective_is_an_unknown_name(tmp_path):
    with pytest.raises(InputError, match="objective.name: expected one of mlm_nsp, .*, ul2, got 'toy_backwards_lm'"):
        Recipe.from_dict(recipe(tmp_path))


def test_hfpipe_pretrain_trains_a_registered_objective(toy_objective, tmp_path):
    import transformers

    from hfpipe.pretrain import run_pretraining

    r = Recipe.from_dict(recipe(tmp_path))
    metrics = run_pretraining(r)
    out = tmp_path / "run"
    assert (out / "train_results.json").is_file() and "eval_loss" in metrics
    history = json.loads((out / "trainer_state.json").read_text())
    assert history["global_step"] == 4
    model = transformers.AutoModelForCausalLM.from_pretrained(out)  # the objective's Auto class, in plain transformers
    assert model.config.model_type == "hfpipe_decoder"
    saved = Recipe.from_dict(yaml.safe_load((out / "recipe.yaml").read_text()))
    assert isinstance(saved.objective, toy_objective)


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretraining_from_a_checkpoint_applies_and_checks_model_config(objective, tmp_path):
    """model.config overrides reach a checkpoint's config (they were silently ignored), and a key that
    config lacks is one InputError before any weight loads."""
    from test_hub import build_tokenizer

    from hfpipe.models import HfpipeEncoderForMaskedLM, config_for
    from hfpipe.pretrain import run_pretraining

    tokenizer, checkpoint = build_tokenizer(), tmp_path / "encoder"
    HfpipeEncoderForMaskedLM(config_for("encoder", "tiny", vocab_size=len(tokenizer))).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)

    def continued(config):
        return {"kind": "pretrain", "model": {"family": "encoder", "name_or_path": str(checkpoint), "config": config},
                "objective": {"name": objective, "max_seq_length": 32}, "data": {"validation_samples": 8},
                "train": four_steps(tmp_path / "run", batch_size=4)}

    with pytest.raises(InputError, match=rf"model.config: unknown {checkpoint} \(HfpipeEncoderConfig\) config "
                                         r"field 'hidden_dropout'"):
        run_pretraining(Recipe.from_dict(continued({"hidden_dropout": 0.0})))
    run_pretraining(Recipe.from_dict(continued({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.0  # the preset's are 0.1
