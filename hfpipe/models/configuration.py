"""Configurations of the three hfpipe families and their size presets.

One set of fields describes every layout hfpipe builds, so the families differ by
configuration, not by code:

    BERT   post-LN, LayerNorm, learned absolute positions + token types, GELU (erf)
    GPT-2  pre-LN,  LayerNorm, learned absolute positions, GELU (tanh)
    T5     pre-LN,  RMSNorm, bucketed relative position bias, no biases, unscaled
           attention; v1.0 ReLU MLP, v1.1 gated-GELU MLP
    modern pre-LN, RMSNorm, RoPE, gated MLP, no biases

This file is copied next to the weights on save (trust_remote_code), so it imports
nothing from hfpipe.
"""

from __future__ import annotations

import copy

from transformers import PreTrainedConfig

# The Auto classes every family registers, written into config.auto_map so that a saved
# checkpoint loads through any of them with trust_remote_code where hfpipe is absent.
_AUTO_MAPS = {
    "hfpipe_encoder": {
        "AutoConfig": "configuration.HfpipeEncoderConfig",
        "AutoModel": "encoder.HfpipeEncoderModel",
        "AutoModelForPreTraining": "encoder.HfpipeEncoderForPreTraining",
        "AutoModelForMaskedLM": "encoder.HfpipeEncoderForMaskedLM",
        "AutoModelForSequenceClassification": "encoder.HfpipeEncoderForSequenceClassification",
        "AutoModelForTokenClassification": "encoder.HfpipeEncoderForTokenClassification",
        "AutoModelForQuestionAnswering": "encoder.HfpipeEncoderForQuestionAnswering",
    },
    "hfpipe_decoder": {
        "AutoConfig": "configuration.HfpipeDecoderConfig",
        "AutoModel": "decoder.HfpipeDecoderModel",
        "AutoModelForCausalLM": "decoder.HfpipeDecoderForCausalLM",
        "AutoModelForPreTraining": "decoder.HfpipeDecoderForCausalLM",
        "AutoModelForSequenceClassification": "decoder.HfpipeDecoderForSequenceClassification",
        "AutoModelForQuestionAnswering": "decoder.HfpipeDecoderForQuestionAnswering",
    },
    "hfpipe_seq2seq": {
        "AutoConfig": "configuration.HfpipeSeq2SeqConfig",
        "AutoModel": "seq2seq.HfpipeSeq2SeqModel",
        "AutoModelForSeq2SeqLM": "seq2seq.HfpipeSeq2SeqForConditionalGeneration",
        "AutoModelForPreTraining": "seq2seq.HfpipeSeq2SeqForConditionalGeneration",
    },
}


def _check_attention_pattern(window, dilation, global_tokens, every_n_layers) -> None:
    def whole(value, least):
        return isinstance(value, int) and not isinstance(value, bool) and value >= least

    if window is not None and not whole(window, 1):
        raise ValueError(f"attention_window must be None (full attention) or a positive integer, got {window!r}")
    if not whole(dilation, 1):
        raise ValueError(f"attention_dilation must be a positive integer, got {dilation!r}")
    if not whole(global_tokens, 0):
        raise ValueError(f"global_tokens must be a non-negative integer, got {global_tokens!r}")
    if every_n_layers is not None and not whole(every_n_layers, 1):
        raise ValueError(
            f"global_attention_every_n_layers must be None or a positive integer, got {every_n_layers!r}"
        )


class HfpipeConfig(PreTrainedConfig):
    """Fields shared by the three families (see the module docstring for the classic layouts).

    Args:
        vocab_size: rows of the token embedding.
        hidden_size: model width d_model.
        num_hidden_layers: transformer blocks (per stack for the encoder-decoder).
        num_attention_heads: heads per attention layer.
        head_dim: width of one head; ``hidden_size // num_attention_heads`` when None (T5 may differ).
        intermediate_size: inner width of the MLP.
        hidden_act: activation name from transformers' ACT2FN ("gelu", "gelu_new", "relu", "silu").
        gated_mlp: GLU-style MLP, act(x W_gate) * (x W_up) (T5 v1.1, LLaMA).
        norm_type: "layernorm" or "rmsnorm" (T5's LayerNorm without mean or bias).
        norm_position: "post" (BERT: norm after each residual add) or "pre" (GPT-2, T5: norm
            before each sublayer, plus a final norm).
        layer_norm_eps: epsilon of the norms.
        position_embedding_type: "absolute" (learned), "rope", "relative" (T5 buckets) or "none".
        max_position_embeddings: rows of the learned position table.
        type_vocab_size: segment (token type) embeddings; 0 for none.
        relative_attention_num_buckets / relative_attention_max_distance: T5's bias buckets.
        rope_theta: base of the rotary frequencies.
        use_bias: biases in attention and MLP projections (BERT, GPT-2 yes; T5 no).
        scale_attention: divide scores by sqrt(head_dim) (T5 folds this into its init instead).
        hidden_dropout_prob / attention_probs_dropout_prob: dropout rates.
        classifier_dropout: dropout before task heads; hidden_dropout_prob when None.
        initializer_range: std of the normal init (BERT and GPT-2 schemes; see blocks.init_scheme).
        embedding_norm: LayerNorm right after the embeddings; default True for post-LN (BERT).
        final_norm: norm after the last block; default True for pre-LN (GPT-2, T5).
        fused_lm_loss: LM heads (CLM, MLM, seq2seq) training with labels compute their loss chunk
            by chunk from the hidden states (models/lm_loss.py) and return no logits; evaluation,
            inference and generation always get logits. False: the logits are made in training too.

    Attention pattern of every self-attention (cross attention always sees the whole encoder
    output); the defaults give full attention through the same kernels as without them. The
    exact semantics are ``attention_patterns.may_attend``:

        attention_window: None for full attention; w: a query sees w tokens on each side
            (bidirectional stacks) or w tokens to its left and itself (causal stacks), as
            Longformer's sliding window (there given as the whole width 2w) and Mistral's.
        attention_dilation: d > 1 spreads the window out: it holds the tokens at distances
            0, d, 2d, ..., w*d (Longformer's dilated window); 1 is a plain window.
        global_tokens: the first k positions attend to every position and every position
            attends to them (Longformer's global [CLS]); a model input ``global_attention_mask``
            (batch, length) of 1/0 marks further global positions per example.
        global_attention_every_n_layers: None: every layer uses the window; n: layers 0, n, 2n,
            ... attend fully and the others use the window (ModernBERT alternates full and local
            layers with n = 3).
    """

    model_type = "hfpipe"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        head_dim: int | None = None,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        gated_mlp: bool = False,
        norm_type: str = "layernorm",
        norm_position: str = "post",
        layer_norm_eps: float = 1e-12,
        position_embedding_type: str = "absolute",
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        relative_attention_num_buckets: int = 32,
        relative_attention_max_distance: int = 128,
        rope_theta: float = 10000.0,
        use_bias: bool = True,
        scale_attention: bool = True,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        classifier_dropout: float | None = None,
        initializer_range: float = 0.02,
        embedding_norm: bool | None = None,
        final_norm: bool | None = None,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        fused_lm_loss: bool = True,
        attention_window: int | None = None,
        attention_dilation: int = 1,
        global_tokens: int = 0,
        global_attention_every_n_layers: int | None = None,
        **kwargs,
    ):
        if norm_type not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm_type must be 'layernorm' or 'rmsnorm', got {norm_type!r}")
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        if position_embedding_type not in ("absolute", "rope", "relative", "none"):
            raise ValueError(
                "position_embedding_type must be one of absolute, rope, relative, none; "
                f"got {position_embedding_type!r}"
            )
        _check_attention_pattern(attention_window, attention_dilation, global_tokens, global_attention_every_n_layers)
        if head_dim is None:
            if hidden_size % num_attention_heads:
                raise ValueError("hidden_size must be divisible by num_attention_heads (or set head_dim)")
            head_dim = hidden_size // num_attention_heads
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.gated_mlp = gated_mlp
        self.norm_type = norm_type
        self.norm_position = norm_position
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.rope_theta = rope_theta
        self.use_bias = use_bias
        self.scale_attention = scale_attention
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        self.embedding_norm = norm_position == "post" if embedding_norm is None else embedding_norm
        self.final_norm = norm_position == "pre" if final_norm is None else final_norm
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.fused_lm_loss = fused_lm_loss
        self.attention_window = attention_window
        self.attention_dilation = attention_dilation
        self.global_tokens = global_tokens
        self.global_attention_every_n_layers = global_attention_every_n_layers
        kwargs.setdefault("auto_map", dict(_AUTO_MAPS.get(self.model_type, {})))
        super().__init__(**kwargs)


class HfpipeEncoderConfig(HfpipeConfig):
    """Bidirectional encoder (BERT family). Defaults: BERT-base.

    Extra args:
        sparse_prediction: while training with MLM labels, run the MLM head on the predicted
            positions only (ModernBERT's option of the same name); with ``fused_lm_loss=False``
            ``prediction_logits`` / ``logits`` are then (number of predicted positions, vocab), in
            row-major order (with it, training makes no logits). Evaluation and inference always
            give (batch, length, vocab). Eager only: under torch.compile every position goes
            through the head (same loss), as the gather's data-dependent size would break the graph.
        classifier_pooling: what the pooler (and so the NSP and sequence-classification heads)
            reads: "cls", the first token (BERT), or "mean", the mean of the unpadded tokens
            (ModernBERT's option of the same name; Sentence-BERT's pooling).
        embedding_size: width E of the token, position and type embeddings when it differs from
            hidden_size (ELECTRA's and ALBERT's field of the same name; ELECTRA-Small uses 128 under
            a 256-wide stack): the embedding output is projected E -> hidden_size before the stack
            (``embeddings_project``) and the MLM head's transform maps back to E for the tied
            output embedding. None: hidden_size, no projection (BERT).
    """

    model_type = "hfpipe_encoder"

    # transformers 5 replaces the __init__ of a config subclass that does not define one
    # with a generated dataclass __init__, which would skip HfpipeConfig's.
    def __init__(self, sparse_prediction: bool = False, classifier_pooling: str = "cls",
                 embedding_size: int | None = None, **kwargs):
        if classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"classifier_pooling must be 'cls' or 'mean', got {classifier_pooling!r}")
        if embedding_size is not None and not (isinstance(embedding_size, int) and embedding_size >= 1):
            raise ValueError(f"embedding_size must be None or a positive integer, got {embedding_size!r}")
        self.sparse_prediction = sparse_prediction
        self.classifier_pooling = classifier_pooling
        self.embedding_size = embedding_size
        super().__init__(**kwargs)


class HfpipeDecoderConfig(HfpipeConfig):
    """Causal decoder (GPT family). Defaults: GPT-2 small (124M)."""

    model_type = "hfpipe_decoder"

    def __init__(self, **kwargs):
        defaults = dict(
            vocab_size=50257,
            max_position_embeddings=1024,
            hidden_act="gelu_new",
            norm_position="pre",
            layer_norm_eps=1e-5,
            type_vocab_size=0,
            pad_token_id=None,
            bos_token_id=50256,
            eos_token_id=50256,
        )
        super().__init__(**{**defaults, **kwargs})


class HfpipeSeq2SeqConfig(HfpipeConfig):
    """Encoder-decoder (T5 family). Defaults: T5-base v1.0 (220M).

    Extra args:
        num_decoder_layers: decoder blocks; num_hidden_layers when None.
        decoder_start_token_id: first decoder input (T5: the pad id).
        scale_decoder_outputs: multiply the decoder output by hidden_size**-0.5 before the LM
            head (T5 v1.0, whose embeddings are tied and unscaled); tie_word_embeddings when None.
        initializer_factor: T5's init multiplier (T5Config's field of the same name); fresh
            weights follow T5's scheme wherever attention is unscaled (blocks.init_scheme).
    """

    model_type = "hfpipe_seq2seq"

    def __init__(
        self,
        num_decoder_layers: int | None = None,
        decoder_start_token_id: int | None = 0,
        scale_decoder_outputs: bool | None = None,
        initializer_factor: float = 1.0,
        **kwargs,
    ):
        defaults = dict(
            vocab_size=32128,
            hidden_act="relu",
            norm_type="rmsnorm",
            norm_position="pre",
            layer_norm_eps=1e-6,
            position_embedding_type="relative",
            type_vocab_size=0,
            use_bias=False,
            scale_attention=False,
            pad_token_id=0,
            eos_token_id=1,
            is_encoder_decoder=True,
        )
        kwargs = {**defaults, **kwargs}
        self.num_decoder_layers = num_decoder_layers or kwargs.get("num_hidden_layers", 12)
        self.decoder_start_token_id = decoder_start_token_id
        self.initializer_factor = initializer_factor
        self.scale_decoder_outputs = (
            kwargs.get("tie_word_embeddings", True) if scale_decoder_outputs is None else scale_decoder_outputs
        )
        super().__init__(**kwargs)

    def get_text_config(self, decoder=None, encoder=None):
        # generate() sizes its KV cache from the decoder's view of the config: give it the
        # decoder's depth, which T5-style configs keep under num_decoder_layers.
        config = super().get_text_config(decoder=decoder, encoder=encoder)
        if decoder and not encoder and self.num_decoder_layers != self.num_hidden_layers:
            config = copy.deepcopy(config)
            config.num_hidden_layers = self.num_decoder_layers
        return config


# Size presets. base/large reproduce the published models' parameter counts (within 1%):
# BERT-base 110M, BERT-large 340M, GPT-2 small 124M, T5-base 220M; tiny is for tests.
SIZE_PRESETS = {
    "encoder": {
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
        "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    },
    "decoder": {
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
        # GPT-2 has no "base": base is GPT-2 small (124M), large GPT-2 medium (355M), and small
        # T5-small's width and depth (6 x 512, 45M with GPT-2's vocabulary)
        "small": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
        "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
        "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    },
    "seq2seq": {
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, head_dim=16),
        "small": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048, head_dim=64),
        "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, head_dim=64),
        "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, head_dim=64),
    },
}

CONFIG_CLASSES = {
    "encoder": HfpipeEncoderConfig,
    "decoder": HfpipeDecoderConfig,
    "seq2seq": HfpipeSeq2SeqConfig,
}


def config_for(family: str, size: str = "base", **overrides) -> HfpipeConfig:
    """The config of ``family`` at a preset ``size``, with any field overridden."""
    if family not in CONFIG_CLASSES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(CONFIG_CLASSES)}")
    if size not in SIZE_PRESETS[family]:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZE_PRESETS[family])}")
    return CONFIG_CLASSES[family](**{**SIZE_PRESETS[family][size], **overrides})
