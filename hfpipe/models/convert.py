"""State-dict adapters: transformers' BERT, GPT-2 and T5 checkpoints -> hfpipe (and back).

Each adapter is the config mapping plus a list of (hfpipe name, reference name) rules with
``{i}`` standing for the layer index; GPT-2's Conv1D weights are transposed. Parity tests
(tests/models/test_parity.py) load both models from the same weights and compare logits.
"""

from __future__ import annotations

import re

import torch

from .configuration import HfpipeDecoderConfig, HfpipeEncoderConfig, HfpipeSeq2SeqConfig

_COMMON = ("pad_token_id", "bos_token_id", "eos_token_id", "id2label", "label2id", "problem_type")


def _carry(reference_config, **fields) -> dict:
    for name in _COMMON:
        value = getattr(reference_config, name, None)
        if value is not None:
            fields[name] = value
    return fields


def bert_config(ref) -> HfpipeEncoderConfig:
    if getattr(ref, "position_embedding_type", "absolute") not in (None, "absolute"):
        raise ValueError("only BERT checkpoints with absolute position embeddings can be converted")
    return HfpipeEncoderConfig(
        **_carry(
            ref,
            vocab_size=ref.vocab_size,
            hidden_size=ref.hidden_size,
            num_hidden_layers=ref.num_hidden_layers,
            num_attention_heads=ref.num_attention_heads,
            intermediate_size=ref.intermediate_size,
            hidden_act=ref.hidden_act,
            layer_norm_eps=ref.layer_norm_eps,
            max_position_embeddings=ref.max_position_embeddings,
            type_vocab_size=ref.type_vocab_size,
            hidden_dropout_prob=ref.hidden_dropout_prob,
            attention_probs_dropout_prob=ref.attention_probs_dropout_prob,
            classifier_dropout=ref.classifier_dropout,
            initializer_range=ref.initializer_range,
            norm_position="post",
            tie_word_embeddings=getattr(ref, "tie_word_embeddings", True),
        )
    )


def gpt2_config(ref) -> HfpipeDecoderConfig:
    return HfpipeDecoderConfig(
        **_carry(
            ref,
            vocab_size=ref.vocab_size,
            hidden_size=ref.n_embd,
            num_hidden_layers=ref.n_layer,
            num_attention_heads=ref.n_head,
            intermediate_size=ref.n_inner or 4 * ref.n_embd,
            hidden_act=ref.activation_function,
            layer_norm_eps=ref.layer_norm_epsilon,
            max_position_embeddings=ref.n_positions,
            hidden_dropout_prob=ref.resid_pdrop,
            attention_probs_dropout_prob=ref.attn_pdrop,
            initializer_range=ref.initializer_range,
            tie_word_embeddings=getattr(ref, "tie_word_embeddings", True),
        )
    )


def t5_config(ref) -> HfpipeSeq2SeqConfig:
    return HfpipeSeq2SeqConfig(
        **_carry(
            ref,
            vocab_size=ref.vocab_size,
            hidden_size=ref.d_model,
            head_dim=ref.d_kv,
            num_hidden_layers=ref.num_layers,
            num_decoder_layers=ref.num_decoder_layers,
            num_attention_heads=ref.num_heads,
            intermediate_size=ref.d_ff,
            hidden_act=ref.dense_act_fn,
            gated_mlp=ref.is_gated_act,
            layer_norm_eps=ref.layer_norm_epsilon,
            relative_attention_num_buckets=ref.relative_attention_num_buckets,
            relative_attention_max_distance=ref.relative_attention_max_distance,
            hidden_dropout_prob=ref.dropout_rate,
            attention_probs_dropout_prob=ref.dropout_rate,
            # T5 starts decoding from its pad id; configs built without the field (transformers 5.2x) lack it
            decoder_start_token_id=getattr(ref, "decoder_start_token_id", None)
            if getattr(ref, "decoder_start_token_id", None) is not None else ref.pad_token_id,
            tie_word_embeddings=ref.tie_word_embeddings,
            # transformers >= 5.2x always ties T5 and keeps the v1.0/v1.1 difference here
            scale_decoder_outputs=getattr(ref, "scale_decoder_outputs", ref.tie_word_embeddings),
        )
    )


# (hfpipe name, transformers name); "{i}" is the layer index.
_BERT_LAYER = [
    ("encoder.layers.{i}.self_attention.q_proj", "encoder.layer.{i}.attention.self.query"),
    ("encoder.layers.{i}.self_attention.k_proj", "encoder.layer.{i}.attention.self.key"),
    ("encoder.layers.{i}.self_attention.v_proj", "encoder.layer.{i}.attention.self.value"),
    ("encoder.layers.{i}.self_attention.o_proj", "encoder.layer.{i}.attention.output.dense"),
    ("encoder.layers.{i}.self_attention_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
    ("encoder.layers.{i}.mlp.up_proj", "encoder.layer.{i}.intermediate.dense"),
    ("encoder.layers.{i}.mlp.down_proj", "encoder.layer.{i}.output.dense"),
    ("encoder.layers.{i}.mlp_norm", "encoder.layer.{i}.output.LayerNorm"),
]
_BERT_BACKBONE = [
    ("embeddings.word_embeddings", "embeddings.word_embeddings"),
    ("embeddings.position_embeddings", "embeddings.position_embeddings"),
    ("embeddings.token_type_embeddings", "embeddings.token_type_embeddings"),
    ("embeddings.norm", "embeddings.LayerNorm"),
    ("pooler.dense", "pooler.dense"),
]
_BERT_HEADS = [
    ("mlm_head.dense", "cls.predictions.transform.dense"),
    ("mlm_head.norm", "cls.predictions.transform.LayerNorm"),
    ("mlm_head.decoder", "cls.predictions.decoder"),
    ("mlm_head.decoder.bias", "cls.predictions.bias"),
    ("nsp_head", "cls.seq_relationship"),
    ("classifier", "classifier"),
    ("qa_outputs", "qa_outputs"),
]

_GPT2_LAYER = [
    ("decoder.layers.{i}.self_attention_norm", "h.{i}.ln_1"),
    ("decoder.layers.{i}.self_attention.o_proj", "h.{i}.attn.c_proj"),
    ("decoder.layers.{i}.mlp_norm", "h.{i}.ln_2"),
    ("decoder.layers.{i}.mlp.up_proj", "h.{i}.mlp.c_fc"),
    ("decoder.layers.{i}.mlp.down_proj", "h.{i}.mlp.c_proj"),
]
_GPT2_BACKBONE = [
    ("embeddings.word_embeddings", "wte"),
    ("embeddings.position_embeddings", "wpe"),
    ("decoder.final_norm", "ln_f"),
]
_GPT2_HEADS = [("lm_head", "lm_head"), ("score", "score"), ("qa_outputs", "qa_outputs")]


def _t5_stack(stack: str, cross: bool) -> list[tuple[str, str]]:
    ff = 2 if cross else 1
    rules = [
        (f"{stack}.layers.{{i}}.self_attention.{p}_proj", f"{stack}.block.{{i}}.layer.0.SelfAttention.{p}")
        for p in "qkvo"
    ]
    rules += [
        (f"{stack}.layers.{{i}}.self_attention_norm", f"{stack}.block.{{i}}.layer.0.layer_norm"),
        (f"{stack}.layers.{{i}}.mlp_norm", f"{stack}.block.{{i}}.layer.{ff}.layer_norm"),
        (f"{stack}.layers.{{i}}.mlp.up_proj", f"{stack}.block.{{i}}.layer.{ff}.DenseReluDense.wi"),
        (f"{stack}.layers.{{i}}.mlp.gate_proj", f"{stack}.block.{{i}}.layer.{ff}.DenseReluDense.wi_0"),
        (f"{stack}.layers.{{i}}.mlp.up_proj", f"{stack}.block.{{i}}.layer.{ff}.DenseReluDense.wi_1"),
        (f"{stack}.layers.{{i}}.mlp.down_proj", f"{stack}.block.{{i}}.layer.{ff}.DenseReluDense.wo"),
    ]
    if cross:
        rules += [
            (f"{stack}.layers.{{i}}.cross_attention.{p}_proj", f"{stack}.block.{{i}}.layer.1.EncDecAttention.{p}")
            for p in "qkvo"
        ]
        rules.append((f"{stack}.layers.{{i}}.cross_attention_norm", f"{stack}.block.{{i}}.layer.1.layer_norm"))
    return rules


_T5_LAYER = _t5_stack("encoder", cross=False) + _t5_stack("decoder", cross=True)
_T5_BACKBONE = [
    ("shared", "shared"),
    (
        "encoder.relative_position_bias.embedding",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias",
    ),
    (
        "decoder.relative_position_bias.embedding",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias",
    ),
    ("encoder.final_norm", "encoder.final_layer_norm"),
    ("decoder.final_norm", "decoder.final_layer_norm"),
]
_T5_HEADS = [("lm_head", "lm_head")]

# family -> (reference backbone prefix, hfpipe backbone prefix, rules for layers, backbone, heads)
ADAPTERS = {
    "bert": ("bert.", "model.", _BERT_LAYER, _BERT_BACKBONE, _BERT_HEADS, bert_config),
    "gpt2": ("transformer.", "model.", _GPT2_LAYER, _GPT2_BACKBONE, _GPT2_HEADS, gpt2_config),
    "t5": ("", "model.", _T5_LAYER, _T5_BACKBONE, _T5_HEADS, t5_config),
}


def _rename(name: str, rules, layer_rules) -> str | None:
    """Reference parameter name (without backbone prefix) -> hfpipe name, or None if unknown."""
    for ours, theirs in rules:
        if name == theirs or name.startswith(theirs + "."):
            return ours + name[len(theirs) :]
    match = re.search(r"\.(\d+)\.", name)
    if match:
        i = match.group(1)
        for ours, theirs in layer_rules:
            theirs = theirs.format(i=i)
            if name == theirs or name.startswith(theirs + "."):
                return ours.format(i=i) + name[len(theirs) :]
    return None


def convert_state_dict(
    model_type: str, state_dict: dict[str, torch.Tensor], base_model: bool = False
) -> dict[str, torch.Tensor]:
    """A transformers BERT / GPT-2 / T5 state dict -> hfpipe names (for any of their heads).

    ``base_model``: the reference is a bare backbone (BertModel, GPT2Model, T5Model), whose
    names carry no backbone prefix, and so will ours.
    Raises ValueError naming the first parameter it does not know, rather than dropping it.
    """
    ref_prefix, our_prefix, layer_rules, backbone_rules, head_rules, _ = ADAPTERS[model_type]
    if base_model:
        our_prefix = ""
    converted = {}
    for name, tensor in state_dict.items():
        if re.search(r"\.attn\.(masked_)?bias$", name) or name.endswith(
            ("position_ids", "predictions.decoder.bias", "embed_tokens.weight")
        ):
            # GPT-2's causal-mask buffers, BERT's position index, and aliases (BERT's of
            # cls.predictions.bias, T5's of shared.weight): not weights of their own
            continue
        if model_type == "gpt2" and ".attn.c_attn." in name:
            # GPT-2 fuses q, k, v in one Conv1D (in_features, 3 * out_features).
            i = re.search(r"h\.(\d+)\.", name).group(1)
            parts = tensor.chunk(3, dim=-1)
            kind = name.rsplit(".", 1)[1]
            for proj, part in zip("qkv", parts):
                key = f"{our_prefix}decoder.layers.{i}.self_attention.{proj}_proj.{kind}"
                converted[key] = part.t().contiguous() if kind == "weight" else part.contiguous()
            continue
        bare = name[len(ref_prefix) :] if ref_prefix and name.startswith(ref_prefix) else name
        head = _rename(name, head_rules, [])
        target = head if head is not None else _rename(bare, backbone_rules, layer_rules)
        if target is None:
            raise ValueError(f"no hfpipe parameter for {model_type} weight {name!r}")
        if head is None:
            target = our_prefix + target
        if model_type == "gpt2" and tensor.dim() == 2 and re.search(r"\.(c_fc|c_proj)\.weight$", name):
            tensor = tensor.t()  # Conv1D stores (in, out); nn.Linear wants (out, in)
        converted[target] = tensor.contiguous()
    return converted


def hfpipe_config_from_reference(reference_config):
    """A transformers BertConfig / GPT2Config / T5Config -> the equivalent hfpipe config."""
    model_type = reference_config.model_type
    if model_type not in ADAPTERS:
        raise ValueError(f"cannot convert model_type {model_type!r}; supported: {sorted(ADAPTERS)}")
    return ADAPTERS[model_type][-1](reference_config)


# Reference architecture suffix -> the Auto class that loads both it and its hfpipe twin.
_HEADS = [
    ("ForPreTraining", "AutoModelForPreTraining"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("Model", "AutoModel"),
]


def auto_class_for(architecture: str) -> str:
    for suffix, auto_name in _HEADS:
        if architecture.endswith(suffix):
            return auto_name
    raise ValueError(f"no hfpipe head for architecture {architecture!r}")


def convert_model(reference):
    """A loaded transformers BERT / GPT-2 / T5 model (any head listed in _HEADS) -> the
    equivalent hfpipe model with the same weights."""
    import transformers

    config = hfpipe_config_from_reference(reference.config)
    auto_name = auto_class_for(type(reference).__name__)
    model = getattr(transformers, auto_name).from_config(config)
    state = convert_state_dict(
        reference.config.model_type, reference.state_dict(), base_model=auto_name == "AutoModel"
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied output embeddings are filled by tying, not loading; anything else missing is a bug.
    tied = set(model.get_expanded_tied_weights_keys()) if hasattr(model, "get_expanded_tied_weights_keys") else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"conversion left missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    return model.to(next(reference.parameters()).dtype)


def convert_checkpoint(source: str, destination: str) -> str:
    """``hfpipe convert``: a saved transformers BERT / GPT-2 / T5 checkpoint folder -> an
    hfpipe checkpoint folder (weights, config with auto_map, modeling code, tokenizer).
    Returns the architecture written."""
    import os

    import transformers

    from ..errors import InputError

    if not os.path.isfile(os.path.join(source, "config.json")):
        raise InputError(f"{source}: no config.json here; expected a transformers checkpoint folder")
    config = transformers.AutoConfig.from_pretrained(source)
    if config.model_type not in ADAPTERS:
        raise InputError(
            f"{source}/config.json: model_type {config.model_type!r} cannot be converted; "
            f"expected one of {sorted(ADAPTERS)}"
        )
    architecture = (config.architectures or [f"{type(config).__name__[:-6]}Model"])[0]
    reference = getattr(transformers, auto_class_for(architecture)).from_pretrained(source)
    model = convert_model(reference)
    model.save_pretrained(destination)
    try:
        transformers.AutoTokenizer.from_pretrained(source).save_pretrained(destination)
    except (OSError, ValueError):
        pass  # a checkpoint without tokenizer files converts all the same
    return type(model).__name__
