"""Attention patterns: sliding (and dilated) windows, global tokens, document masking.

One function, :func:`may_attend`, says which key each query may see; everything else here
either builds that matrix for a whole sequence (the dense path, used when sequences are short
or a KV cache is in use, and by the tests' reference) or evaluates it block by block so that
nothing of size (T, T) is ever made (:func:`blocked_attention`, the long-sequence path).

Semantics, for a query at position i and a key at position j (delta = j - i):

    window w, dilation d   |delta| <= w*d and delta % d == 0  (Longformer's dilated window);
                           causal stacks: -w*d <= delta <= 0
    global positions       a global query sees every key, a global key is seen by every query
                           (Longformer's global attention, [CLS]); causality still holds
    causal                 delta <= 0
    documents              query and key lie in the same document of a packed block (document
                           ids come from ``position_ids`` restarting at 0, as transformers'
                           DataCollatorWithFlattening emits them); this holds for global
                           positions too: a global token is global within its document.
                           Encoder-decoders: the decoder's document k (its own position ids
                           restarting at 0) cross-attends to the encoder's document k only
                           (:func:`cross_document_allowed`)
    padding                the key is not padding

Shapes: B batch, H heads, T query length, S key length, D head width, n blocks of b
queries, K keys a block sees, G global positions.

This file travels with saved checkpoints (trust_remote_code): it imports nothing from hfpipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "PatternContext",
    "blocked_attention",
    "cross_document_allowed",
    "dense_reference_attention",
    "document_ids",
    "is_local_layer",
    "may_attend",
    "shift_right",
]


def may_attend(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    dilation: int = 1,
    query_global: torch.Tensor | None = None,
    key_global: torch.Tensor | None = None,
    query_documents: torch.Tensor | None = None,
    key_documents: torch.Tensor | None = None,
    key_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boolean "may attend" matrix of a pattern (see the module docstring).

    Every argument broadcasts against the others: query-side tensors end in (..., T, 1),
    key-side ones in (..., 1, S); the result is their broadcast shape, e.g. (B, T, S).
    ``window=None`` is full attention (globals then change nothing).
    """
    delta = key_positions - query_positions
    allowed = torch.ones_like(delta, dtype=torch.bool)
    if window is not None:
        allowed = delta.abs() <= window * dilation
        if dilation > 1:
            allowed = allowed & (delta.remainder(dilation) == 0)
        if query_global is not None:
            allowed = allowed | query_global
        if key_global is not None:
            allowed = allowed | key_global
    if causal:
        allowed = allowed & (delta <= 0)
    if query_documents is not None:
        allowed = allowed & (query_documents == key_documents)
    if key_valid is not None:
        allowed = allowed & key_valid
    return allowed


def is_local_layer(config, layer_idx: int) -> bool:
    """Whether layer ``layer_idx`` uses the window: every layer, or with
    ``global_attention_every_n_layers = n`` all but layers 0, n, 2n, ... (ModernBERT's schedule)."""
    if getattr(config, "attention_window", None) is None:
        return False
    every = getattr(config, "global_attention_every_n_layers", None)
    return every is None or layer_idx % every != 0


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """position_ids (B, T) restarting at 0 at each document start -> document index (B, T)."""
    return (position_ids == 0).long().cumsum(-1)


def shift_right(
    labels: torch.Tensor,
    decoder_start_token_id: int,
    pad_token_id: int,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """labels (B, T) -> decoder inputs (B, T): the start token, then labels[:, :-1], -100 -> pad
    (T5's ``_shift_right``). The one implementation: the seq2seq model's ``shift_right`` and the
    data collators (span corruption, UL2, prefix LM) all call it.

    With ``position_ids`` (B, T) restarting at 0 at each packed document's first target, every
    document starts with ``decoder_start_token_id`` rather than the previous document's last
    label, so each document's decoder inputs are those it gets on its own.
    """
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    if position_ids is not None:
        shifted = shifted.masked_fill(position_ids.to(shifted.device) == 0, decoder_start_token_id)
    return shifted.masked_fill_(shifted == -100, pad_token_id)


def cross_document_allowed(
    query_position_ids: torch.Tensor, key_position_ids: torch.Tensor, key_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross attention of packed documents: decoder document k reads encoder document k only.
    query_position_ids (B, T), key_position_ids (B, S) restarting at 0 per document, key_valid
    (B, S) or None -> bool (B, T, S)."""
    allowed = document_ids(query_position_ids)[:, :, None] == document_ids(key_position_ids)[:, None, :]
    return allowed if key_valid is None else allowed & key_valid[:, None, :].bool()


@dataclasses.dataclass
class PatternContext:
    """Per forward pass, what the masks of a stack's self-attention depend on beyond positions.

    key_valid (B, S) bool or None: not padding. documents (B, S) or None. is_global (B, S) bool
    or None. global_index (B, G) / global_valid (B, G): where the global positions are (G fixed
    for the batch; rows with fewer globals fill up with non-global positions marked invalid).
    """

    causal: bool
    window: int | None
    dilation: int
    past_length: int = 0
    key_valid: torch.Tensor | None = None
    documents: torch.Tensor | None = None
    is_global: torch.Tensor | None = None
    global_index: torch.Tensor | None = None
    global_valid: torch.Tensor | None = None
    # masks of the blocked path, built by the first windowed layer and reused by the others
    masks: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def allowed(self, query_length: int, key_length: int, local: bool, device) -> torch.Tensor:
        """The dense (B|1, T, S) boolean matrix, queries at past_length .. past_length + T - 1."""
        query_positions = torch.arange(self.past_length, self.past_length + query_length, device=device)[:, None]
        key_positions = torch.arange(key_length, device=device)[None, :]
        query_global = key_global = query_documents = key_documents = key_valid = None
        if local and self.is_global is not None:
            query_global = self.is_global[:, -query_length:, None]
            key_global = self.is_global[:, None, :]
        if self.documents is not None:
            query_documents = self.documents[:, -query_length:, None]
            key_documents = self.documents[:, None, :]
        if self.key_valid is not None:
            key_valid = self.key_valid[:, None, :]
        allowed = may_attend(
            query_positions, key_positions, causal=self.causal, window=self.window if local else None,
            dilation=self.dilation, query_global=query_global, key_global=key_global,
            query_documents=query_documents, key_documents=key_documents, key_valid=key_valid,
        )
        return allowed if allowed.dim() == 3 else allowed[None]


def global_positions(is_global: torch.Tensor, first_k: int, marked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """is_global (B, S) -> (index (B, G), valid (B, G)).

    Only the first ``first_k`` positions global (``marked`` False): G = k, known on the host.
    Positions marked per example: G is the largest count in the batch, which reads the mask
    back to the host once per forward (as Longformer does).
    """
    batch, length = is_global.shape
    if not marked:
        count = min(first_k, length)
        index = torch.arange(count, device=is_global.device).expand(batch, -1)
        return index, torch.ones(index.shape, dtype=torch.bool, device=is_global.device)
    count = int(is_global.sum(-1).max())  # the host sync
    # a stable sort puts each row's global positions first, in order, then distinct other positions
    index = torch.argsort((~is_global).to(torch.int8), dim=-1, stable=True)[:, :count]
    return index, is_global.gather(1, index)


def _softmax_masked(scores: torch.Tensor, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The finite minimum, not -inf: a row with nothing allowed (a padding query far from any real
    # token) becomes uniform instead of NaN, which would leak into real positions' gradients.
    scores = scores.float().masked_fill(~allowed, torch.finfo(torch.float32).min)
    return torch.softmax(scores, dim=-1).to(dtype)


def dense_reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor,
    scale: float | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias, over allowed keys) v with the whole (T, S) matrix:
    query (B, H, T, D), key/value (B, H, S, D), allowed (B|1, 1|H, T, S) -> (B, H, T, D)."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    return torch.matmul(_softmax_masked(scores, allowed, value.dtype), value)  # (B, H, T, D)


def _blocked_masks(context: PatternContext, batch: int, length: int, device) -> dict:
    """The boolean masks of :func:`blocked_attention` for sequences of ``length``: they depend on
    positions, padding, documents and globals only, so every windowed layer of a forward shares them."""
    key = ("blocked", batch, length)
    if key in context.masks:
        return context.masks[key]
    block = context.window * context.dilation
    num_blocks = -(-length // block)
    padded = num_blocks * block
    neighbours = 2 if context.causal else 3
    query_positions = torch.arange(padded, device=device).view(num_blocks, block)  # (n, b)
    key_positions = query_positions[:, :1] - block + torch.arange(neighbours * block, device=device)  # (n, K)
    key_gather = key_positions.clamp(0, length - 1)
    def per_key(x):
        """(B, T) per-position values -> (B, n, K) at each block's keys."""
        return None if x is None else x[:, key_gather]

    def per_query(x):
        """(B, T) -> (B, n, b)"""
        return None if x is None else F.pad(x, (0, padded - length)).view(x.shape[0], num_blocks, block)

    key_valid = ((key_positions >= 0) & (key_positions < length)).expand(batch, -1, -1)  # (B, n, K)
    if context.key_valid is not None:
        key_valid = key_valid & per_key(context.key_valid)
    if context.is_global is not None:
        key_valid = key_valid & ~per_key(context.is_global)  # global keys come as columns of their own
    query_documents, key_documents = per_query(context.documents), per_key(context.documents)
    allowed = may_attend(
        query_positions[None, :, :, None], key_positions[None, :, None, :], causal=context.causal,
        window=context.window, dilation=context.dilation,
        query_documents=None if query_documents is None else query_documents[..., None],
        key_documents=None if key_documents is None else key_documents[:, :, None, :],
        key_valid=key_valid[:, :, None, :],
    )[:, None]  # (B, 1, n, b, K)
    masks = {}
    if context.global_index is not None and context.global_index.shape[1]:
        index, valid = context.global_index, context.global_valid  # (B, G)
        global_valid = valid if context.key_valid is None else valid & context.key_valid.gather(1, index)
        global_documents = None if context.documents is None else context.documents.gather(1, index)
        columns = may_attend(
            query_positions[None, :, :, None], index[:, None, None, :], causal=context.causal,
            query_documents=None if query_documents is None else query_documents[..., None],
            key_documents=None if global_documents is None else global_documents[:, None, None, :],
            key_valid=global_valid[:, None, None, :],
        )[:, None]  # (B, 1, n, b, G)
        allowed = torch.cat([allowed, columns], dim=-1)  # (B, 1, n, b, K+G)
        masks["rows_allowed"] = may_attend(
            index[:, :, None], torch.arange(length, device=device)[None, None, :], causal=context.causal,
            query_documents=None if global_documents is None else global_documents[:, :, None],
            key_documents=None if context.documents is None else context.documents[:, None, :],
            key_valid=None if context.key_valid is None else context.key_valid[:, None, :],
        )[:, None]  # (B, 1, G, T)
    # additive form for SDPA, one block per batch entry: (B*n, 1, b, K[+G])
    masks["allowed"] = allowed.expand(batch, -1, -1, -1, -1).reshape(-1, 1, *allowed.shape[-2:])
    masks["query_positions"], masks["key_positions"] = query_positions, key_positions
    context.masks[key] = masks
    return masks


def blocked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    context: PatternContext,
    scale: float | None = None,
    dropout_p: float = 0.0,
    position_bias: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Windowed attention without the (T, T) matrix: query (B, H, T, D), key/value (B, H, T, D)
    (self-attention, no cache) -> (B, H, T, D), equal to the dense path on ``context.allowed``.

    Sliding chunks (Longformer's "sliding_chunks" mode): queries go in blocks of b = w*d, the
    window's reach; block i sees key blocks i-1, i, i+1 (causal: i-1, i), K = 3b (2b) keys, plus
    the G global keys as extra columns (masked out of the local blocks so none counts twice). The
    n = T/b blocks become the batch of one SDPA call with a (B*n, 1, b, K+G) mask, so the work is
    linear in T and SDPA's fused kernels keep no (b, K) probabilities for the backward pass.
    Global queries are then recomputed against all T keys, (B, H, G, T). ``position_bias`` maps
    relative positions (key - query, any shape) to biases (..., H) (T5's buckets).
    """
    batch, heads, length, dim = query.shape
    scale = dim**-0.5 if scale is None else scale
    masks = _blocked_masks(context, batch, length, query.device)
    query_positions, key_positions = masks["query_positions"], masks["key_positions"]
    num_blocks, block = query_positions.shape
    padded = num_blocks * block
    neighbours = key_positions.shape[1] // block

    def blocks_of(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) -> (B, H, n, K, D): each query block's neighbouring key blocks."""
        right = padded - length + (block if neighbours == 3 else 0)
        x = F.pad(x, (0, 0, block, right)).view(batch, heads, -1, block, dim)  # (B, H, n+2|n+1, b, D)
        return torch.cat([x[:, :, i : i + num_blocks] for i in range(neighbours)], dim=3)

    global_rows = "rows_allowed" in masks
    if global_rows:
        index, valid = context.global_index, context.global_valid  # (B, G)
        gather = index[:, None, :, None].expand(-1, heads, -1, dim)  # (B, H, G, D)

    def per_block(x: torch.Tensor) -> torch.Tensor:
        """(B, H, n, L, D) -> (B*n, H, L, D): the blocks become SDPA's batch."""
        return x.transpose(1, 2).reshape(batch * num_blocks, heads, x.shape[3], dim)

    q = F.pad(query, (0, 0, 0, padded - length)).view(batch, heads, num_blocks, block, dim)  # (B, H, n, b, D)
    q = per_block(q)  # (B*n, H, b, D)
    k, v = blocks_of(key), blocks_of(value)  # (B, H, n, K, D)
    if global_rows:
        # Global keys join every block's keys as G extra columns.
        k = torch.cat([k, key.gather(2, gather)[:, :, None].expand(-1, -1, num_blocks, -1, -1)], dim=3)
        v = torch.cat([v, value.gather(2, gather)[:, :, None].expand(-1, -1, num_blocks, -1, -1)], dim=3)
    k, v = per_block(k), per_block(v)  # (B*n, H, K[+G], D)
    bias = _additive(masks, "allowed", query.dtype)  # (B*n, 1, b, K[+G])
    if position_bias is not None:
        # aligned blocks: key - query depends on the offsets within the block only
        relative = key_positions[0][None, :] - query_positions[0][:, None]  # (b, K)
        positions = position_bias(relative).permute(2, 0, 1)[None].to(query.dtype)  # (1, H, b, K)
        if global_rows:
            relative = index[:, None, None, :] - query_positions[None, :, :, None]  # (B, n, b, G)
            global_bias = position_bias(relative).permute(0, 1, 4, 2, 3)  # (B, n, H, b, G)
            positions = torch.cat([positions.expand(batch * num_blocks, -1, -1, -1),
                                   global_bias.reshape(batch * num_blocks, heads, block, -1).to(query.dtype)], -1)
        bias = bias + positions
    # SDPA over the blocks: its fused CPU/GPU kernels keep no (b, K) probabilities for backward.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)  # (B*n, H, b, D)
    out = out.view(batch, num_blocks, heads, block, dim).transpose(1, 2).reshape(batch, heads, padded, dim)
    out = out[:, :, :length]  # (B, H, T, D)

    if global_rows:
        # Global queries see every key: their rows, (B, H, G, T), densely.
        row_bias = _additive(masks, "rows_allowed", query.dtype)  # (B, 1, G, T)
        if position_bias is not None:
            relative = torch.arange(length, device=query.device)[None, None, :] - index[:, :, None]  # (B, G, T)
            row_bias = row_bias + position_bias(relative).permute(0, 3, 1, 2).to(query.dtype)
        rows = F.scaled_dot_product_attention(
            query.gather(2, gather), key, value, attn_mask=row_bias, dropout_p=dropout_p, scale=scale
        )  # (B, H, G, D)
        # rows padding a short row's globals keep the windowed result (their index is no global position)
        rows = torch.where(valid[:, None, :, None], rows, out.gather(2, gather))
        out = out.scatter(2, gather, rows)
    return out


def additive_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean "may attend" mask (...) as SDPA's additive bias (...): 0 where allowed, the dtype's
    finite minimum elsewhere (not -inf: a row with nothing allowed stays finite, never NaN)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _additive(masks: dict, name: str, dtype: torch.dtype) -> torch.Tensor:
    """A cached boolean mask as its additive bias, made once per dtype."""
    key = (name, dtype)
    if key not in masks:
        masks[key] = additive_bias(masks[name], dtype)
    return masks[key]


# ----------------------------------------------------------------------------------- a stack's masks
# The mask policy of a TransformerStack's forward (blocks.py): which bias each layer attends with,
# decided once per forward. ``stack`` is the TransformerStack: its causal, attention_window,
# attention_dilation, global_tokens, local_layers, relative_position_bias, pattern_implementation
# and training are read.
def padding_bias(attention_mask: torch.Tensor, query_length: int, dtype: torch.dtype) -> torch.Tensor:
    """attention_mask (B, S) of 1 = attend, 0 = padding -> additive bias (B, 1, T, S).

    The finite dtype minimum instead of -inf keeps rows that are all padding from turning
    into NaN in the softmax.
    """
    allowed = attention_mask[:, None, None, :].bool().expand(-1, 1, query_length, -1)  # (B, 1, T, S)
    return additive_bias(allowed, dtype)  # (B, 1, T, S)


def uses_blocked_path(stack, query_length: int, key_length: int, past_length: int) -> bool:
    """Whether the stack's windowed layers take the blocked path (linear in T) in this forward."""
    if stack.pattern_implementation == "dense" or past_length > 0 or key_length != query_length:
        return False
    reach = stack.attention_window * stack.attention_dilation
    return stack.pattern_implementation == "blocked" or query_length > 4 * reach


def pattern_context(stack, attention_mask, global_attention_mask, documents, query_length, key_length,
                    past_length, batch, device) -> PatternContext:
    """What the masks of this forward depend on (PatternContext)."""
    is_global = global_index = global_valid = None
    windowed = stack.attention_window is not None
    if windowed and (stack.global_tokens or global_attention_mask is not None):
        is_global = (torch.arange(key_length, device=device) < stack.global_tokens).expand(batch, -1)  # (B, S)
        if global_attention_mask is not None:
            is_global = is_global | global_attention_mask.to(device).bool()  # (B, S)
        global_index, global_valid = global_positions(  # (B, G) each
            is_global, stack.global_tokens, marked=global_attention_mask is not None
        )
    return PatternContext(
        causal=stack.causal,
        window=stack.attention_window,
        dilation=stack.attention_dilation,
        past_length=past_length,
        key_valid=attention_mask.bool() if attention_mask is not None else None,
        documents=documents,
        is_global=is_global,
        global_index=global_index,
        global_valid=global_valid,
    )


def pattern_bias(stack, context: PatternContext, local: bool, query_length, key_length, past_length, dtype,
                 device) -> torch.Tensor:
    """The dense path of a pattern: its (B, 1|H, T, S) additive bias, position bias included."""
    allowed = context.allowed(query_length, key_length, local, device)[:, None]  # (B|1, 1, T, S)
    bias = additive_bias(allowed, dtype)  # (B|1, 1, T, S)
    if stack.relative_position_bias is not None:
        bias = bias + stack.relative_position_bias(query_length, key_length, past_length).to(dtype)  # (B|1, H, T, S)
    return bias


def self_attention_bias(stack, attention_mask, query_length, key_length, past_length, dtype, device):
    """Padding, causality and relative position bias in one additive (B|1, H|1, T, S) tensor, or
    None when nothing needs masking (SDPA then picks its fastest kernel)."""
    bias = None
    needs_causal_mask = stack.causal and query_length > 1 and (past_length > 0 or attention_mask is not None)
    if attention_mask is not None:
        bias = padding_bias(attention_mask, query_length, dtype)  # (B, 1, T, S)
    if needs_causal_mask or (stack.causal and stack.relative_position_bias is not None and query_length > 1):
        query_pos = torch.arange(past_length, past_length + query_length, device=device)[:, None]  # (T, 1)
        future = torch.arange(key_length, device=device)[None, :] > query_pos  # (T, S)
        causal = additive_bias(~future, dtype)  # (T, S)
        # (1|B, 1, T, S)
        bias = causal[None, None] if bias is None else bias.masked_fill(future, torch.finfo(dtype).min)
    if stack.relative_position_bias is not None:
        position_bias = stack.relative_position_bias(query_length, key_length, past_length).to(dtype)  # (1, H, T, S)
        bias = position_bias if bias is None else bias + position_bias  # (B|1, H, T, S)
    return bias


@dataclasses.dataclass
class StackMasks:
    """What every layer of one forward attends with (``stack_masks``)."""

    attention_bias: torch.Tensor | None  # global layers: (B|1, H|1, T, S) additive, or None
    local_bias: torch.Tensor | None  # windowed layers, dense path
    pattern: PatternContext | None  # windowed layers, blocked path (else None)
    position_bias: torch.Tensor | None  # windowed layers, blocked path: the relative-position table
    encoder_attention_bias: torch.Tensor | None  # cross attention: (B, 1, T, S_enc) or None
    is_causal: bool  # SDPA may apply causality itself (no mask given)
    windowed: bool

    def for_layer(self, local: bool) -> dict:
        """The keyword arguments of a TransformerBlock for a global (False) or windowed (True) layer."""
        local = local and self.windowed
        return {"attention_bias": self.local_bias if local else self.attention_bias,
                "pattern": self.pattern if local else None,
                "position_bias": self.position_bias if local else None,
                "encoder_attention_bias": self.encoder_attention_bias, "is_causal": self.is_causal}


def stack_masks(stack, batch: int, query_length: int, past_length: int, dtype, device,
                attention_mask=None, position_ids=None, global_attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, encoder_position_ids=None) -> StackMasks:
    """The masks of one forward of ``stack`` over (B, T) queries after ``past_length`` cached ones.

    attention_mask (B, S) covers cached positions too (S = past + T); position_ids that restart at
    0 inside a row mark packed documents (attention then stays within each, without a KV cache);
    with ``encoder_position_ids`` too, cross attention stays within each document as well."""
    if (
        attention_mask is not None
        and not stack.training
        and not torch.compiler.is_compiling()
        and bool(attention_mask.all())
    ):
        # Nothing is padded: without a mask SDPA can take its fastest kernel (as transformers does).
        # Only outside training and torch.compile: the check reads the mask back to the host,
        # which in a training step on an accelerator stalls the host until the device has caught
        # up (and breaks a compiled graph). In training a given mask is used as it is: a collator,
        # which sees on the host that nothing is padded, can leave it out to get the fast kernel.
        attention_mask = None
    key_length = past_length + query_length
    documents = None
    if position_ids is not None and past_length == 0 and query_length > 1:
        documents = document_ids(position_ids).expand(batch, -1)  # (B, T)
        one_document_per_row = not stack.training and not torch.compiler.is_compiling() and bool(
            (documents[:, -1] == documents[:, 0]).all()
        )
        if one_document_per_row:  # plain positions (generate's): no mask, as the padding check above
            documents = None
    windowed = stack.attention_window is not None and any(stack.local_layers)
    # Only a plain causal stack starting from an empty cache can let SDPA apply causality itself.
    is_causal = stack.causal and past_length == 0 and query_length > 1
    context = local_bias = position_bias = None
    if windowed or documents is not None:
        context = pattern_context(stack, attention_mask, global_attention_mask, documents, query_length, key_length,
                                  past_length, batch, device)
    if documents is None:
        attention_bias = self_attention_bias(stack, attention_mask, query_length, key_length, past_length, dtype,
                                             device)
    else:
        attention_bias = pattern_bias(stack, context, False, query_length, key_length, past_length, dtype, device)
    blocked = windowed and uses_blocked_path(stack, query_length, key_length, past_length)
    if blocked and stack.relative_position_bias is not None:
        position_bias = stack.relative_position_bias.relative
    elif windowed and not blocked:
        local_bias = pattern_bias(stack, context, True, query_length, key_length, past_length, dtype, device)

    encoder_attention_bias = None
    if encoder_hidden_states is not None and encoder_position_ids is not None and position_ids is not None \
            and past_length == 0:
        # packed documents: padding and "same document" in one (B, 1, T, S_enc) bias
        cross_allowed = cross_document_allowed(
            position_ids.expand(batch, -1), encoder_position_ids.to(device).expand(batch, -1),
            None if encoder_attention_mask is None else encoder_attention_mask.to(device),
        )[:, None]
        encoder_attention_bias = additive_bias(cross_allowed, dtype)  # (B, 1, T, S_enc)
    elif encoder_hidden_states is not None and encoder_attention_mask is not None:
        encoder_attention_bias = padding_bias(encoder_attention_mask, query_length, dtype)  # (B, 1, T, S_enc)
    return StackMasks(attention_bias, local_bias, context if blocked else None, position_bias,
                      encoder_attention_bias, is_causal, windowed)
