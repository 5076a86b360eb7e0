"""Fresh models are initialised as their families are (HfpipePreTrainedModel._init_weights).

Per parameter, a fresh hfpipe model and a fresh transformers model of the same configuration
(mapped through hfpipe's conversion) have the same standard deviation within 10% (more for
tensors too small to estimate one that closely), the same constant where the family starts
from one (norms, biases), and the same initial loss on random tokens.
"""

import math

import pytest
import torch
import transformers
from transformers import (
    BertConfig,
    BertForPreTraining,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
)

import hfpipe
from hfpipe.models.blocks import init_scheme
from hfpipe.models.convert import auto_class_for, convert_state_dict, hfpipe_config_from_reference

VOCAB = 8000  # large enough that T5 v1.0's unit-variance logits add little to ln(vocab)
SIZE = dict(layers=4, hidden=128, heads=4, inner=512)


def bert():
    config = BertConfig(vocab_size=VOCAB, hidden_size=SIZE["hidden"], num_hidden_layers=SIZE["layers"],
                        num_attention_heads=SIZE["heads"], intermediate_size=SIZE["inner"])
    return BertForPreTraining(config)


def gpt2():
    config = GPT2Config(vocab_size=VOCAB, n_embd=SIZE["hidden"], n_layer=SIZE["layers"], n_head=SIZE["heads"],
                        n_positions=128)
    return GPT2LMHeadModel(config)


def t5(gated: bool):
    config = T5Config(vocab_size=VOCAB, d_model=SIZE["hidden"], d_kv=SIZE["hidden"] // SIZE["heads"],
                      d_ff=SIZE["inner"], num_layers=SIZE["layers"], num_heads=SIZE["heads"],
                      feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=not gated,
                      decoder_start_token_id=0)
    return T5ForConditionalGeneration(config)


REFERENCES = {"bert": bert, "gpt2": gpt2, "t5-v1.0": lambda: t5(False), "t5-v1.1": lambda: t5(True)}


def fresh_pair(family):
    torch.manual_seed(0)
    reference = REFERENCES[family]()
    config = hfpipe_config_from_reference(reference.config)
    ours = getattr(transformers, auto_class_for(type(reference).__name__)).from_config(config)
    return reference.eval(), ours.eval()


def _moments(tensor):
    tensor = tensor.detach().double().flatten()
    return tensor.mean().item(), tensor.std().item() if tensor.numel() > 1 else 0.0


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_parameter_statistics_match_the_family(family):
    reference, ours = fresh_pair(family)
    theirs = convert_state_dict(reference.config.model_type, reference.state_dict())
    state = ours.state_dict()
    assert theirs.keys() <= state.keys()
    for name, tensor in theirs.items():
        (mean_theirs, std_theirs), (mean_ours, std_ours) = _moments(tensor), _moments(state[name])
        if std_theirs == 0:  # a constant: norms 1 (T5: initializer_factor), biases 0
            assert std_ours == 0 and mean_ours == pytest.approx(mean_theirs), name
            continue
        # the std of n normal samples is known to about 1/sqrt(2n): small tensors get more room
        tolerance = max(0.10, 4 / math.sqrt(tensor.numel()))
        assert std_ours == pytest.approx(std_theirs, rel=tolerance), name
        assert abs(mean_ours - mean_theirs) <= tolerance * std_theirs, name


def _initial_loss(model, family):
    """Cross-entropy of the fresh model's token predictions on random tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (8, 64), generator=generator)
    with torch.no_grad():
        if family.startswith("t5"):
            targets = torch.randint(5, VOCAB, (8, 16), generator=generator)
            logits = model(input_ids=ids, decoder_input_ids=model.prepare_decoder_input_ids_from_labels(targets)).logits
        elif family == "bert":
            targets, logits = ids, model(input_ids=ids).prediction_logits  # MLM at every position
        else:
            targets, logits = ids[:, 1:], model(input_ids=ids).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB).float(), targets.reshape(-1)).item()


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_initial_loss_is_the_family_s(family):
    reference, ours = fresh_pair(family)
    ours_loss, their_loss = _initial_loss(ours, family), _initial_loss(reference, family)
    assert ours_loss == pytest.approx(their_loss, rel=0.10)
    if family != "t5-v1.1":
        assert ours_loss == pytest.approx(math.log(VOCAB), rel=0.10)
    else:
        # T5 v1.1 feeds unit-RMS decoder states unscaled to a N(0, 1) output embedding: logits of
        # std sqrt(d_model), so its fresh loss is far above ln(vocab), in transformers as here.
        assert ours_loss > 2 * math.log(VOCAB)


def test_schemes_follow_the_layout():
    assert init_scheme(hfpipe.config_for("encoder", "tiny")) == "bert"
    assert init_scheme(hfpipe.config_for("decoder", "tiny")) == "gpt2"
    assert init_scheme(hfpipe.config_for("seq2seq", "tiny")) == "t5"
    modern = hfpipe.config_for("decoder", "tiny", position_embedding_type="rope", norm_type="rmsnorm", gated_mlp=True,
                               use_bias=False, hidden_act="silu")
    assert init_scheme(modern) == "gpt2"


def test_modern_layout_is_llama_with_gpt2_residual_scaling():
    config = hfpipe.config_for("decoder", "tiny", hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                               intermediate_size=512, vocab_size=VOCAB, position_embedding_type="rope",
                               norm_type="rmsnorm", gated_mlp=True, use_bias=False, hidden_act="silu")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    residual = config.initializer_range / math.sqrt(2 * config.num_hidden_layers)
    for name, parameter in model.named_parameters():
        mean, std = _moments(parameter)
        if name.endswith("norm.weight"):
            assert std == 0 and mean == 1, name
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            assert std == pytest.approx(residual, rel=0.1), name
        else:
            assert std == pytest.approx(config.initializer_range, rel=0.1), name


def test_t5_untied_lm_head_starts_at_initializer_factor():
    config = hfpipe.config_for("seq2seq", "tiny", vocab_size=VOCAB, gated_mlp=True, hidden_act="gelu_new",
                               tie_word_embeddings=False, initializer_factor=0.5)
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    assert _moments(model.lm_head.weight)[1] == pytest.approx(0.5, rel=0.05)
    assert _moments(model.model.shared.weight)[1] == pytest.approx(0.5, rel=0.05)
    assert _moments(model.model.encoder.final_norm.weight) == (0.5, 0.0)
