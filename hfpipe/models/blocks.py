"""The one transformer block shared by the three families, and the parts it is made of.

    Attention        self / causal / cross attention through torch's scaled_dot_product_attention
                     (FlashAttention or memory-efficient kernels on GPU), with a KV cache
    MLP              plain (BERT, GPT-2, T5 v1.0) or gated (T5 v1.1, LLaMA)
    RMSNorm          T5's norm; LayerNorm comes from torch
    TransformerBlock pre-LN or post-LN residual wiring of the above
    TransformerStack the blocks plus what they share: the attention mask, T5's relative
                     position bias or rotary embeddings, and the final norm

An encoder is a bidirectional stack, a decoder a causal one, and an encoder-decoder is
one of each with cross attention in the second. This file travels with saved
checkpoints (trust_remote_code), so it imports nothing from hfpipe.

Shapes: B batch, T query length, S key length, H heads, D head width, C hidden size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, QuestionAnsweringModelOutput

from .attention_patterns import PatternContext, blocked_attention, is_local_layer, stack_masks
from .configuration import HfpipeConfig
from .lm_loss import linear_cross_entropy

try:  # transformers 5: init functions that leave weights loaded from a checkpoint alone
    from transformers import initialization as init
except ImportError:  # pragma: no cover
    from torch.nn import init


# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: generate passes `cache=`
# and reads `outputs.cache`, while earlier 5.x releases and peft's prefix tuning use
# `past_key_values`. The models accept both names and fill the output field this release declares.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def either_cache(past_key_values: Cache | None, cache: Cache | None) -> Cache | None:
    """The KV cache, whichever name the caller used."""
    return cache if cache is not None else past_key_values


class RMSNorm(nn.Module):
    """T5's LayerNorm: scale only, no mean subtraction, no bias; variance in float32 so
    that half-precision activations do not overflow (as T5 does)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)  # (..., 1)
        hidden_states = hidden_states * torch.rsqrt(variance + self.eps)  # (..., C)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            hidden_states = hidden_states.to(self.weight.dtype)
        return self.weight * hidden_states  # (..., C)


def make_norm(config: HfpipeConfig, width: int | None = None) -> nn.Module:
    """The layout's norm over ``width`` features (hidden_size when None)."""
    width = width or config.hidden_size
    if config.norm_type == "rmsnorm":
        return RMSNorm(width, eps=config.layer_norm_eps)
    return nn.LayerNorm(width, eps=config.layer_norm_eps, bias=config.use_bias)


def embedding_width(config: HfpipeConfig) -> int:
    """E, the width of the token, position and type embeddings: the encoder's ``embedding_size``
    where it factorises them (ALBERT, ELECTRA-Small's 128 under a 256-wide stack), else hidden_size."""
    return getattr(config, "embedding_size", None) or config.hidden_size


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (..., D): the halves swapped, the second negated."""
    x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) each
    return torch.cat((-x2, x1), dim=-1)  # (..., D)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer): cos/sin tables for the given positions.

    Frequencies are recomputed per call rather than kept as a buffer: they are tiny, and a
    non-persistent buffer would need special care when transformers builds models on the
    meta device.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B, T) -> cos, sin (B, 1, T, D)."""
        exponents = torch.arange(0, self.head_dim, 2, device=position_ids.device, dtype=torch.float32)  # (D/2,)
        inv_freq = 1.0 / (self.theta ** (exponents / self.head_dim))  # (D/2,)
        freqs = position_ids[..., None].float() * inv_freq  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # (B, 1, T, D)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias: one learned scalar per (bucket, head), added to
    the attention scores of every layer of a stack. Small distances get a bucket each,
    larger ones share logarithmically wider buckets up to ``max_distance``."""

    def __init__(self, config: HfpipeConfig, bidirectional: bool):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.embedding = nn.Embedding(self.num_buckets, config.num_attention_heads)

    def bucket(self, relative_position: torch.Tensor) -> torch.Tensor:
        """relative positions key - query (...) -> bucket ids (...)."""
        num_buckets = self.num_buckets
        buckets = torch.zeros_like(relative_position)  # (...)
        if self.bidirectional:
            num_buckets //= 2
            buckets += (relative_position > 0).long() * num_buckets
            relative_position = relative_position.abs()  # (...)
        else:
            relative_position = -torch.clamp(relative_position, max=0)  # (...)
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact  # (...)
        if_large = max_exact + (  # (...)
            torch.log(relative_position.float() / max_exact)
            / math.log(self.max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
        if_large = torch.clamp(if_large, max=num_buckets - 1)  # (...)
        return buckets + torch.where(is_small, relative_position, if_large)  # (...)

    def relative(self, relative_position: torch.Tensor) -> torch.Tensor:
        """relative positions key - query (any shape ...) -> bias (..., H)."""
        return self.embedding(self.bucket(relative_position))

    def forward(self, query_length: int, key_length: int, past_length: int = 0) -> torch.Tensor:
        """-> bias (1, H, T, S) for queries at positions past_length .. past_length+T-1."""
        device = self.embedding.weight.device
        context = torch.arange(past_length, past_length + query_length, device=device)[:, None]  # (T, 1)
        memory = torch.arange(key_length, device=device)[None, :]  # (1, S)
        values = self.relative(memory - context)  # (T, S, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, T, S)


class Attention(nn.Module):
    """Multi-head attention: self (bidirectional or causal) or cross, through SDPA.

    ``attention_bias`` is additive, (B|1, H|1, T, S), already holding padding, causality and
    any position bias; None lets SDPA use its fastest kernel (with ``is_causal`` for causal
    self-attention without cache or padding). ``pattern``, instead of a bias, asks for the
    windowed path that never makes the (T, S) matrix (attention_patterns.blocked_attention);
    ``position_bias`` then gives T5's bias for any relative positions.
    """

    def __init__(self, config: HfpipeConfig, layer_idx: int, is_cross_attention: bool = False):
        super().__init__()
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.use_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.use_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.use_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=config.use_bias)
        self.dropout = config.attention_probs_dropout_prob
        # T5 leaves scores unscaled (its init absorbs the 1/sqrt(D)); SDPA's scale=1.0 does that.
        self.scale = None if config.scale_attention else 1.0

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H*D) -> (B, H, T, D)"""
        return x.view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        key_value_states: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        is_causal: bool = False,
        pattern: PatternContext | None = None,
        position_bias=None,
    ) -> torch.Tensor:
        query = self._heads(self.q_proj(hidden_states))  # (B, H, T, D)
        if self.is_cross_attention and cache is not None and cache.get_seq_length(self.layer_idx) > 0:
            # The encoder output does not change while decoding: project it once, then reuse.
            key, value = cache.layers[self.layer_idx].keys, cache.layers[self.layer_idx].values  # (B, H, S, D)
        else:
            source = key_value_states if self.is_cross_attention else hidden_states  # (B, S, C)
            key, value = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))  # (B, H, S, D)
            if rotary is not None:
                cos, sin = rotary  # (B, 1, T, D)
                query = query * cos + rotate_half(query) * sin  # (B, H, T, D)
                key = key * cos + rotate_half(key) * sin  # (B, H, T, D)
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)  # (B, H, past + T, D)
        if pattern is not None:
            out = blocked_attention(
                query, key, value, pattern, scale=self.scale, position_bias=position_bias,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, H, T, D)
            return self.o_proj(out.transpose(1, 2).reshape(*hidden_states.shape[:2], -1))  # (B, T, C)
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_bias,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and attention_bias is None,
            scale=self.scale,
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(*hidden_states.shape[:2], -1)  # (B, T, H*D)
        return self.o_proj(out)  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward: down(act(up(x))), or down(act(gate(x)) * up(x)) when gated."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        bias = config.use_bias
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias) if config.gated_mlp else None
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), through (B, T, intermediate_size)."""
        if self.gate_proj is not None:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)
        return self.down_proj(self.act(self.up_proj(x)))  # (B, T, C)


class TransformerBlock(GradientCheckpointingLayer):
    """Self-attention, optional cross-attention, MLP; each a residual sublayer.

    pre-LN (GPT-2, T5):  h = h + dropout(f(norm(h)))
    post-LN (BERT):      h = norm(h + dropout(f(h)))
    """

    def __init__(self, config: HfpipeConfig, layer_idx: int, cross_attention: bool = False):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.self_attention = Attention(config, layer_idx)
        self.self_attention_norm = make_norm(config)
        self.cross_attention = Attention(config, layer_idx, is_cross_attention=True) if cross_attention else None
        self.cross_attention_norm = make_norm(config) if cross_attention else None
        self.mlp = MLP(config)
        self.mlp_norm = make_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _residual(self, hidden_states, norm, sublayer):
        """(B, T, C) -> (B, T, C)"""
        if self.pre_norm:
            return hidden_states + self.dropout(sublayer(norm(hidden_states)))  # (B, T, C)
        return norm(hidden_states + self.dropout(sublayer(hidden_states)))  # (B, T, C)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_bias: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_values: Cache | None = None,
        is_causal: bool = False,
        pattern: PatternContext | None = None,
        position_bias=None,
    ) -> torch.Tensor:
        self_cache, cross_cache = past_key_values, None
        if isinstance(past_key_values, EncoderDecoderCache):
            self_cache, cross_cache = past_key_values.self_attention_cache, past_key_values.cross_attention_cache
        hidden_states = self._residual(  # (B, T, C)
            hidden_states,
            self.self_attention_norm,
            lambda h: self.self_attention(
                h, attention_bias, rotary=rotary, cache=self_cache, is_causal=is_causal, pattern=pattern,
                position_bias=position_bias,
            ),
        )
        if self.cross_attention is not None:
            hidden_states = self._residual(  # (B, T, C)
                hidden_states,
                self.cross_attention_norm,
                lambda h: self.cross_attention(
                    h, encoder_attention_bias, key_value_states=encoder_hidden_states, cache=cross_cache
                ),
            )
        return self._residual(hidden_states, self.mlp_norm, self.mlp)  # (B, T, C)


class TransformerStack(nn.Module):
    """A stack of TransformerBlocks over already embedded inputs.

    Causal stacks mask the future; stacks built with ``cross_attention`` attend to an
    encoder's output. Positions: T5 relative bias and rotary live here because every layer
    uses them; learned absolute positions belong to the embeddings.
    """

    def __init__(self, config: HfpipeConfig, num_layers: int, causal: bool, cross_attention: bool = False):
        super().__init__()
        self.causal = causal
        self.layers = nn.ModuleList(
            TransformerBlock(config, layer_idx=i, cross_attention=cross_attention) for i in range(num_layers)
        )
        self.relative_position_bias = (
            RelativePositionBias(config, bidirectional=not causal)
            if config.position_embedding_type == "relative"
            else None
        )
        self.rotary = (
            RotaryEmbedding(config.head_dim, config.rope_theta) if config.position_embedding_type == "rope" else None
        )
        self.final_norm = make_norm(config) if config.final_norm else None
        self.gradient_checkpointing = False
        self.attention_window = config.attention_window
        self.attention_dilation = config.attention_dilation
        self.global_tokens = config.global_tokens
        self.local_layers = [is_local_layer(config, i) for i in range(num_layers)]
        # How windowed layers run: "auto" takes the blocked sliding-chunk path (linear in T) once a
        # sequence is several windows long and no KV cache is in use, the (T, S) mask through SDPA
        # otherwise; "dense" and "blocked" force one (tests, benchmarks). Not saved with the model.
        self.pattern_implementation = "auto"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        output_hidden_states: bool = False,
        global_attention_mask: torch.Tensor | None = None,
        encoder_position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """hidden_states (B, T, C) -> (last hidden state (B, T, C), all hidden states or None).

        attention_mask (B, S) covers cached positions too (S = past + T), as transformers passes it;
        so does global_attention_mask (1 = global position, windowed stacks only). position_ids that
        restart at 0 inside a row mark packed documents: attention then stays within each document
        (without a KV cache; see attention_patterns). With ``encoder_position_ids`` (B, S_enc) too,
        cross attention also stays within each document: the k-th document of ``position_ids``
        reads the k-th of ``encoder_position_ids`` only (attention_patterns.cross_document_allowed).
        """
        batch, query_length = hidden_states.shape[:2]
        dtype, device = hidden_states.dtype, hidden_states.device
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        masks = stack_masks(self, batch, query_length, past_length, dtype, device, attention_mask, position_ids,
                            global_attention_mask, encoder_hidden_states, encoder_attention_mask, encoder_position_ids)
        rotary = None
        if self.rotary is not None:
            if position_ids is None:
                positions = torch.arange(past_length, past_length + query_length, device=device)
                position_ids = positions.expand(batch, -1)  # (B, T)
            rotary = self.rotary(position_ids, dtype)  # (B, 1, T, D) cos and sin

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer, local in zip(self.layers, self.local_layers):
            hidden_states = layer(  # (B, T, C)
                hidden_states, encoder_hidden_states=encoder_hidden_states, rotary=rotary,
                past_key_values=past_key_values, **masks.for_layer(local),
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)  # (B, T, C)
            if output_hidden_states:
                all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return hidden_states, all_hidden_states


class Embeddings(nn.Module):
    """Token embeddings, plus learned absolute positions and token types where configured,
    then LayerNorm (post-LN layouts) and dropout."""

    def __init__(self, config: HfpipeConfig):
        super().__init__()
        width = embedding_width(config)  # E; the model projects E -> C where they differ
        self.word_embeddings = nn.Embedding(config.vocab_size, width)
        self.position_embeddings = (
            nn.Embedding(config.max_position_embeddings, width)
            if config.position_embedding_type == "absolute"
            else None
        )
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size > 0 else None
        )
        self.norm = make_norm(config, width) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_length: int = 0,
    ) -> torch.Tensor:
        """input_ids (B, T) or inputs_embeds (B, T, E) -> (B, T, E); E = C unless embedding_size is set."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, E)
        embeddings = inputs_embeds
        if self.position_embeddings is not None:
            if position_ids is None:
                length = inputs_embeds.shape[1]
                # (1, T)
                position_ids = torch.arange(past_length, past_length + length, device=inputs_embeds.device)[None]
            embeddings = embeddings + self.position_embeddings(position_ids)  # (B, T, C)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        if self.norm is not None:
            embeddings = self.norm(embeddings)  # (B, T, C)
        return self.dropout(embeddings)  # (B, T, C)


def init_scheme(config: HfpipeConfig) -> str:
    """Whose initialisation a layout gets (HfpipePreTrainedModel._init_weights): "t5" where
    attention is unscaled (T5 folds 1/sqrt(D) into its init), "gpt2" for the other pre-LN
    layouts (GPT-2 and the modern one), "bert" for post-LN."""
    if not config.scale_attention:
        return "t5"
    return "gpt2" if config.norm_position == "pre" else "bert"


class HfpipePreTrainedModel(PreTrainedModel):
    """Common base: weight init, gradient checkpointing, SDPA, and the Auto-class plumbing."""

    config_class = HfpipeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["TransformerBlock"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    # Every head honours Trainer's num_items_in_batch: see "The loss contract" below.
    accepts_loss_kwargs = True

    def should_save_on_this_rank(self, is_main_process: bool) -> bool:
        """The caller decides, as before transformers 5.24 (which narrowed saving to global rank 0):
        Trainer's save_on_each_node passes True on each machine's first process, so machines that
        share no disk each write a whole checkpoint."""
        return is_main_process

    @torch.no_grad()
    def _initialize_weights(self, module, *args, **kwargs):
        # transformers skips, for remote code, modules that own no parameter directly (Attention,
        # MLP, the model itself), which _init_weights needs to see; it needs no such guard, as
        # transformers.initialization leaves weights loaded from a checkpoint alone.
        if not getattr(module, "_is_hf_initialized", False):
            self._init_weights(module)
            module._is_hf_initialized = True

    @torch.no_grad()
    def _init_weights(self, module):
        """Fresh weights as the layout's family initialises them (transformers'
        BertPreTrainedModel, GPT2PreTrainedModel, T5PreTrainedModel); ``init_scheme`` picks:

        bert   every matrix and embedding N(0, initializer_range), biases 0, norms weight 1
               bias 0, the padding row of the token embedding 0
        gpt2   as bert (no padding row), and the residual writes -- attention o_proj and MLP
               down_proj -- N(0, initializer_range / sqrt(2 * num_hidden_layers)). The modern
               layout (pre-LN, RMSNorm, RoPE, gated MLP, no biases) gets this scheme too:
               LLaMA's N(0, initializer_range) everywhere plus GPT-2's depth scaling of the
               residual writes, as Megatron-LM and OLMo do.
        t5     T5's, with f = initializer_factor, C = hidden_size, D = head_dim, H = heads,
               F = intermediate_size: token embedding N(0, f), q N(0, f (C D)^-1/2), k and v
               N(0, f C^-1/2), o N(0, f (H D)^-1/2), up and gate N(0, f C^-1/2), down
               N(0, f F^-1/2), relative position bias N(0, f C^-1/2), an untied LM head
               N(0, f), norms f; any other matrix N(0, f C^-1/2). Unscaled attention relies on it.

        Modules are visited children first: the Attention, MLP, Embeddings and model cases
        overwrite the plain Linear / Embedding default of the parameters they own.
        """
        config = self.config
        scheme = init_scheme(config)
        if scheme == "t5":
            factor = getattr(config, "initializer_factor", 1.0)
            matrix_std, embedding_std, norm_weight = factor * config.hidden_size**-0.5, factor, factor
        else:
            matrix_std = embedding_std = config.initializer_range
            norm_weight = 1.0
        residual_std = config.initializer_range / math.sqrt(2 * config.num_hidden_layers)

        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=matrix_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=embedding_std)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            init.constant_(module.weight, norm_weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RelativePositionBias):
            init.normal_(module.embedding.weight, mean=0.0, std=matrix_std)
        elif isinstance(module, Attention):
            if scheme == "t5":
                factor = getattr(config, "initializer_factor", 1.0)
                init.normal_(module.q_proj.weight, mean=0.0, std=factor * (config.hidden_size * module.head_dim) ** -0.5)
                init.normal_(module.k_proj.weight, mean=0.0, std=factor * config.hidden_size**-0.5)
                init.normal_(module.v_proj.weight, mean=0.0, std=factor * config.hidden_size**-0.5)
                init.normal_(
                    module.o_proj.weight, mean=0.0, std=factor * (module.num_heads * module.head_dim) ** -0.5
                )
            elif scheme == "gpt2":
                init.normal_(module.o_proj.weight, mean=0.0, std=residual_std)
        elif isinstance(module, MLP):
            if scheme == "t5":
                factor = getattr(config, "initializer_factor", 1.0)
                init.normal_(module.down_proj.weight, mean=0.0, std=factor * config.intermediate_size**-0.5)
            elif scheme == "gpt2":
                init.normal_(module.down_proj.weight, mean=0.0, std=residual_std)
        elif isinstance(module, Embeddings):
            pad = config.pad_token_id
            weight = module.word_embeddings.weight
            if scheme == "bert" and pad is not None and 0 <= pad < weight.shape[0]:
                # as BERT's padding_idx; the row is a view, which loses the loaded-weight flag
                if not getattr(weight, "_is_hf_initialized", False):
                    init.zeros_(weight[pad])
        elif isinstance(module, HfpipePreTrainedModel):
            output = module.get_output_embeddings()
            if scheme == "t5" and output is not None and not config.tie_word_embeddings:
                init.normal_(output.weight, mean=0.0, std=embedding_std)


class LMHead(nn.Module):
    """Vocabulary projection, optionally after BERT's transform (dense, act, norm).

    ``decoder`` holds the (usually tied) output embedding and, for BERT, the output bias: one
    addmm rather than a separate add over the (B, T, V) logits.
    """

    def __init__(self, config: HfpipeConfig, transform: bool, bias: bool):
        super().__init__()
        # With factorised embeddings (E != C) the transform maps C -> E so that the tied output
        # embedding applies: ELECTRA's generator head (dense to the embedding width, act, norm).
        width = embedding_width(config)
        if not transform and width != config.hidden_size:
            raise ValueError(f"an LM head without transform cannot tie {width}-wide embeddings to hidden "
                             f"size {config.hidden_size}; embedding_size needs transform=True")
        self.dense = nn.Linear(config.hidden_size, width) if transform else None
        self.act = ACT2FN[config.hidden_act] if transform else None
        self.norm = make_norm(config, width) if transform else None
        self.decoder = nn.Linear(width, config.vocab_size, bias=bias)

    def transform(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., E): BERT's dense, activation and norm; identity without them."""
        if self.dense is None:
            return hidden_states
        return self.norm(self.act(self.dense(hidden_states)))  # (..., E)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> logits (B, T, V)"""
        return self.decoder(self.transform(hidden_states))  # (B, T, V)


# The loss contract (gradient accumulation and several processes).
#
# Under gradient accumulation transformers' Trainer counts the items of the whole optimizer
# step -- `labels != -100` over its k micro-batches, and over every process with
# average_tokens_across_devices -- passes that count to each forward as `num_items_in_batch`,
# and adds the k losses as they come. So every head returns the sum of its per-item losses
# divided by that count, its items being exactly what Trainer counts: label tokens (MLM, CLM,
# SFT, span corruption, prefix LM, text-to-text, token classification), labelled examples
# (single-label classification) or label entries (regression, multi-label). Summed over the
# micro-batches that is the full batch's mean, however it is split. Without a count
# (evaluation, direct calls) a head returns the mean over its own batch.
#
# Two targets are not named `labels`, so Trainer cannot count them:
# - extractive QA (start/end positions): transformers' Trainer passes no count and divides the
#   batch mean by k itself, which is exact when the micro-batches are equal in size;
#   HfpipeTrainer (hfpipe/training/loss_counts.py) counts the examples instead.
# - NSP/SOP next to MLM: the sentence-pair loss needs the pair count of the optimizer step,
#   `num_sequences_in_batch`, which HfpipeTrainer passes. Without it the count is estimated
#   from num_items_in_batch and this micro-batch's pairs per label token: exact without
#   accumulation, approximate with it.


def normalise(total: torch.Tensor, local_count, num_items_in_batch=None) -> torch.Tensor:
    """The contract's reduction: ``total`` over the optimizer step's count, else over this
    batch's own ``local_count`` (a mean)."""
    count = local_count if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Token cross-entropy ignoring -100: summed, over ``num_items_in_batch`` when Trainer
    passes it (the loss contract above), else the mean over this batch's labelled tokens."""
    logits = logits.reshape(-1, logits.shape[-1]).float()  # (N, V)
    labels = labels.reshape(-1).to(logits.device)  # (N,)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    return normalise(loss, None, num_items_in_batch)


def fuses_loss(projection: nn.Module) -> bool:
    """Whether ``lm_logits_and_loss`` may read ``projection``'s weight directly: a plain
    nn.Linear that nothing intercepts. A peft LoRA or modules_to_save wrapper, a quantized
    Linear subclass, or forward hooks (accelerate offloading, DeepSpeed ZeRO-3 gathering the
    weight) change what calling the module computes, so those heads keep the dense path."""
    return (
        type(projection) is nn.Linear
        and not projection._forward_hooks
        and not projection._forward_pre_hooks
        and not hasattr(projection, "_hf_hook")
    )


def lm_logits_and_loss(
    model: nn.Module, projection: nn.Linear, hidden: torch.Tensor, labels: torch.Tensor | None, num_items_in_batch=None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The vocabulary projection and its token cross-entropy: hidden (..., C) -> logits
    (..., V) or None, loss (the contract's) or None without labels.

    Training with labels (and ``config.fused_lm_loss``), the loss comes from the chunked
    linear + cross-entropy (lm_loss.py) and no logits are made: they would be the largest
    tensor of the step, and nothing reads them (Trainer's training step takes ``loss``; its
    evaluation runs the model in eval mode). Otherwise the logits are made as always.
    """
    if labels is not None and model.training and model.config.fused_lm_loss and fuses_loss(projection):
        labels = labels.to(hidden.device)
        total = linear_cross_entropy(hidden, projection.weight, projection.bias, labels)
        return None, normalise(total, (labels != -100).sum(), num_items_in_batch)
    logits = projection(hidden)  # (..., V)
    return logits, cross_entropy(logits, labels, num_items_in_batch) if labels is not None else None


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None):
    """transformers' rule: regression (MSE) when num_labels == 1, single-label (cross-entropy)
    or multi-label (binary cross-entropy per label) otherwise. Label entries equal to -100 take
    no loss, as Trainer leaves them out of ``num_items_in_batch``."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "single_label_classification":
        return cross_entropy(logits.view(-1, config.num_labels), labels.view(-1), num_items_in_batch)
    labels = labels.to(logits.device).float()
    if config.problem_type == "regression":
        logits, labels = logits.reshape(-1), labels.reshape(-1)
        losses = F.mse_loss(logits.float(), labels, reduction="none")
    else:
        losses = F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none")
    labelled = labels != -100
    # where, not losses[labelled]: boolean indexing reads the count back to the host
    return normalise(torch.where(labelled, losses, 0.0).sum(), labelled.sum(), num_items_in_batch)


def span_prediction(qa_outputs: nn.Linear, outputs, start_positions=None, end_positions=None, attention_mask=None,
                    num_items_in_batch=None):
    """The extractive-QA head of the encoder and the decoder alike: ``qa_outputs`` (C -> 2) over the
    backbone's last hidden states (B, T, C) gives start and end logits (B, T), and ``span_loss`` when
    the answer's positions are given."""
    start_logits, end_logits = qa_outputs(outputs.last_hidden_state).unbind(-1)  # (B, T) each
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = span_loss(start_logits, end_logits, start_positions, end_positions, attention_mask, num_items_in_batch)
    return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits.contiguous(),
                                        end_logits=end_logits.contiguous(), hidden_states=outputs.hidden_states)


def span_loss(
    start_logits, end_logits, start_positions, end_positions, attention_mask=None, num_items_in_batch=None
) -> torch.Tensor:
    """Extractive QA: per example the mean of the start and end cross-entropies, summed over
    the batch and divided by its examples (or by ``num_items_in_batch``, the examples of the
    optimizer step). Padding positions are left out of the softmax, so the loss does not
    depend on how far a batch is padded; positions outside the sequence are clamped to an
    ignored index and take no loss, as transformers does."""
    length = start_logits.size(1)
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if attention_mask is not None:
        padding = attention_mask[:, -length:].to(start_logits.device) == 0  # a prefix-tuning prefix dropped
        start_logits = start_logits.masked_fill(padding, torch.finfo(start_logits.dtype).min)
        end_logits = end_logits.masked_fill(padding, torch.finfo(end_logits.dtype).min)
    start_positions = start_positions.view(-1).to(start_logits.device).clamp(0, length)
    end_positions = end_positions.view(-1).to(end_logits.device).clamp(0, length)
    start = F.cross_entropy(start_logits, start_positions, ignore_index=length, reduction="sum")
    end = F.cross_entropy(end_logits, end_positions, ignore_index=length, reduction="sum")
    return normalise((start + end) / 2, start_positions.numel(), num_items_in_batch)
