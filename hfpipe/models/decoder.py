"""The decoder family (GPT): a causal TransformerStack and its heads.

    HfpipeDecoderModel                        embeddings -> causal stack (KV cache)
    HfpipeDecoderForCausalLM                  next-token prediction; ``generate`` (greedy,
                                              sampling, top-k, top-p, beam search)
    HfpipeDecoderForSequenceClassification    classification from the last non-padding token
    HfpipeDecoderForQuestionAnswering         start/end logits over tokens

Run: ``model.generate(**tokenizer("Once upon", return_tensors="pt"), max_new_tokens=20)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
)

from .blocks import (
    CACHE_FIELD,
    Embeddings,
    HfpipePreTrainedModel,
    TransformerStack,
    either_cache,
    lm_logits_and_loss,
    sequence_classification_loss,
    span_prediction,
)
from .configuration import HfpipeDecoderConfig


class HfpipeDecoderPreTrainedModel(HfpipePreTrainedModel):
    config_class = HfpipeDecoderConfig


class HfpipeDecoderModel(HfpipeDecoderPreTrainedModel):
    def __init__(self, config: HfpipeDecoderConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.decoder = TransformerStack(config, config.num_hidden_layers, causal=True)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        cache: Cache | None = None,
        global_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """input_ids (B, T) -> last_hidden_state (B, T, C) and the updated cache.

        attention_mask (B, past + T) marks padding (left or right); positions continue from
        the cache, or come from ``position_ids`` (generate derives them from the mask); position_ids
        restarting at 0 inside a row mark packed documents, which then do not see each other.
        global_attention_mask (B, past + T): 1 marks global positions of a windowed decoder.
        """
        past_key_values = either_cache(past_key_values, cache)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        hidden_states = self.embeddings(input_ids, inputs_embeds, position_ids=position_ids, past_length=past_length)
        hidden_states, all_hidden_states = self.decoder(
            hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            output_hidden_states=bool(output_hidden_states),
            global_attention_mask=global_attention_mask,
        )
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )


class HfpipeDecoderForCausalLM(HfpipeDecoderPreTrainedModel, GenerationMixin):
    """Causal LM. ``labels`` are the input ids themselves (-100 to ignore); the shift by
    one happens here, as in transformers: position t predicts token t+1."""

    _tied_weights_keys = {"lm_head.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: HfpipeDecoderConfig):
        super().__init__(config)
        self.model = HfpipeDecoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        logits_to_keep: int = 0,
        num_items_in_batch=None,
        cache=None,
        global_attention_mask=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids,
            attention_mask,
            position_ids,
            either_cache(past_key_values, cache),
            inputs_embeds,
            use_cache,
            output_hidden_states,
            global_attention_mask=global_attention_mask,
        )
        hidden_states = outputs.last_hidden_state
        # generate() asks for the last position only: no need to project the whole prompt.
        hidden_states = hidden_states[:, -logits_to_keep:] if logits_to_keep else hidden_states
        shifted = F.pad(labels, (0, 1), value=-100)[:, 1:] if labels is not None else None
        # In training with labels logits is None: see blocks.lm_logits_and_loss.
        logits, loss = lm_logits_and_loss(self, self.lm_head, hidden_states, shifted, num_items_in_batch)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{CACHE_FIELD: getattr(outputs, CACHE_FIELD)},
        )


def last_token_index(input_ids, attention_mask, pad_token_id, length: int, device) -> torch.Tensor:
    """Index of each row's last real token (B,), for left or right padding."""
    if attention_mask is not None:
        # cumsum reaches its maximum first at the last attended position
        return attention_mask.long().cumsum(-1).argmax(-1)
    if input_ids is not None and pad_token_id is not None:
        positions = torch.arange(length, device=device)
        return (positions * (input_ids != pad_token_id)).argmax(-1)
    return torch.full((input_ids.shape[0] if input_ids is not None else 1,), length - 1, device=device)


class HfpipeDecoderForSequenceClassification(HfpipeDecoderPreTrainedModel):
    """A new linear head on the hidden state of the last non-padding token (GPT-1 style)."""

    def __init__(self, config: HfpipeDecoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HfpipeDecoderModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        cache=None,
        num_items_in_batch=None,
        global_attention_mask=None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        cache = either_cache(past_key_values, cache)  # prefix tuning's prefix, if any
        outputs = self.model(input_ids, attention_mask, position_ids, cache, inputs_embeds, False, output_hidden_states,
                             global_attention_mask=global_attention_mask)
        hidden_states = outputs.last_hidden_state
        batch, length = hidden_states.shape[:2]
        if attention_mask is not None and attention_mask.shape[1] != length:
            attention_mask = attention_mask[:, -length:]  # drop a prefix-tuning prefix
        last = last_token_index(input_ids, attention_mask, self.config.pad_token_id, length, hidden_states.device)
        logits = self.score(hidden_states[torch.arange(batch, device=hidden_states.device), last])
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels, num_items_in_batch)
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class HfpipeDecoderForQuestionAnswering(HfpipeDecoderPreTrainedModel):
    def __init__(self, config: HfpipeDecoderConfig):
        super().__init__(config)
        self.model = HfpipeDecoderModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        output_hidden_states=None,
        cache=None,
        num_items_in_batch=None,
        global_attention_mask=None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        cache = either_cache(past_key_values, cache)  # prefix tuning's prefix, if any
        outputs = self.model(input_ids, attention_mask, position_ids, cache, inputs_embeds, False, output_hidden_states,
                             global_attention_mask=global_attention_mask)
        return span_prediction(self.qa_outputs, outputs, start_positions, end_positions, attention_mask,
                               num_items_in_batch)
