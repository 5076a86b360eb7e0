"""The encoder family (BERT): a bidirectional TransformerStack and its task heads.

    HfpipeEncoderModel                        embeddings -> stack -> (pooler on [CLS])
    HfpipeEncoderForPreTraining               masked LM + next-sentence prediction
    HfpipeEncoderForMaskedLM                  masked LM only (RoBERTa-style pretraining)
    HfpipeEncoderForSequenceClassification    [CLS] pooled -> labels (regression if num_labels == 1)
    HfpipeEncoderForTokenClassification       every token -> labels (NER)
    HfpipeEncoderForQuestionAnswering         start/end logits over tokens (SQuAD)

Run: ``AutoModelForMaskedLM.from_config(hfpipe.config_for("encoder", "tiny"))`` after
``import hfpipe``, or ``from_pretrained(dir, trust_remote_code=True)`` without hfpipe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.bert.modeling_bert import BertForPreTrainingOutput

from .blocks import (
    Embeddings,
    HfpipePreTrainedModel,
    LMHead,
    TransformerStack,
    cross_entropy,
    either_cache,
    embedding_width,
    lm_logits_and_loss,
    normalise,
    sequence_classification_loss,
    span_prediction,
)
from .configuration import HfpipeEncoderConfig


class HfpipeEncoderPreTrainedModel(HfpipePreTrainedModel):
    config_class = HfpipeEncoderConfig


class Pooler(nn.Module):
    """BERT's pooler: tanh(dense(h)), the input of the NSP and classification heads, where h is
    h_[CLS] or, with ``classifier_pooling="mean"``, the mean over the unpadded tokens."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.mean = getattr(config, "classifier_pooling", "cls") == "mean"

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C), padding mask (B, T) -> (B, C)"""
        if not self.mean:
            return torch.tanh(self.dense(hidden_states[:, 0]))
        if attention_mask is None:
            return torch.tanh(self.dense(hidden_states.mean(dim=1)))
        if attention_mask.dim() != 2:
            raise ValueError(f"classifier_pooling='mean' needs a (batch, length) padding mask, got shape "
                             f"{tuple(attention_mask.shape)}")
        # prefix tuning (peft) widens the mask by its virtual tokens, which come first
        weights = attention_mask[:, -hidden_states.shape[1]:].to(hidden_states.dtype).unsqueeze(-1)  # (B, T, 1)
        mean = (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return torch.tanh(self.dense(mean))


class HfpipeEncoderModel(HfpipeEncoderPreTrainedModel):
    def __init__(self, config: HfpipeEncoderConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        # Factorised embeddings (embedding_size E != C, ELECTRA's and ALBERT's name for the layer):
        # the stack reads a projection of the E-wide embedding.
        width = embedding_width(config)
        self.embeddings_project = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None
        self.encoder = TransformerStack(config, config.num_hidden_layers, causal=False)
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_hidden_states: bool | None = None,
        global_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """input_ids (B, T) -> last_hidden_state (B, T, C), pooler_output (B, C).

        ``cache`` (``past_key_values`` before transformers 5.24) only carries prefix-tuning prefixes
        (peft); the encoder caches nothing.
        ``global_attention_mask`` (B, T): 1 marks global positions of a windowed encoder (Longformer's
        input of the same name); ``position_ids`` restarting at 0 mark packed documents.
        """
        hidden_states = self.embeddings(
            input_ids, inputs_embeds, token_type_ids=token_type_ids, position_ids=position_ids
        )  # (B, T, E)
        if self.embeddings_project is not None:
            hidden_states = self.embeddings_project(hidden_states)  # (B, T, C)
        hidden_states, all_hidden_states = self.encoder(
            hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=either_cache(past_key_values, cache),
            output_hidden_states=bool(output_hidden_states),
            global_attention_mask=global_attention_mask,
        )
        pooled = self.pooler(hidden_states, attention_mask) if self.pooler is not None else None
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


def masked_lm(model, hidden, labels, num_items_in_batch=None):
    """hidden (B, T, C) -> MLM logits (B, T, V) and loss (None without labels); in training with
    labels the logits are None (``config.fused_lm_loss``, see blocks.lm_logits_and_loss) or, with
    sparse prediction, (predicted positions, V).

    With ``config.sparse_prediction`` in eager training the head sees only the predicted
    positions: BERT predicts 15% of them, so most of the vocabulary projection -- a fifth of
    BERT-base's FLOPs -- and its softmax are skipped, at the cost of the training step's one
    host sync (``nonzero``: how many positions are predicted). Under torch.compile every
    position goes through the head instead (the same loss; unlabelled rows add nothing), which
    keeps the graph whole and its shapes independent of the masking draw.
    """
    if labels is None:
        return model.mlm_head(hidden), None
    if model.training and model.config.sparse_prediction and not torch.compiler.is_compiling():
        labels = labels.reshape(-1).to(hidden.device)  # (B*T,)
        predicted = (labels != -100).nonzero().squeeze(1)  # (K,), the host sync
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, predicted)  # (K, C)
        labels = labels.index_select(0, predicted)  # (K,)
    head = model.mlm_head
    return lm_logits_and_loss(model, head.decoder, head.transform(hidden), labels, num_items_in_batch)


class HfpipeEncoderForPreTraining(HfpipeEncoderPreTrainedModel):
    """BERT pretraining: loss = masked-LM cross-entropy + next-sentence cross-entropy.

    Labels: ``labels`` (B, T) with -100 on positions not predicted; ``next_sentence_label``
    (B,) with 0 = B continues A, 1 = B is random (transformers' convention).

    Under gradient accumulation each part is normalised by its own count over the optimizer
    step: ``num_items_in_batch`` (label tokens, from Trainer) and ``num_sequences_in_batch``
    (labelled pairs, from hfpipe's Trainer); see "The loss contract" in blocks.py.
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__(config)
        self.model = HfpipeEncoderModel(config, add_pooling_layer=True)
        self.mlm_head = LMHead(config, transform=True, bias=True)
        self.nsp_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        next_sentence_label=None,
        past_key_values=None,
        output_hidden_states=None,
        num_items_in_batch=None,
        global_attention_mask=None,
        num_sequences_in_batch=None,
        cache=None,
        **kwargs,
    ) -> BertForPreTrainingOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values,
            output_hidden_states, global_attention_mask=global_attention_mask, cache=cache,
        )
        prediction_logits, loss = masked_lm(self, outputs.last_hidden_state, labels, num_items_in_batch)
        seq_relationship_logits = self.nsp_head(outputs.pooler_output)
        if next_sentence_label is not None:
            next_sentence_label = next_sentence_label.view(-1).to(seq_relationship_logits.device)
            pairs = (next_sentence_label != -100).sum()
            if num_sequences_in_batch is None and num_items_in_batch is not None and labels is not None:
                # No pair count (transformers' own Trainer): estimate it from the token count.
                tokens = (labels != -100).sum().to(pairs.device).clamp(min=1)
                num_sequences_in_batch = num_items_in_batch * pairs / tokens
            total = F.cross_entropy(seq_relationship_logits.float(), next_sentence_label, reduction="sum")
            nsp_loss = normalise(total, pairs, num_sequences_in_batch)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return BertForPreTrainingOutput(
            loss=loss,
            prediction_logits=prediction_logits,
            seq_relationship_logits=seq_relationship_logits,
            hidden_states=outputs.hidden_states,
        )


class HfpipeEncoderForMaskedLM(HfpipeEncoderPreTrainedModel):
    _tied_weights_keys = {"mlm_head.decoder.weight": "model.embeddings.word_embeddings.weight"}

    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__(config)
        self.model = HfpipeEncoderModel(config, add_pooling_layer=False)
        self.mlm_head = LMHead(config, transform=True, bias=True)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings

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
    ) -> MaskedLMOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values,
            output_hidden_states, global_attention_mask=global_attention_mask, cache=cache,
        )
        logits, loss = masked_lm(self, outputs.last_hidden_state, labels, num_items_in_batch)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class _EncoderClassifier(HfpipeEncoderPreTrainedModel):
    """Dropout and a linear classifier over the pooled [CLS] (``pooled``) or every token."""

    pooled: bool
    output_class: type

    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HfpipeEncoderModel(config, add_pooling_layer=self.pooled)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
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
    ):
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values,
            output_hidden_states, global_attention_mask=global_attention_mask, cache=cache,
        )
        features = outputs.pooler_output if self.pooled else outputs.last_hidden_state
        logits = self.classifier(self.dropout(features))  # (B, num_labels) or (B, T, num_labels)
        loss = None
        if labels is not None and self.pooled:
            loss = sequence_classification_loss(self.config, logits, labels, num_items_in_batch)
        elif labels is not None:
            loss = cross_entropy(logits, labels, num_items_in_batch)
        return self.output_class(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class HfpipeEncoderForSequenceClassification(_EncoderClassifier):
    """[CLS] -> labels; regression (MSE) when num_labels == 1 (STS-B)."""

    pooled = True
    output_class = SequenceClassifierOutput


class HfpipeEncoderForTokenClassification(_EncoderClassifier):
    """Every token -> labels (NER); -100 marks tokens without a label."""

    pooled = False
    output_class = TokenClassifierOutput


class HfpipeEncoderForQuestionAnswering(HfpipeEncoderPreTrainedModel):
    def __init__(self, config: HfpipeEncoderConfig):
        super().__init__(config)
        self.model = HfpipeEncoderModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        past_key_values=None,
        output_hidden_states=None,
        num_items_in_batch=None,
        global_attention_mask=None,
        cache=None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        outputs = self.model(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, past_key_values,
            output_hidden_states, global_attention_mask=global_attention_mask, cache=cache,
        )
        return span_prediction(self.qa_outputs, outputs, start_positions, end_positions, attention_mask,
                               num_items_in_batch)
