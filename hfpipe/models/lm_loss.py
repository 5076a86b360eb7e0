"""The LM head's loss without the (tokens x vocab) logits: a chunked linear + cross-entropy.

A language model's last matmul makes N x V logits: 8 x 1024 tokens of GPT-2 (V = 50257) are
1.6 GB in float32, and the dense loss keeps three tensors of that size alive (logits, their
log-softmax for backward, the gradient). ``linear_cross_entropy`` walks the token rows in
chunks instead: forward keeps one log-sum-exp per row, backward recomputes each chunk's
logits and softmax to produce the gradients of the hidden states, the weight and the bias.
The price is one extra vocabulary matmul (the recomputation); bench/lm_head.py measures both.

Semantics are ``blocks.cross_entropy``'s: labels -100 take no loss, the per-token losses are
summed (blocks.py then divides the sum as its loss contract says); logits are float32 before
the softmax whatever the matmul's dtype. Under autocast the matmuls run in the autocast dtype,
as ``F.linear``'s would.

This file travels with saved checkpoints (trust_remote_code), so it imports nothing from hfpipe.
"""

from __future__ import annotations

import math

import torch


# Fewest token rows per chunk (eager): every chunk reads the whole (V, C) weight four times
# (forward, recomputation, both gradients), which a matmul of few rows does not amortise. On 2
# CPU cores the GPT-2 head over 2048 tokens took 3.8x the dense step in chunks of 31 rows, 1.7x
# in 128, 1.2-1.3x in 512 and 1024 (the extra vocabulary matmul of the recomputation).
MIN_CHUNK_ROWS = 512


def default_num_chunks(hidden_size: int, vocab_size: int, num_rows: int | None = None) -> int:
    """ceil(V / C) chunks: each chunk's float32 logits (N/K x V) then hold about as many numbers
    as the hidden states the head was given (N x C), so the head never needs more than a small
    multiple of its input (Liger-Kernel sizes its chunks the same way). With ``num_rows`` (eager),
    fewer chunks where that would leave fewer than MIN_CHUNK_ROWS rows in each. GPT-2 at 8 x 1024
    tokens: 16 chunks of 512 rows, 103 MB of float32 logits each (the dense logits: 1.6 GB).

    Under torch.compile the count leaves the token count out: a fixed count keeps the loop's
    length independent of N, so a graph compiled for a dynamic N needs no guard on it.
    """
    chunks = math.ceil(vocab_size / hidden_size)
    if num_rows is not None:
        chunks = max(1, min(chunks, num_rows // MIN_CHUNK_ROWS))
    return chunks


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(n, C) -> float32 logits (n, V), the matmul in the inputs' dtype."""
    out = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())  # (n, V)
    return out.float()


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``labels``, chunk by chunk.

    forward(hidden (N, C), weight (V, C), bias (V,) or None, labels (N,) with -100 ignored,
    num_chunks) -> float32 scalar, the sum over labelled rows of logsumexp - target logit.
    Saved for backward: the inputs and one float32 log-sum-exp per row (N,).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, num_chunks: int):
        labelled = labels != -100  # (N,)
        targets = labels.masked_fill(~labelled, 0)  # any valid index; its loss is dropped
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        lse_chunks = []
        for h, t, keep in zip(
            hidden.tensor_split(num_chunks), targets.tensor_split(num_chunks), labelled.tensor_split(num_chunks)
        ):
            logits = _logits(h, weight, bias)  # (n, V) float32
            lse = torch.logsumexp(logits, dim=-1)  # (n,)
            target_logit = logits.gather(1, t[:, None]).squeeze(1)  # (n,)
            total = total + torch.where(keep, lse - target_logit, 0.0).sum()
            lse_chunks.append(lse)
        ctx.num_chunks = num_chunks
        ctx.save_for_backward(hidden, weight, bias, targets, labelled, torch.cat(lse_chunks))
        return total

    @staticmethod
    def backward(ctx, grad_total):
        hidden, weight, bias, targets, labelled, lse = ctx.saved_tensors
        num_chunks = ctx.num_chunks
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
            if bias is not None and need_bias
            else None
        )
        grad_hidden_chunks = []
        # d(total)/d logits = softmax - onehot(target) on labelled rows, 0 on the others (a
        # factor of 0 even when grad_total is inf: no labelled token, 0/0 mean, as F.cross_entropy)
        row_scale = torch.where(labelled, grad_total.float(), 0.0)  # (N,)
        for h, t, row_lse, factor in zip(
            hidden.tensor_split(num_chunks),
            targets.tensor_split(num_chunks),
            lse.tensor_split(num_chunks),
            row_scale.tensor_split(num_chunks),
        ):
            # in place throughout: every pass over the (n, V) chunk allocates nothing new
            grad_logits = _logits(h, weight, bias).sub_(row_lse[:, None]).exp_()  # softmax (n, V) float32
            grad_logits.scatter_add_(1, t[:, None], torch.full_like(row_lse[:, None], -1.0))
            grad_logits.mul_(factor[:, None])
            if grad_bias is not None:
                grad_bias.add_(grad_logits.sum(0))
            grad_logits = grad_logits.to(weight.dtype)
            if need_hidden:
                grad_hidden_chunks.append(grad_logits @ weight)  # (n, C)
            if need_weight and grad_logits.dtype == torch.float32:
                grad_weight.addmm_(grad_logits.t(), h)  # (V, C), accumulated without a temporary
            elif need_weight:
                grad_weight.add_(grad_logits.t() @ h)  # half-precision product, float32 sum
        grad_hidden = torch.cat(grad_hidden_chunks).to(hidden.dtype) if need_hidden else None
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    num_chunks: int | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias), labels, reduction="sum")`` without the logits.

    hidden (..., C), weight (V, C), bias (V,) or None, labels (...) with -100 ignored -> float32
    scalar, the summed loss of the labelled tokens (blocks.py divides it as the loss contract says).
    ``num_chunks``: how many row chunks the logits are made in (``default_num_chunks`` when None).
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])  # (N, C)
    labels = labels.reshape(-1).to(hidden.device)  # (N,)
    device_type = hidden.device.type
    # (autocast knows no meta device: shape-only runs, such as FLOP counting, have no autocast)
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
        # What autocast does to F.linear's operands, done here because the Function's matmuls
        # must see the same dtypes in backward, where autocast is off.
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    if num_chunks is None:
        num_rows = None if torch.compiler.is_compiling() else hidden.shape[0]
        num_chunks = default_num_chunks(hidden.shape[1], weight.shape[0], num_rows)
    return LinearCrossEntropy.apply(hidden, weight, bias, labels, num_chunks)
