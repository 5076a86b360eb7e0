"""Attention patterns (sliding / dilated windows, global tokens, per-layer schedule) are exact.

Three levels: the "may attend" matrix against its definition, cell by cell and drawn; one
attention layer against a dense float32 softmax over the same boolean matrix, through both the
masked-SDPA path and the blocked sliding-chunk path; whole models of each family (padded,
causal and not) with the two paths against each other and against full attention where a
pattern must reduce to it.
"""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM

from hfpipe.models.attention_patterns import dense_reference_attention, is_local_layer, pattern_context
from hfpipe.models.blocks import CACHE_FIELD, Attention, TransformerStack
from hfpipe.models.configuration import config_for

from .conftest import VOCAB

TOL = 1e-5

# (window, dilation, global_tokens): plain window, Longformer's dilated windows, global [CLS]
PATTERNS = [(2, 1, 0), (2, 2, 0), (1, 3, 0), (2, 1, 2), (3, 2, 1)]


def allowed_by_definition(length, causal, window, dilation, global_positions=(), documents=None, valid=None):
    """The module docstring of attention_patterns, written out position by position."""
    out = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        for j in range(length):
            delta = j - i
            if window is None:
                ok = True
            else:
                ok = abs(delta) <= window * dilation and delta % dilation == 0
                ok = ok or i in global_positions or j in global_positions
            if causal and j > i:
                ok = False
            if documents is not None and documents[i] != documents[j]:
                ok = False
            if valid is not None and not valid[j]:
                ok = False
            out[i, j] = ok
    return out


def draw(allowed):
    return "\n".join("".join("#" if cell else "." for cell in row) for row in allowed.tolist())


def context_for(length, causal, window, dilation, global_tokens=0, global_mask=None, valid=None, documents=None):
    """The PatternContext a stack builds, for a batch of one row."""
    config = config_for("encoder", "tiny", attention_window=window, attention_dilation=dilation,
                        global_tokens=global_tokens)
    stack = TransformerStack(config, 1, causal=causal)
    mask = None if valid is None else torch.tensor(valid, dtype=torch.long)[None]
    gmask = None if global_mask is None else torch.tensor(global_mask)[None]
    docs = None if documents is None else torch.tensor(documents)[None]
    return pattern_context(stack, mask, gmask, docs, length, length, 0, 1, torch.device("cpu"))


def test_drawn_interaction_matrices():
    # window 1 each side; dilation 2 keeps distances 0 and 2 only; position 0 global: full row and column
    assert draw(context_for(6, False, 1, 1).allowed(6, 6, True, "cpu")[0]) == (
        "##....\n"
        "###...\n"
        ".###..\n"
        "..###.\n"
        "...###\n"
        "....##"
    )
    assert draw(context_for(6, False, 1, 2).allowed(6, 6, True, "cpu")[0]) == (
        "#.#...\n"
        ".#.#..\n"
        "#.#.#.\n"
        ".#.#.#\n"
        "..#.#.\n"
        "...#.#"
    )
    assert draw(context_for(6, False, 1, 1, global_tokens=1).allowed(6, 6, True, "cpu")[0]) == (
        "######\n"
        "###...\n"
        "####..\n"
        "#.###.\n"
        "#..###\n"
        "#...##"
    )
    assert draw(context_for(6, True, 2, 1, global_tokens=1).allowed(6, 6, True, "cpu")[0]) == (
        "#.....\n"
        "##....\n"
        "###...\n"
        "####..\n"
        "#.###.\n"
        "#..###"
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window,dilation,global_tokens", PATTERNS + [(1, 3, 1)])
def test_matrix_cell_by_cell(causal, window, dilation, global_tokens):
    length = 23
    extra = [0] * length
    extra[11] = extra[17] = 1  # Longformer's per-example global_attention_mask
    valid = [1] * 20 + [0] * 3  # right padding
    documents = [1] * 9 + [2] * 14
    marked = set(range(global_tokens)) | {11, 17}
    got = context_for(length, causal, window, dilation, global_tokens, extra, valid, documents)
    expected = allowed_by_definition(length, causal, window, dilation, marked, documents, valid)
    assert torch.equal(got.allowed(length, length, True, "cpu")[0], expected)
    # full (non-windowed) layers of the same stack: only causality, documents and padding remain
    assert torch.equal(got.allowed(length, length, False, "cpu")[0],
                       allowed_by_definition(length, causal, None, 1, (), documents, valid))


def test_layer_schedule():
    config = config_for("encoder", "tiny", attention_window=4, global_attention_every_n_layers=3, num_hidden_layers=7)
    assert [is_local_layer(config, i) for i in range(7)] == [False, True, True, False, True, True, False]
    every = config_for("encoder", "tiny", attention_window=4)
    assert all(is_local_layer(every, i) for i in range(5))
    assert not any(is_local_layer(config_for("encoder", "tiny"), i) for i in range(5))


@pytest.mark.parametrize("bad", [dict(attention_window=0), dict(attention_dilation=0), dict(global_tokens=-1),
                                 dict(global_attention_every_n_layers=0), dict(attention_window=2.5)])
def test_invalid_patterns_are_refused(bad):
    with pytest.raises(ValueError):
        config_for("encoder", "tiny", **bad)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window,dilation,global_tokens", PATTERNS)
def test_attention_layer_equals_dense_reference(causal, window, dilation, global_tokens):
    """Blocked and masked-SDPA paths against softmax(q k^T / sqrt(D)) v over the explicit matrix."""
    torch.manual_seed(0)
    config = config_for("encoder", "tiny", attention_window=window, attention_dilation=dilation,
                        global_tokens=global_tokens, attention_probs_dropout_prob=0.0)
    attention = Attention(config, 0).eval()
    batch, length = 2, 37
    hidden = torch.randn(batch, length, config.hidden_size)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 29:] = 0
    global_mask = torch.zeros(batch, length, dtype=torch.long)
    global_mask[0, 20] = global_mask[1, [5, 12]] = 1  # different counts per row
    stack = TransformerStack(config, 1, causal=causal)
    context = pattern_context(stack, mask, global_mask, None, length, length, 0, batch, torch.device("cpu"))
    allowed = context.allowed(length, length, True, "cpu")[:, None]  # (B, 1, T, S)

    query, key, value = (attention._heads(proj(hidden)) for proj in (attention.q_proj, attention.k_proj,
                                                                        attention.v_proj))
    expected = dense_reference_attention(query, key, value, allowed)  # (B, H, T, D)
    expected = attention.o_proj(expected.transpose(1, 2).reshape(batch, length, -1))
    bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with torch.no_grad():
        blocked = attention(hidden, pattern=context)
        sdpa = attention(hidden, attention_bias=bias)
    real = mask.bool()
    assert (blocked - expected).abs()[real].max() < TOL
    assert (sdpa - expected).abs()[real].max() < TOL


FAMILIES = {
    "encoder": (AutoModelForMaskedLM, {}),
    "decoder": (AutoModelForCausalLM, dict(position_embedding_type="rope")),
    "seq2seq": (AutoModelForSeq2SeqLM, {}),  # T5 relative position bias in the windowed path
}


def build(family, seed=0, **pattern):
    auto, extra = FAMILIES[family]
    config = config_for(family, "tiny", vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        pad_token_id=0, bos_token_id=None, eos_token_id=1, **extra, **pattern)
    torch.manual_seed(seed)
    return auto.from_config(config).eval()


def run(model, ids, mask, implementation, **inputs):
    for module in model.modules():
        if isinstance(module, TransformerStack):
            module.pattern_implementation = implementation
    if model.config.is_encoder_decoder:
        inputs.setdefault("decoder_input_ids", ids[:, :11])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **inputs).logits


def padded_batch(length=61):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length - 17:] = 0
    return ids, mask


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("window,dilation,global_tokens", PATTERNS)
def test_models_blocked_path_equals_dense_path(family, window, dilation, global_tokens):
    model = build(family, attention_window=window, attention_dilation=dilation, global_tokens=global_tokens)
    ids, mask = padded_batch()
    dense, blocked = run(model, ids, mask, "dense"), run(model, ids, mask, "blocked")
    rows = mask.bool() if family != "seq2seq" else torch.ones(dense.shape[:2], dtype=torch.bool)
    assert (dense - blocked).abs()[rows].max() < TOL


@pytest.mark.parametrize("family", ["encoder", "seq2seq"])
def test_global_attention_mask_input(family):
    model = build(family, attention_window=2, global_tokens=1)
    ids, mask = padded_batch()
    global_mask = torch.zeros_like(ids)
    global_mask[0, 30] = global_mask[1, [7, 40]] = 1
    dense = run(model, ids, mask, "dense", global_attention_mask=global_mask)
    blocked = run(model, ids, mask, "blocked", global_attention_mask=global_mask)
    without = run(model, ids, mask, "blocked")
    rows = mask.bool() if family != "seq2seq" else torch.ones(dense.shape[:2], dtype=torch.bool)
    assert (dense - blocked).abs()[rows].max() < TOL
    assert (blocked - without).abs()[rows].max() > 1e-3  # the marked positions changed something


@pytest.mark.parametrize("family", list(FAMILIES))
def test_patterns_that_cover_everything_equal_full_attention(family):
    ids, mask = padded_batch()
    full = run(build(family), ids, mask, "auto")
    rows = mask.bool() if family != "seq2seq" else torch.ones(full.shape[:2], dtype=torch.bool)
    # a window wider than the sequence is full attention, on either path
    for implementation in ("dense", "blocked"):
        wide = run(build(family, attention_window=64), ids, mask, implementation)
        assert (full - wide).abs()[rows].max() < TOL
    # every layer scheduled global: the window is never used
    scheduled = run(build(family, attention_window=2, global_attention_every_n_layers=1), ids, mask, "blocked")
    assert (full - scheduled).abs()[rows].max() < TOL
    # every layer local: the window now hides something, so the output differs from full attention
    assert (full - run(build(family, attention_window=2), ids, mask, "blocked")).abs()[rows].max() > 1e-3


def test_every_n_layers_schedule_runs_full_layers_fully():
    """A 3-layer encoder with n=2: layers 0 and 2 full, layer 1 local; the blocked and dense paths
    agree, and differ from both all-local and all-full models of the same weights."""
    ids, mask = padded_batch()
    common = dict(num_hidden_layers=3)
    mixed = build("encoder", attention_window=2, global_attention_every_n_layers=2, **common)
    out = run(mixed, ids, mask, "blocked")
    assert (out - run(mixed, ids, mask, "dense")).abs()[mask.bool()].max() < TOL
    local = run(build("encoder", attention_window=2, **common), ids, mask, "blocked")
    full = run(build("encoder", **common), ids, mask, "auto")
    assert (out - local).abs()[mask.bool()].max() > 1e-3
    assert (out - full).abs()[mask.bool()].max() > 1e-3


def test_blocked_path_gradients_equal_dense_path():
    model = build("encoder", attention_window=3, attention_dilation=2, global_tokens=1).train()
    ids, mask = padded_batch()
    grads = []
    for implementation in ("dense", "blocked"):
        for module in model.modules():
            if isinstance(module, TransformerStack):
                module.pattern_implementation = implementation
        model.zero_grad()
        labels = ids.masked_fill(mask == 0, -100)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert (grads[0] - grads[1]).abs().max() < 1e-5


def test_windowed_decoding_with_cache_equals_full_forward():
    """A KV cache takes the dense path with query positions offset by the cache: step-by-step
    decoding gives the logits of one forward over the whole sequence (blocked path)."""
    model = build("decoder", attention_window=3, global_tokens=1)
    ids = torch.randint(5, VOCAB, (1, 40), generator=torch.Generator().manual_seed(2))
    whole = run(model, ids, None, "blocked")
    with torch.no_grad():
        out = model(input_ids=ids[:, :30], use_cache=True)
        steps = [out.logits[:, -1]]
        cache = getattr(out, CACHE_FIELD)
        for t in range(30, 39):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits[:, -1])
    assert (torch.stack(steps, 1) - whole[:, 29:39]).abs().max() < TOL


def test_pattern_is_saved_and_loads_through_auto_classes(tmp_path):
    model = build("encoder", attention_window=5, attention_dilation=2, global_tokens=1,
                  global_attention_every_n_layers=3)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.attention_window, config.attention_dilation, config.global_tokens,
            config.global_attention_every_n_layers) == (5, 2, 1, 3)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch()
    assert (run(model, ids, mask, "auto") - run(loaded, ids, mask, "auto")).abs().max() == 0
    base = AutoModel.from_pretrained(tmp_path)
    assert base.encoder.local_layers == [False, True]


def test_default_config_takes_the_unpatterned_path():
    """Full attention by default: no pattern, and an unpadded batch still reaches SDPA without a mask
    (its fastest kernel), as before patterns existed."""
    model = build("encoder")
    stack = model.model.encoder
    assert stack.attention_window is None and not any(stack.local_layers)
    ids, _ = padded_batch()
    seen = []
    hook = stack.layers[0].self_attention.register_forward_hook(
        lambda module, args, kwargs, output: seen.append((args[1], kwargs["pattern"])), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(61)[None])
    finally:
        hook.remove()
    assert seen == [(None, None)]


def test_blocked_path_needs_no_quadratic_matrix():
    """The windowed layer's largest intermediate grows linearly in T: per block of b queries, its
    (b, 3b + G) mask and (3b + G, D) keys, never a (T, T) matrix."""
    config = config_for("encoder", "tiny", attention_window=8, global_tokens=1, attention_probs_dropout_prob=0.0)
    attention = Attention(config, 0).eval()
    stack = TransformerStack(config, 1, causal=False)
    largest = {}
    for length in (512, 1024):
        context = pattern_context(stack, None, None, None, length, length, 0, 1, torch.device("cpu"))
        hidden = torch.randn(1, length, config.hidden_size)
        sizes = []

        class Largest(torch.utils._python_dispatch.TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else [out]:
                    if isinstance(t, torch.Tensor):
                        sizes.append(t.numel())
                return out

        with torch.no_grad(), Largest():
            attention(hidden, pattern=context)
        largest[length] = max(sizes)
    # a (T, T) score matrix over 4 heads would be 4 * 512^2 elements at 512 tokens
    assert largest[512] < 4 * 512 * 512 / 8
    assert largest[1024] == pytest.approx(2 * largest[512], rel=0.05)
