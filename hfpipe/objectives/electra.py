"""ELECTRA (Clark et al. 2020): a small masked-LM generator fills the masked positions with samples; the
encoder (the discriminator) learns which tokens were replaced, at every position."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from hfpipe.errors import InputError
from hfpipe.recipes.engine import POSITIVE, PROBABILITY, Range, checked

from .base import Examples, register
from .examples import token_accuracy
from .masking import WordPieceMaskingObjectiveSection, framed_blocks

logger = logging.getLogger("hfpipe.pretrain")


def electra_metrics(eval_pred):
    """ELECTRA's evaluation (the official code's metric_fn): the generator's masked-LM loss and accuracy,
    how many masked tokens its samples replaced, the discriminator's accuracy over every token."""
    logits, replaced, predictions, nll = eval_pred.predictions[:4]
    labels = eval_pred.label_ids
    masked = labels != -100
    scored = replaced != -100  # Trainer pads batches with -100 too
    return {
        "generator_loss": float(nll[masked].mean()) if masked.any() else float("nan"),
        "generator_accuracy": token_accuracy(predictions, labels),
        "replaced_fraction": float(replaced[masked].mean()) if masked.any() else float("nan"),
        "discriminator_accuracy": float(((logits > 0) == (replaced == 1))[scored].mean()),
    }


@register
@dataclass
class ElectraObjectiveSection(WordPieceMaskingObjectiveSection):
    """ELECTRA: a small masked-LM generator fills the masked positions with samples, the encoder
    (the discriminator) learns which tokens were replaced; packed blocks, as mlm."""

    auto_class = "AutoModelForPreTraining"
    hub_task = "feature-extraction"  # the Hub has no replaced-token-detection task: the discriminator is an encoder

    name: Literal["electra"]
    # Masking as the official code (google-research/electra, pretrain/pretrain_helpers.py `mask`):
    # of the chosen 15%, 85% -> [MASK] and the rest kept, none random (the paper: all [MASK]).
    mask_replace_prob: float = checked(0.85, PROBABILITY)  # of the chosen tokens: -> [MASK] in the generator's input
    random_replace_prob: float = checked(0.0, PROBABILITY)  # of those: -> random token (the rest unchanged)
    generator_size_fraction: float = checked(0.25, Range(0, 1, low_open=True))  # generator width, FFN, heads (paper Table 6)
    discriminator_weight: float = checked(50.0, POSITIVE)  # lambda: loss = generator MLM + lambda * discriminator BCE
    document_mask: bool = False  # keep attention and positions within each document of a packed block

    def examples(self, recipe, corpus, tokenizer) -> Examples:
        """Packed blocks masked as mlm (85% [MASK], no random tokens); the generator's sampling happens
        in the model, which needs the generator."""
        examples = framed_blocks(self, recipe, corpus, tokenizer)
        examples.compute_metrics, examples.preprocess_logits_for_metrics = electra_metrics, None
        return examples

    def trainer_class(self):
        from hfpipe.training.electra import ElectraTrainer

        return ElectraTrainer

    def final_metrics(self, metrics: dict) -> dict:
        # eval_loss adds lambda times the discriminator's BCE: the perplexity is the generator's MLM one
        return {**metrics, "perplexity": math.exp(min(metrics["eval_generator_loss"], 700.0))}

    def build_model(self, recipe, tokenizer, added_tokens: int = 0):
        """The generator + discriminator: new, sized as the recipe's encoder (the discriminator) and
        ``generator_size_fraction`` of it, or continued from an ELECTRA run's output folder (the
        discriminator there, the generator in its generator/; a plain encoder checkpoint gets a new generator)."""
        from transformers import AutoConfig, AutoModelForMaskedLM
        from transformers.utils import has_file

        from hfpipe.build import check_checkpoint_config_keys, new_model_config
        from hfpipe.models.electra import (
            GENERATOR_FOLDER,
            HfpipeElectraForPreTraining,
            HfpipeEncoderForReplacedTokenDetection,
            electra_generator_config,
        )

        if recipe.model.name_or_path:
            from hfpipe.hub import parse_model_reference

            name, revision = parse_model_reference(recipe.model.name_or_path)
            config = AutoConfig.from_pretrained(name, revision=revision,
                                                trust_remote_code=recipe.model.trust_remote_code)
            if config.model_type != "hfpipe_encoder":
                raise InputError(f"model.name_or_path {recipe.model.name_or_path}: ELECTRA continues an hfpipe "
                                 f"encoder, got model_type {config.model_type}")
            check_checkpoint_config_keys(recipe, config)
            config.update(recipe.model.config)  # the recipe's overrides apply to a checkpoint's config too
        else:
            config = new_model_config(recipe, tokenizer, self.max_seq_length)
        try:
            generator_config = electra_generator_config(config, self.generator_size_fraction)
        except ValueError as problem:
            raise InputError(f"objective.generator_size_fraction: {problem}") from None
        model = HfpipeElectraForPreTraining(config, generator_config, discriminator_weight=self.discriminator_weight)
        if recipe.model.name_or_path:
            # the discriminator head is new where the checkpoint has none (a plain encoder)
            discriminator = HfpipeEncoderForReplacedTokenDetection.from_pretrained(name, revision=revision)
            model.discriminator.load_state_dict(discriminator.state_dict())
            if not has_file(name, f"{GENERATOR_FOLDER}/config.json", revision=revision):
                logger.info("%s has no %s/: a new generator of %.2f the width", name, GENERATOR_FOLDER,
                            self.generator_size_fraction)
            else:
                generator = AutoModelForMaskedLM.from_pretrained(name, revision=revision, subfolder=GENERATOR_FOLDER)
                if generator.config.hidden_size != generator_config.hidden_size:
                    raise InputError(f"{name}/{GENERATOR_FOLDER}: hidden size {generator.config.hidden_size}, but "
                                     f"objective.generator_size_fraction gives {generator_config.hidden_size}")
                model.generator.load_state_dict(generator.state_dict())  # its embeddings are the shared ones
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            raise InputError(f"tokenizer has {len(tokenizer)} entries but the embedding of model "
                             f"{recipe.model.name_or_path} has {model.get_input_embeddings().weight.shape[0]} rows")
        n_generator = sum(p.numel() for n, p in model.generator.named_parameters() if ".embeddings." not in n)
        logger.info("ELECTRA generator: hidden %d, %d heads, FFN %d, %d layers (%.2fM parameters besides the shared "
                    "embeddings); discriminator weight %g", generator_config.hidden_size,
                    generator_config.num_attention_heads, generator_config.intermediate_size,
                    generator_config.num_hidden_layers, n_generator / 1e6, self.discriminator_weight)
        return model
