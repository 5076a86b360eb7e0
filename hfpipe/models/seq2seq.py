"""The encoder-decoder family (T5): a bidirectional stack, a causal stack with cross
attention, one shared token embedding.

    HfpipeSeq2SeqModel                          encoder + decoder -> decoder hidden states
    HfpipeSeq2SeqForConditionalGeneration       + LM head: span corruption, prefix LM and
                                                text-to-text training; ``generate``

Labels are the target ids (-100 to ignore); decoder inputs are the labels shifted right
behind ``decoder_start_token_id`` (T5: the pad id) unless given.

Packed documents (span corruption with ``document_mask``): ``position_ids`` (B, S) and
``decoder_position_ids`` (B, T) restart at 0 at each document's first input / target token.
The encoder's and the decoder's self-attention then stay within each document, and the
decoder's k-th document cross-attends to the encoder's k-th only, so a packed row computes
what each document computes alone (T5's relative positions within a document are unchanged;
pairs across documents are masked). Both or neither; not with a KV cache (generation).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from .attention_patterns import shift_right
from .blocks import CACHE_FIELD, HfpipePreTrainedModel, TransformerStack, either_cache, lm_logits_and_loss
from .configuration import HfpipeSeq2SeqConfig


class HfpipeSeq2SeqPreTrainedModel(HfpipePreTrainedModel):
    config_class = HfpipeSeq2SeqConfig

    def shift_right(self, labels: torch.Tensor, decoder_position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """labels (B, L) -> decoder_input_ids (B, L): start token, then labels[:, :-1], -100 -> pad;
        with ``decoder_position_ids``, every packed document starts with the start token
        (attention_patterns.shift_right, which the data collators use too)."""
        start = self.config.decoder_start_token_id
        if start is None:
            start = self.config.pad_token_id
        return shift_right(labels, start, self.config.pad_token_id, decoder_position_ids)


class Seq2SeqStack(TransformerStack):
    """A TransformerStack that embeds its own ids with the model's shared embedding, so that
    ``generate`` can run the encoder alone (it calls ``get_encoder()(input_ids=...)``)."""

    def __init__(self, config, num_layers: int, causal: bool, shared: nn.Embedding):
        super().__init__(config, num_layers, causal=causal, cross_attention=causal)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.set_embed_tokens(shared)

    def set_embed_tokens(self, shared: nn.Embedding):
        # A plain attribute, not a submodule: the embedding belongs to the model and is saved
        # once, as shared.weight, whatever tie_word_embeddings says about the output layer.
        self.__dict__["embed_tokens"] = shared

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_hidden_states: bool | None = None,
        position_ids: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
        encoder_position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutput:
        """input_ids (B, T) -> last_hidden_state (B, T, C).

        T5's positions are relative, so ``position_ids`` only mark packed documents (restarting at
        0); ``global_attention_mask`` (B, T) marks global positions of a windowed stack;
        ``encoder_position_ids`` (decoder only) mark the encoder's documents for cross attention.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        hidden_states, all_hidden_states = super().forward(
            self.dropout(inputs_embeds),
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            output_hidden_states=bool(output_hidden_states),
            position_ids=position_ids,
            global_attention_mask=global_attention_mask,
            encoder_position_ids=encoder_position_ids,
        )
        return BaseModelOutput(last_hidden_state=self.dropout(hidden_states), hidden_states=all_hidden_states)


class HfpipeSeq2SeqModel(HfpipeSeq2SeqPreTrainedModel):
    def __init__(self, config: HfpipeSeq2SeqConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = Seq2SeqStack(config, config.num_hidden_layers, causal=False, shared=self.shared)
        self.decoder = Seq2SeqStack(config, config.num_decoder_layers, causal=True, shared=self.shared)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value
        self.encoder.set_embed_tokens(value)
        self.decoder.set_embed_tokens(value)

    def get_encoder(self):
        return self.encoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        cache: Cache | None = None,
        global_attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        decoder_position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqModelOutput:
        """input_ids (B, S), decoder_input_ids (B, T) -> decoder last_hidden_state (B, T, C).

        global_attention_mask (B, S): global positions of a windowed encoder (Longformer-Encoder-Decoder's).
        position_ids (B, S) and decoder_position_ids (B, T): packed documents (see the module docstring).
        """
        if (position_ids is None) != (decoder_position_ids is None) and past_key_values is None and cache is None:
            raise ValueError(
                "position_ids and decoder_position_ids mark packed documents on both sides (document k of the "
                "encoder is document k of the decoder): give both or neither"
            )
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids, attention_mask, inputs_embeds, output_hidden_states=output_hidden_states,
                global_attention_mask=global_attention_mask, position_ids=position_ids,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        past_key_values = either_cache(past_key_values, cache)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        decoder_outputs = self.decoder(
            decoder_input_ids,
            decoder_attention_mask,
            decoder_inputs_embeds,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            past_key_values=past_key_values,
            output_hidden_states=output_hidden_states,
            position_ids=decoder_position_ids,
            encoder_position_ids=position_ids,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            decoder_hidden_states=decoder_outputs.hidden_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )


class HfpipeSeq2SeqForConditionalGeneration(HfpipeSeq2SeqPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: HfpipeSeq2SeqConfig):
        super().__init__(config)
        self.model = HfpipeSeq2SeqModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.shared

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_encoder(self):
        return self.model.encoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        return self.shift_right(labels)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        past_key_values=None,
        inputs_embeds=None,
        decoder_inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        num_items_in_batch=None,
        cache=None,
        global_attention_mask=None,
        position_ids=None,
        decoder_position_ids=None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.shift_right(labels, decoder_position_ids)
        outputs = self.model(
            input_ids,
            attention_mask,
            decoder_input_ids,
            decoder_attention_mask,
            encoder_outputs,
            either_cache(past_key_values, cache),
            inputs_embeds,
            decoder_inputs_embeds,
            use_cache,
            output_hidden_states,
            global_attention_mask=global_attention_mask,
            position_ids=position_ids,
            decoder_position_ids=decoder_position_ids,
        )
        hidden_states = outputs.last_hidden_state
        if self.config.scale_decoder_outputs:
            # T5 v1.0 rescales before its tied output projection (embeddings are not scaled on input).
            hidden_states = hidden_states * (self.config.hidden_size**-0.5)
        # In training with labels logits is None: see blocks.lm_logits_and_loss.
        logits, loss = lm_logits_and_loss(self, self.lm_head, hidden_states, labels, num_items_in_batch)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=outputs.decoder_hidden_states,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )
