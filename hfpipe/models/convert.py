"""State-dict adapters: transformers' BERT, GPT-2 and T5 checkpoints -> hfpipe, and back.

Each adapter is the config mapping both ways plus a list of (hfpipe name, reference name)
rules with ``{i}`` standing for the layer index, read left to right on import and right to
left on export; GPT-2's Conv1D weights are transposed and its fused q/k/v split or joined.
Parity tests (tests/models/test_parity.py) load both models from the same weights and compare
logits; tests/models/test_export.py checks export and the round trip.

    hfpipe convert SRC DST                    # transformers BERT / GPT-2 / T5 -> hfpipe
    hfpipe convert --to transformers SRC DST  # hfpipe -> BERT / GPT-2 / T5 (no remote code)

An encoder exports to ELECTRA instead where BERT cannot hold it (``reference_type``): an ELECTRA
discriminator (ElectraForPreTraining) or generator (ElectraForMaskedLM), and any encoder with a
separate ``embedding_size``. ELECTRA checkpoints are not imported.
"""

from __future__ import annotations

import os
import re
import shutil

import torch

from ..errors import InputError
from ..heads import head_for
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


class NoCounterpartError(ValueError):
    """An hfpipe config field whose value no classic transformers model can express."""

    def __init__(self, field: str, value, reference: str, needed):
        self.field = field
        super().__init__(
            f"{field}={value!r} has no counterpart in transformers' {reference} (which needs {field}={needed!r})"
        )


def _require(config, reference: str, **needed) -> None:
    """Raise NoCounterpartError on the first field of ``config`` that differs from ``needed``."""
    for field, value in needed.items():
        if getattr(config, field) != value:
            raise NoCounterpartError(field, getattr(config, field), reference, value)


def _carry_back(config, **fields) -> dict:
    for name in _COMMON:
        fields[name] = getattr(config, name, None)
    return fields


def _embedding_width(config) -> int:
    return getattr(config, "embedding_size", None) or config.hidden_size


def _require_bert_layout(config, reference: str) -> None:
    """BERT's block and embeddings, which ELECTRA's discriminator and generator share."""
    _require(
        config, reference, norm_type="layernorm", norm_position="post", position_embedding_type="absolute",
        gated_mlp=False, use_bias=True, scale_attention=True, embedding_norm=True, final_norm=False,
        head_dim=config.hidden_size // config.num_attention_heads,
    )


def electra_reference_config(config: HfpipeEncoderConfig):
    """An hfpipe encoder in BERT's layout -> transformers' ElectraConfig (embedding_size may be narrower
    than the stack: ELECTRA's embeddings_project). Raises NoCounterpartError for a non-BERT layout."""
    from transformers import ElectraConfig

    _require_bert_layout(config, "ELECTRA")
    if config.hidden_act != "gelu":
        # ElectraGeneratorPredictions hard-codes gelu; hfpipe's MLM transform uses hidden_act
        raise NoCounterpartError("hidden_act", config.hidden_act, "ELECTRA", "gelu")
    return ElectraConfig(**_carry_back(config, embedding_size=_embedding_width(config), **_bert_fields(config)))


def bert_reference_config(config: HfpipeEncoderConfig):
    """The inverse of ``bert_config``; raises NoCounterpartError for a non-BERT layout."""
    from transformers import BertConfig

    _require_bert_layout(config, "BERT")
    if _embedding_width(config) != config.hidden_size:
        # BERT has no embedding projection; ELECTRA has (see reference_type)
        raise NoCounterpartError("embedding_size", config.embedding_size, "BERT", None)
    return BertConfig(**_carry_back(config, **_bert_fields(config)))


def _bert_fields(config: HfpipeEncoderConfig) -> dict:
    """The config fields BERT and ELECTRA name alike."""
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        layer_norm_eps=config.layer_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        # no token types (RoBERTa-style) = two all-zero rows, see to_reference_state_dict
        type_vocab_size=config.type_vocab_size or 2,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        classifier_dropout=config.classifier_dropout,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
    )


def gpt2_reference_config(config: HfpipeDecoderConfig):
    """The inverse of ``gpt2_config``; raises NoCounterpartError for a non-GPT-2 layout."""
    from transformers import GPT2Config

    _require(
        config, "GPT-2", norm_type="layernorm", norm_position="pre", position_embedding_type="absolute",
        gated_mlp=False, use_bias=True, scale_attention=True, embedding_norm=False, final_norm=True,
        type_vocab_size=0, head_dim=config.hidden_size // config.num_attention_heads,
    )
    return GPT2Config(
        **_carry_back(
            config,
            vocab_size=config.vocab_size,
            n_embd=config.hidden_size,
            n_layer=config.num_hidden_layers,
            n_head=config.num_attention_heads,
            # GPT-2 writes its default width 4 * n_embd as None
            n_inner=None if config.intermediate_size == 4 * config.hidden_size else config.intermediate_size,
            activation_function=config.hidden_act,
            layer_norm_epsilon=config.layer_norm_eps,
            n_positions=config.max_position_embeddings,
            resid_pdrop=config.hidden_dropout_prob,
            embd_pdrop=config.hidden_dropout_prob,
            attn_pdrop=config.attention_probs_dropout_prob,
            initializer_range=config.initializer_range,
            tie_word_embeddings=config.tie_word_embeddings,
        )
    )


def _t5_feed_forward_proj(config) -> str:
    if not config.gated_mlp:
        return config.hidden_act
    if config.hidden_act == "gelu":
        # T5Config reads "gated-gelu" as the tanh approximation (gelu_new), for old checkpoints' sake
        raise NoCounterpartError("hidden_act", "gelu", "T5 with a gated MLP", "gelu_new")
    return "gated-gelu" if config.hidden_act == "gelu_new" else f"gated-{config.hidden_act}"


def t5_reference_config(config: HfpipeSeq2SeqConfig):
    """The inverse of ``t5_config`` (v1.0: ReLU, tied and rescaled; v1.1: gated-GELU, untied)."""
    from transformers import T5Config

    _require(
        config, "T5", norm_type="rmsnorm", norm_position="pre", position_embedding_type="relative",
        use_bias=False, scale_attention=False, embedding_norm=False, final_norm=True, type_vocab_size=0,
        attention_probs_dropout_prob=config.hidden_dropout_prob,
    )
    reference = T5Config(
        **_carry_back(
            config,
            vocab_size=config.vocab_size,
            d_model=config.hidden_size,
            d_kv=config.head_dim,
            d_ff=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_decoder_layers=config.num_decoder_layers,
            num_heads=config.num_attention_heads,
            feed_forward_proj=_t5_feed_forward_proj(config),
            layer_norm_epsilon=config.layer_norm_eps,
            relative_attention_num_buckets=config.relative_attention_num_buckets,
            relative_attention_max_distance=config.relative_attention_max_distance,
            dropout_rate=config.hidden_dropout_prob,
            decoder_start_token_id=config.decoder_start_token_id,
            # transformers >= 5.1x reads v1.0's rescaling from this argument, then always ties
            tie_word_embeddings=config.scale_decoder_outputs,
        )
    )
    if hasattr(reference, "scale_decoder_outputs"):
        reference.scale_decoder_outputs = config.scale_decoder_outputs
    else:
        _require(config, "T5", tie_word_embeddings=config.scale_decoder_outputs)
        reference.tie_word_embeddings = config.tie_word_embeddings
    return reference


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

# ELECTRA (export only): BERT's layer names, plus the projection of narrower embeddings and its heads --
# the discriminator's replaced-token detection and the generator's MLM (transform to the embedding width).
_ELECTRA_BACKBONE = [rule for rule in _BERT_BACKBONE if not rule[0].startswith("pooler")] + [
    ("embeddings_project", "embeddings_project"),
]
_ELECTRA_HEADS = [
    ("discriminator_head.dense", "discriminator_predictions.dense"),
    ("discriminator_head.dense_prediction", "discriminator_predictions.dense_prediction"),
    ("mlm_head.dense", "generator_predictions.dense"),
    ("mlm_head.norm", "generator_predictions.LayerNorm"),
    ("mlm_head.decoder", "generator_lm_head"),
    ("classifier", "classifier"),  # token classification: dropout + linear, as hfpipe's
    ("qa_outputs", "qa_outputs"),
]
_ELECTRA = ("electra.", "model.", _BERT_LAYER, _ELECTRA_BACKBONE, _ELECTRA_HEADS, None)
# hfpipe encoder class -> its ELECTRA twin. Not sequence classification (ELECTRA's head is dense + GELU +
# out_proj on [CLS], hfpipe's BERT's tanh pooler + classifier) nor MLM + NSP (ELECTRA has no NSP).
_ELECTRA_CLASSES = {
    "HfpipeEncoderForReplacedTokenDetection": "ElectraForPreTraining",
    "HfpipeEncoderForMaskedLM": "ElectraForMaskedLM",
    "HfpipeEncoderModel": "ElectraModel",
    "HfpipeEncoderForTokenClassification": "ElectraForTokenClassification",
    "HfpipeEncoderForQuestionAnswering": "ElectraForQuestionAnswering",
}


def reference_type(config, architecture: str) -> str:
    """The transformers model_type an hfpipe model exports to: its family's (EXPORTS), except that an
    encoder goes to ELECTRA where BERT cannot hold it -- ELECTRA's discriminator head, or embeddings
    narrower or wider than the stack (embedding_size, as ELECTRA-Small and every ELECTRA generator)."""
    if config.model_type == "hfpipe_encoder" and (
        architecture == "HfpipeEncoderForReplacedTokenDetection" or _embedding_width(config) != config.hidden_size
    ):
        if architecture not in _ELECTRA_CLASSES:
            raise NoCounterpartError("architectures", architecture, "ELECTRA", sorted(_ELECTRA_CLASSES))
        return "electra"
    return EXPORTS[config.model_type][0]


# family -> (reference backbone prefix, hfpipe backbone prefix, rules for layers, backbone, heads)
ADAPTERS = {
    "bert": ("bert.", "model.", _BERT_LAYER, _BERT_BACKBONE, _BERT_HEADS, bert_config),
    "gpt2": ("transformer.", "model.", _GPT2_LAYER, _GPT2_BACKBONE, _GPT2_HEADS, gpt2_config),
    "t5": ("", "model.", _T5_LAYER, _T5_BACKBONE, _T5_HEADS, t5_config),
}

# hfpipe model_type -> (reference model_type, class-name stem, config mapping back)
EXPORTS = {
    "hfpipe_encoder": ("bert", "Bert", bert_reference_config),
    "hfpipe_decoder": ("gpt2", "GPT2", gpt2_reference_config),
    "hfpipe_seq2seq": ("t5", "T5", t5_reference_config),
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


def to_reference_state_dict(
    config, state_dict: dict[str, torch.Tensor], base_model: bool = False, model_type: str | None = None
) -> dict[str, torch.Tensor]:
    """An hfpipe state dict -> transformers BERT / GPT-2 / T5 (or ELECTRA, ``model_type="electra"``)
    names: the rules of ``convert_state_dict`` read right to left. Raises ValueError naming the first
    parameter with no reference name."""
    model_type = model_type or EXPORTS[config.model_type][0]
    ref_prefix, our_prefix, layer_rules, backbone_rules, head_rules, _ = (
        _ELECTRA if model_type == "electra" else ADAPTERS[model_type]
    )
    if base_model:
        ref_prefix = ""
    if model_type == "t5":
        # T5 names the up projection wi without a gate and wi_1 with one
        drop = "DenseReluDense.wi" if config.gated_mlp else ("DenseReluDense.wi_0", "DenseReluDense.wi_1")
        layer_rules = [(ours, theirs) for ours, theirs in layer_rules if not theirs.endswith(drop)]

    def flipped(rules):
        # longest hfpipe name first, so mlm_head.decoder.bias wins over mlm_head.decoder
        return sorted(((theirs, ours) for ours, theirs in rules), key=lambda rule: -len(rule[1]))

    head_rules, backbone_rules, layer_rules = flipped(head_rules), flipped(backbone_rules), flipped(layer_rules)
    converted, fused = {}, {}
    for name, tensor in state_dict.items():
        if name.endswith("embed_tokens.weight"):
            continue  # T5 stacks' alias of shared.weight, as on import
        if model_type == "gpt2" and re.search(r"\.self_attention\.[qkv]_proj\.", name):
            i, proj, kind = re.search(r"layers\.(\d+)\.self_attention\.([qkv])_proj\.(\w+)$", name).groups()
            fused.setdefault((int(i), kind), {})[proj] = tensor
            continue
        head = _rename_back(name, head_rules, [])
        bare = name[len(our_prefix) :] if not base_model and name.startswith(our_prefix) else name
        target = head if head is not None else _rename_back(bare, backbone_rules, layer_rules)
        if target is None:
            raise ValueError(f"no {model_type} parameter for hfpipe weight {name!r}")
        if head is None:
            target = ref_prefix + target
        if model_type == "gpt2" and tensor.dim() == 2 and re.search(r"\.(c_fc|c_proj)\.weight$", target):
            tensor = tensor.t()  # nn.Linear stores (out, in); Conv1D wants (in, out)
        converted[target] = tensor.contiguous()
    for (i, kind), parts in fused.items():
        # GPT-2's c_attn: one Conv1D (in_features, 3 * out_features) holding q, k, v side by side
        qkv = [parts[p].t() if kind == "weight" else parts[p] for p in "qkv"]
        converted[f"{ref_prefix}h.{i}.attn.c_attn.{kind}"] = torch.cat(qkv, dim=-1).contiguous()
    if model_type in ("bert", "electra"):
        if config.type_vocab_size == 0:
            word = converted[f"{ref_prefix}embeddings.word_embeddings.weight"]
            converted[f"{ref_prefix}embeddings.token_type_embeddings.weight"] = word.new_zeros(2, word.shape[1])
        if "cls.predictions.bias" in converted:  # BERT keeps the output bias under two names
            converted["cls.predictions.decoder.bias"] = converted["cls.predictions.bias"]
    return converted


def _rename_back(name: str, rules, layer_rules) -> str | None:
    """hfpipe parameter name -> reference name under flipped (reference, hfpipe) rules."""
    match = re.search(r"\.(\d+)\.", name)
    expanded = list(rules)
    if match:
        expanded += [(theirs.format(i=match.group(1)), ours.format(i=match.group(1))) for theirs, ours in layer_rules]
    for theirs, ours in expanded:
        if name == ours or name.startswith(ours + "."):
            return theirs + name[len(ours) :]
    return None


def hfpipe_config_from_reference(reference_config):
    """A transformers BertConfig / GPT2Config / T5Config -> the equivalent hfpipe config."""
    model_type = reference_config.model_type
    if model_type not in ADAPTERS:
        raise ValueError(f"cannot convert model_type {model_type!r}; supported: {sorted(ADAPTERS)}")
    return ADAPTERS[model_type][-1](reference_config)


def auto_class_for(architecture: str) -> str:
    """The Auto class that loads a reference architecture and its hfpipe twin."""
    head = head_for(architecture)
    if head is None:
        raise ValueError(f"no hfpipe head for architecture {architecture!r}")
    return head.auto_class


def _tied_keys(model) -> set[str]:
    """Parameters that tying fills (absent before transformers 5.1x's expanded tied-keys API)."""
    expanded = getattr(model, "get_expanded_tied_weights_keys", None)
    return set(expanded()) if expanded is not None else set()


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
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise ValueError(f"conversion left missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    return model.to(next(reference.parameters()).dtype)


def convert_checkpoint(source: str, destination: str) -> str:
    """``hfpipe convert``: a saved transformers BERT / GPT-2 / T5 checkpoint folder -> an
    hfpipe checkpoint folder (weights, config with auto_map, modeling code, tokenizer, and a
    sentence-transformers checkpoint's module files). Returns the architecture written."""
    import transformers

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
    _save_with_companions(model, source, destination)
    return type(model).__name__


def reference_class_name(architecture: str, model_type: str) -> str:
    """hfpipe class name -> its transformers twin (HfpipeEncoderForMaskedLM -> BertForMaskedLM)."""
    stem = EXPORTS[model_type][1]
    for family in ("Encoder", "Decoder", "Seq2Seq"):
        if architecture.startswith(f"Hfpipe{family}"):
            suffix = architecture[len(f"Hfpipe{family}") :]
            return stem + ("LMHeadModel" if suffix == "ForCausalLM" else suffix)
    raise ValueError(f"{architecture!r} is not an hfpipe model class")


def convert_model_to_reference(model):
    """A loaded hfpipe model -> the transformers BERT / GPT-2 / T5 model (same head, same
    weights). Raises NoCounterpartError naming the config field no classic model expresses."""
    import transformers

    config = model.config
    model_type = reference_type(config, type(model).__name__)
    if model_type == "electra":
        reference_config = electra_reference_config(config)
        reference_class = getattr(transformers, _ELECTRA_CLASSES[type(model).__name__])
    else:
        reference_config = EXPORTS[config.model_type][2](config)
        reference_class = getattr(transformers, reference_class_name(type(model).__name__, config.model_type))
    reference = reference_class(reference_config)
    untied = not config.tie_word_embeddings and reference.get_output_embeddings() is not None
    if untied and reference.get_output_embeddings().weight is reference.get_input_embeddings().weight:
        # T5 in transformers >= 5.1x ties its LM head whatever the config says; it loads an
        # untied one only when both tensors are stored, so give the head its own tensor.
        output = reference.get_output_embeddings()
        output.weight = torch.nn.Parameter(output.weight.detach().clone())
    state = to_reference_state_dict(config, model.state_dict(), base_model=type(model).__name__.endswith("Model"),
                                    model_type=model_type)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(reference) and not k.endswith("embed_tokens.weight")]
    if missing or unexpected:
        raise ValueError(f"export left missing={missing[:5]} unexpected={unexpected[:5]}")
    if not untied:
        reference.tie_weights()
    return reference.to(next(model.parameters()).dtype)


def export_checkpoint(source: str, destination: str) -> str:
    """``hfpipe convert --to transformers``: an hfpipe checkpoint folder -> a transformers
    BERT / GPT-2 / T5 folder that loads with no remote code (weights, config with labels,
    tokenizer, generation config, sentence-transformers module files). Returns the class written."""
    import transformers

    if not os.path.isfile(os.path.join(source, "config.json")):
        raise InputError(f"{source}: no config.json here; expected an hfpipe checkpoint folder")
    config = transformers.AutoConfig.from_pretrained(source)
    if config.model_type not in EXPORTS:
        raise InputError(
            f"{source}/config.json: model_type {config.model_type!r} is not an hfpipe model; "
            f"expected one of {sorted(EXPORTS)}"
        )
    prefix = {"hfpipe_encoder": "Encoder", "hfpipe_decoder": "Decoder", "hfpipe_seq2seq": "Seq2Seq"}[config.model_type]
    architecture = (config.architectures or [f"Hfpipe{prefix}Model"])[0]
    try:  # before loading any weights
        if reference_type(config, architecture) == "electra":
            electra_reference_config(config)
        else:
            EXPORTS[config.model_type][2](config)
    except NoCounterpartError as error:
        raise InputError(f"{source}/config.json: {error}; keep it as an hfpipe checkpoint "
                         "(it loads with trust_remote_code=True)") from None
    if architecture == "HfpipeEncoderForReplacedTokenDetection":  # no Auto class of its own
        from .electra import HfpipeEncoderForReplacedTokenDetection

        model = HfpipeEncoderForReplacedTokenDetection.from_pretrained(source)
    else:
        auto_name = auto_class_for(reference_class_name(architecture, config.model_type))
        model = getattr(transformers, auto_name).from_pretrained(source)
    reference = convert_model_to_reference(model)
    _save_with_companions(reference, source, destination)
    return type(reference).__name__


# sentence-transformers keeps its pipeline (pooling, normalisation, ...) beside the weights
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def _save_with_companions(model, source: str, destination: str) -> None:
    """Save ``model`` and carry over what describes how to use it: tokenizer, generation
    config, and a sentence-transformers checkpoint's module files (their weights-free folders)."""
    import json

    import transformers

    if model.can_generate() and os.path.isfile(os.path.join(source, "generation_config.json")):
        model.generation_config = transformers.GenerationConfig.from_pretrained(source)
    model.save_pretrained(destination)
    try:
        transformers.AutoTokenizer.from_pretrained(source).save_pretrained(destination)
    except (OSError, ValueError):
        pass  # a checkpoint without tokenizer files converts all the same
    if not os.path.isfile(os.path.join(source, "modules.json")):
        return
    for name in _SENTENCE_TRANSFORMERS_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(destination, name))
    with open(os.path.join(source, "modules.json")) as f:
        modules = json.load(f)
    for module in modules:
        folder = module.get("path", "")
        if folder and os.path.isdir(os.path.join(source, folder)):
            shutil.copytree(os.path.join(source, folder), os.path.join(destination, folder), dirs_exist_ok=True)
