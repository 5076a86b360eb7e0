"""ELECTRA (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than
Generators"): a small masked-LM generator fills the masked positions with tokens it samples, and the
encoder being trained -- the discriminator -- tells for every token whether it was replaced.

    HfpipeEncoderForReplacedTokenDetection   encoder + ELECTRA's discriminator head (dense, act, dense -> 1)
    electra_generator_config(config, f)      the generator: f of the width, FFN and heads, same depth
    HfpipeElectraForPreTraining              generator + discriminator sharing the embeddings;
                                             loss = generator MLM + discriminator_weight * RTD BCE

What is kept is the discriminator: ``HfpipeElectraForPreTraining.save_pretrained(dir)`` writes it to
``dir`` as an ordinary hfpipe encoder checkpoint (every encoder head and Auto class loads it), and
the generator to ``dir/generator`` as an hfpipe encoder masked-LM checkpoint (its own copy of the
shared embeddings). This file travels with saved checkpoints (trust_remote_code), so it imports
nothing from hfpipe.

Shapes: B batch, T length, K masked positions of the batch, V vocabulary, C hidden size.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.utils import ModelOutput

from .blocks import embedding_width, normalise
from .configuration import HfpipeEncoderConfig
from .encoder import HfpipeEncoderForMaskedLM, HfpipeEncoderModel, HfpipeEncoderPreTrainedModel

GENERATOR_FOLDER = "generator"  # the generator's checkpoint, inside the discriminator's


class DiscriminatorHead(nn.Module):
    """ELECTRA's ``discriminator_predictions``: dense (C -> C), activation, dense (C -> 1)."""

    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> replaced-token logits (B, T)"""
        return self.dense_prediction(self.act(self.dense(hidden_states))).squeeze(-1)


class HfpipeEncoderForReplacedTokenDetection(HfpipeEncoderPreTrainedModel):
    """The ELECTRA discriminator (transformers' ElectraForPreTraining): a logit per token, > 0 for
    "replaced". ``labels`` (B, T): 1 replaced, 0 original, -100 not scored (padding); the loss is
    the binary cross-entropy summed over the scored tokens, over ``num_items_in_batch`` (the loss
    contract in blocks.py: Trainer counts exactly those tokens), else their mean."""

    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__(config)
        self.model = HfpipeEncoderModel(config, add_pooling_layer=False)  # ELECTRA has no pooler
        self.discriminator_head = DiscriminatorHead(config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        past_key_values=None,
        output_hidden_states=None,
        num_items_in_batch=None,
        global_attention_mask=None,
        cache=None,
        **kwargs,
    ) -> TokenClassifierOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values,
            output_hidden_states, global_attention_mask=global_attention_mask, cache=cache,
        )
        logits = self.discriminator_head(outputs.last_hidden_state)  # (B, T)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            scored = labels != -100  # (B, T)
            losses = F.binary_cross_entropy_with_logits(logits.float(), labels.clamp(min=0).float(), reduction="none")
            loss = normalise(losses.masked_fill(~scored, 0.0).sum(), scored.sum(), num_items_in_batch)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


def electra_generator_config(config: HfpipeEncoderConfig, size_fraction: float = 0.25) -> HfpipeEncoderConfig:
    """The generator of a discriminator with ``config``: its hidden size, FFN size and heads times
    ``size_fraction`` (the paper's Table 6 "generator size" multiplies exactly these three: 1/4 for
    ELECTRA-Small and -Large, 1/3 for -Base), the same depth (the official code's
    generator_layers = 1.0) and the discriminator's embedding width, whose embeddings it shares."""
    if not 0 < size_fraction <= 1:
        raise ValueError(f"size_fraction must be in (0, 1], got {size_fraction!r}")
    generator = copy.deepcopy(config)
    generator.hidden_size = max(1, round(config.hidden_size * size_fraction))
    generator.num_attention_heads = max(1, round(config.num_attention_heads * size_fraction))
    if generator.hidden_size % generator.num_attention_heads:
        raise ValueError(f"the generator's hidden size {generator.hidden_size} is not divisible by its "
                         f"{generator.num_attention_heads} heads; choose another size_fraction")
    generator.head_dim = generator.hidden_size // generator.num_attention_heads
    generator.intermediate_size = max(1, round(config.intermediate_size * size_fraction))
    generator.embedding_size = embedding_width(config)  # shared: projected to the generator's width
    generator.architectures = None
    return generator


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(K, V) logits -> (K,) token ids drawn from softmax(logits / temperature), by the Gumbel-max
    trick as the official code's sample_from_softmax. No gradient: the ids are integers."""
    with torch.no_grad():
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
        uniform = uniform.clamp_(min=torch.finfo(torch.float32).tiny)
        gumbel = -torch.log(-torch.log(uniform))  # (K, V)
        return (logits.detach().float() / temperature + gumbel).argmax(-1)  # (K,)


@dataclass
class ElectraForPreTrainingOutput(ModelOutput):
    """``loss`` = generator_loss + discriminator_weight * discriminator_loss. Per token (B, T):
    ``logits``, the discriminator's; ``replaced``, its labels (1 replaced, 0 original, -100 padding);
    ``generator_predictions``, the generator's argmax at masked positions (-100 elsewhere);
    ``generator_nll``, its negative log-likelihood of the original token there (0 elsewhere)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    replaced: torch.Tensor | None = None
    generator_predictions: torch.Tensor | None = None
    generator_nll: torch.Tensor | None = None
    generator_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None


class HfpipeElectraForPreTraining(HfpipeEncoderPreTrainedModel):
    """ELECTRA's pretraining model: generator and discriminator, trained jointly.

    Inputs are a masked-LM batch (``DataCollatorForBertPretraining``): ``input_ids`` (B, T) with the
    chosen positions masked, ``labels`` (B, T) holding the original token there and -100 elsewhere.
    The generator predicts the chosen positions (its MLM loss), a token is sampled from its
    distribution at each of them (no gradient flows through the sample), the discriminator reads
    the original sequence with those samples written in, and learns which tokens differ from the
    original: a sample that equals the original is labelled original, as in the paper.
    Its loss is taken over every non-padding token ([CLS] and [SEP] included, as the official
    code's input_mask).

    Normalisation (the loss contract in blocks.py): the generator loss over ``num_items_in_batch``
    (Trainer's count of masked tokens), the discriminator loss over ``num_tokens_in_batch`` (the
    non-padding tokens of the optimizer step, passed by hfpipe's Trainer); each over this batch's
    own count when not given.

    ``config`` is the discriminator's; the generator's defaults to ``electra_generator_config``.
    The generator shares the discriminator's whole embedding module (token, position and type
    embeddings and their norm, as the official code's shared "electra/embeddings" scope), and its
    MLM output embedding is the shared token embedding.
    """

    def __init__(
        self,
        config: HfpipeEncoderConfig,
        generator_config: HfpipeEncoderConfig | None = None,
        discriminator_weight: float = 50.0,
        generator_size_fraction: float = 0.25,
        temperature: float = 1.0,
    ):
        super().__init__(config)
        self.discriminator = HfpipeEncoderForReplacedTokenDetection(config)
        self.generator = HfpipeEncoderForMaskedLM(
            generator_config or electra_generator_config(config, generator_size_fraction)
        )
        embeddings = self.discriminator.model.embeddings
        if embedding_width(self.generator.config) != embedding_width(config):
            raise ValueError("the generator's embedding_size must be the discriminator's: they share the embeddings")
        self.generator.model.embeddings = embeddings
        self.generator.mlm_head.decoder.weight = embeddings.word_embeddings.weight
        self.discriminator_weight = discriminator_weight
        self.temperature = temperature
        self.post_init()

    def get_input_embeddings(self):
        return self.discriminator.model.embeddings.word_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        num_items_in_batch=None,
        num_tokens_in_batch=None,
        **kwargs,
    ) -> ElectraForPreTrainingOutput:
        if labels is None:
            raise ValueError("ELECTRA's pretraining model needs labels: the original token at each masked position")
        labels = labels.to(input_ids.device)
        chosen = labels != -100  # (B, T)
        original = torch.where(chosen, labels, input_ids)  # (B, T)

        # Generator: masked LM at the chosen positions only, as the official code's gather
        hidden = self.generator.model(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        rows = chosen.reshape(-1).nonzero().squeeze(1)  # (K,), one host sync
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)  # (K, c)
        generator_logits = self.generator.mlm_head(hidden)  # (K, V)
        targets = labels.reshape(-1).index_select(0, rows)  # (K,)
        nll = F.cross_entropy(generator_logits.float(), targets, reduction="none")  # (K,)
        generator_loss = normalise(nll.sum(), rows.numel(), num_items_in_batch)

        # Replace the chosen tokens by samples; a sample equal to the original stays "original"
        # Evaluation draws from a fixed seed, so that eval_loss compares checkpoints, not draws
        seeded = None if self.training else torch.Generator(generator_logits.device).manual_seed(0)
        sampled = sample_tokens(generator_logits, self.temperature, seeded)  # (K,)
        corrupted = original.reshape(-1).index_copy(0, rows, sampled).view_as(original)  # (B, T)
        padding = attention_mask == 0 if attention_mask is not None else torch.zeros_like(chosen)
        replaced = (corrupted != original).long().masked_fill(padding, -100)  # (B, T)

        discriminator = self.discriminator(
            corrupted, attention_mask, token_type_ids, position_ids, labels=replaced,
            num_items_in_batch=num_tokens_in_batch,
        )
        loss = generator_loss + self.discriminator_weight * discriminator.loss

        def per_token(values, fill):  # (K,) -> (B, T), ``fill`` where nothing was masked
            flat = torch.full(original.shape, fill, dtype=values.dtype, device=values.device).reshape(-1)
            return flat.index_copy(0, rows, values).view_as(original)

        return ElectraForPreTrainingOutput(
            loss=loss,
            logits=discriminator.logits,
            replaced=replaced,
            generator_predictions=per_token(generator_logits.detach().argmax(-1), -100),
            generator_nll=per_token(nll.detach(), 0.0),
            generator_loss=generator_loss,
            discriminator_loss=discriminator.loss,
        )

    # ------------------------------------------------------------------ the two checkpoints
    def save_pretrained(self, save_directory, is_main_process: bool = True, state_dict=None, **kwargs):
        """The discriminator into ``save_directory``, the generator into ``save_directory/generator``.
        ``state_dict`` (Trainer's, for sharded or wrapped models): this model's, split by part."""
        from transformers.dynamic_module_utils import custom_object_save

        for prefix, part, folder in (("discriminator.", self.discriminator, save_directory),
                                     ("generator.", self.generator, os.path.join(save_directory, GENERATOR_FOLDER))):
            part_state = None if state_dict is None else {
                name[len(prefix):]: tensor for name, tensor in state_dict.items() if name.startswith(prefix)
            }
            if "should_save_on_this_rank" in vars(self):  # hfpipe's Trainer decides which ranks write
                part.should_save_on_this_rank = self.should_save_on_this_rank
            part.save_pretrained(folder, is_main_process=is_main_process, state_dict=part_state, **kwargs)
            if part.should_save_on_this_rank(is_main_process) and not part.is_remote_code():
                # The discriminator's class is registered with no Auto class (transformers' own
                # AutoModelForPreTraining means MLM + NSP for this config), so save_pretrained would
                # not copy the modeling files that trust_remote_code loading needs: copy them here.
                custom_object_save(part, folder)

    def load_saved(self, folder) -> None:
        """Load the weights ``save_pretrained`` wrote (resuming from a checkpoint): the discriminator
        from ``folder``, the generator from ``folder/generator``. Raises on any missing weight."""
        from safetensors.torch import load_file

        for part, where in ((self.generator, os.path.join(folder, GENERATOR_FOLDER)), (self.discriminator, folder)):
            missing, unexpected = part.load_state_dict(load_file(os.path.join(where, "model.safetensors")), strict=False)
            tied = {"mlm_head.decoder.weight"}  # the token embedding, stored once
            missing = [name for name in missing if name not in tied]
            if missing or unexpected:
                raise ValueError(f"{where}: not an ELECTRA part saved by hfpipe (missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]})")


__all__ = [
    "ElectraForPreTrainingOutput",
    "HfpipeElectraForPreTraining",
    "HfpipeEncoderForReplacedTokenDetection",
    "electra_generator_config",
    "sample_tokens",
]
