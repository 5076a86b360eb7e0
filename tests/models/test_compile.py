"""torch.compile of a training step (CPU, inductor): whole graphs, no recompilation per
sequence length, and the eager loss and gradients.

transformers' Trainer compiles with ``dynamic=None``: the first length gets a static graph,
the second a graph with symbolic lengths that then serves every later length. So three
lengths must cost exactly two compilations, whatever the lengths (hfpipe's collators are not
asked to pad to a multiple when compiling; see the report of issue 15).
"""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForSeq2SeqLM

import hfpipe

VOCAB = 97
LENGTHS = (37, 45, 61)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# case -> (family, Auto class, config overrides)
CASES = {
    "encoder/mlm_sparse_prediction": ("encoder", AutoModelForMaskedLM, {"sparse_prediction": True}),
    "encoder/mlm_nsp": ("encoder", AutoModelForPreTraining, {}),
    "decoder/clm": ("decoder", AutoModelForCausalLM, {}),
    "seq2seq/span_corruption": ("seq2seq", AutoModelForSeq2SeqLM, {}),
}


def build(case: str, **extra):
    family, auto_class, overrides = CASES[case]
    torch.manual_seed(0)
    config = hfpipe.config_for(family, "tiny", vocab_size=VOCAB, pad_token_id=0, **NO_DROPOUT, **overrides, **extra)
    return auto_class.from_config(config).train()


def batch_for(case: str, length: int) -> dict[str, torch.Tensor]:
    """2 rows of ``length``, the second right-padded by 5; the case's labels."""
    family = CASES[case][0]
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(5, VOCAB, (2, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, -5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    if family == "encoder":
        labels = torch.where(torch.rand(ids.shape, generator=generator) < 0.3, labels, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if case == "encoder/mlm_nsp":
        batch["next_sentence_label"] = torch.tensor([0, 1])
    if family == "seq2seq":
        batch["labels"] = torch.randint(2, VOCAB, (2, length // 4), generator=generator)  # span targets
        batch["labels"][1, -2:] = -100
    return batch


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given, then hands them to ``inner``
    (inductor) or runs them as they are."""

    def __init__(self, inner=None):
        self.inner, self.graphs = inner, 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return self.inner(graph_module, example_inputs) if self.inner else graph_module.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_forward_is_one_graph(case):
    """No graph break anywhere in the training forward: embeddings, the stack (padding mask
    kept, never read back), the LM head's fused loss (an autograd.Function dynamo traces
    forward and backward), NSP, and sparse prediction, which steps aside under compile."""
    explanation = torch._dynamo.explain(build(case))(**batch_for(case, LENGTHS[0]))
    assert explanation.graph_break_count == 0, [str(reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_sequence_lengths_do_not_recompile_per_batch(case):
    backend = CountingBackend()
    compiled = torch.compile(build(case), backend=backend)
    counts = []
    for length in LENGTHS:
        compiled(**batch_for(case, length)).loss.backward()
        counts.append(backend.graphs)
    # static graph for 37; 45 makes the lengths symbolic; 61 reuses that graph
    assert counts == [1, 2, 2]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_training_gives_the_eager_loss_and_gradients(case):
    """Inductor on CPU, for every length (static then dynamic graph) against eager; float32 with
    inductor's reordered reductions: rtol 1e-4 on gradients. One block per stack: a second block
    is the same code again, and inductor's compile time grows with the graph."""
    from torch._inductor.compile_fx import compile_fx

    one_block = {"num_decoder_layers": 1} if CASES[case][0] == "seq2seq" else {}
    eager = build(case, num_hidden_layers=1, **one_block)
    model = copy.deepcopy(eager)
    backend = CountingBackend(compile_fx)
    compiled = torch.compile(model, backend=backend)
    for length in LENGTHS:
        batch = batch_for(case, length)
        expected, got = eager(**batch).loss, compiled(**batch).loss
        expected.backward(), got.backward()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        for (name, a), b in zip(eager.named_parameters(), model.parameters()):
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:
                torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{length} {name}: {m}")
        eager.zero_grad(), model.zero_grad()
    assert backend.graphs == 2
