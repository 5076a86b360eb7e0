"""No host-device sync in a training step's forward and backward (issue 15).

On an accelerator, an op whose result the host must see (``.item()``, ``bool(tensor)``, a
``nonzero``-sized output such as boolean-mask indexing) stalls the host until the device has
caught up, so it stops queueing work ahead. On CPU nothing stalls, so the ops are caught in
two ways here: a TorchDispatchMode that records every such op, and a run on the meta device,
where any op that needs the data raises. tests/test_gpu.py checks the same on CUDA with
``torch.cuda.set_sync_debug_mode("error")``.

The one documented exception: ``sparse_prediction`` in eager training gathers the predicted
positions with one ``nonzero`` (encoder.masked_lm says why it is worth it).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import hfpipe

VOCAB = 97
aten = torch.ops.aten
# Ops whose output needs the host to read device data: scalars, data-dependent sizes.
SYNCING = {
    aten._local_scalar_dense.default,
    aten.item.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.allclose.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
    aten.repeat_interleave.Tensor,
}


class SyncRecorder(TorchDispatchMode):
    """Records the syncing ops run under it (and boolean-mask indexing, whose kernel calls
    nonzero below the dispatcher level this mode sees)."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING:
            self.syncs.append(str(func))
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            indices = args[1]
            if any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices):
                self.syncs.append(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))


# case -> (family, Auto class, config overrides, batch kind)
CASES = {
    "encoder/mlm": ("encoder", AutoModelForMaskedLM, {}, "mlm"),
    "encoder/mlm_nsp": ("encoder", AutoModelForPreTraining, {}, "mlm_nsp"),
    "encoder/classification": ("encoder", AutoModelForSequenceClassification, {"num_labels": 3}, "classification"),
    "encoder/regression": ("encoder", AutoModelForSequenceClassification, {"num_labels": 1}, "regression"),
    "encoder/token_classification": ("encoder", AutoModelForTokenClassification, {"num_labels": 3}, "tokens"),
    "encoder/qa": ("encoder", AutoModelForQuestionAnswering, {}, "qa"),
    "decoder/clm": ("decoder", AutoModelForCausalLM, {}, "clm"),
    "decoder-modern/clm": (
        "decoder", AutoModelForCausalLM,
        dict(position_embedding_type="rope", norm_type="rmsnorm", gated_mlp=True, use_bias=False, hidden_act="silu"),
        "clm",
    ),
    "decoder/classification": ("decoder", AutoModelForSequenceClassification, {"num_labels": 3}, "classification"),
    "decoder/qa": ("decoder", AutoModelForQuestionAnswering, {}, "qa"),
    "seq2seq/span_corruption": ("seq2seq", AutoModelForSeq2SeqLM, {}, "seq2seq"),
}


def build(case: str, **overrides):
    family, auto_class, case_overrides, _ = CASES[case]
    torch.manual_seed(0)
    config = hfpipe.config_for(family, "tiny", vocab_size=VOCAB, pad_token_id=0, **{**case_overrides, **overrides})
    return auto_class.from_config(config).train()


def batch_for(case: str) -> dict[str, torch.Tensor]:
    """3 rows of 10, right-padded (every row's mask is given, as collators give it), with the
    labels of the case and, as Trainer passes it, ``num_items_in_batch`` as a tensor."""
    kind = CASES[case][3]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (3, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 7:], mask[2, 4:] = 0, 0
    batch = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
    if kind in ("mlm", "mlm_nsp", "clm", "tokens"):
        labels = batch["input_ids"].masked_fill(mask == 0, -100)
        if kind != "clm":
            labels[:, ::2] = -100
        if kind == "tokens":
            labels = labels % 3
            labels[mask == 0] = -100
        batch["labels"] = labels
        batch["num_items_in_batch"] = (labels != -100).sum()
    if kind == "mlm_nsp":
        batch["next_sentence_label"] = torch.tensor([0, 1, 0])
    elif kind == "classification":
        batch["labels"] = torch.tensor([0, 2, 1])
    elif kind == "regression":
        batch["labels"] = torch.tensor([0.5, 2.0, -1.0])
    elif kind == "qa":
        batch["start_positions"], batch["end_positions"] = torch.tensor([1, 2, 0]), torch.tensor([3, 2, 1])
    elif kind == "seq2seq":
        labels = torch.randint(2, VOCAB, (3, 5), generator=generator)
        labels[2, 3:] = -100
        batch["labels"] = labels
    return batch


def training_step_syncs(model, batch) -> list[str]:
    with SyncRecorder() as recorder:
        model(**batch).loss.backward()
    return recorder.syncs


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_makes_no_syncing_op(case):
    assert training_step_syncs(build(case), batch_for(case)) == []


def test_sparse_prediction_makes_exactly_its_one_documented_sync():
    model = build("encoder/mlm", sparse_prediction=True)
    assert training_step_syncs(model, batch_for("encoder/mlm")) == ["aten.nonzero.default"]


def test_the_recorder_sees_a_python_if_on_a_tensor():
    """Control: in evaluation the stack does read the mask back (no padding: SDPA's fast
    path), and the recorder must catch that."""
    model = build("decoder/clm").eval()
    batch = batch_for("decoder/clm")
    batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    with SyncRecorder() as recorder, torch.no_grad():
        model(**batch)
    assert "aten._local_scalar_dense.default" in recorder.syncs


@pytest.mark.parametrize("case", ["encoder/mlm_nsp", "decoder/clm", "seq2seq/span_corruption", "decoder/classification"])
def test_training_step_runs_on_the_meta_device(case):
    """Meta tensors have no data: an op that reads any (.item(), .tolist(), .cpu(), nonzero)
    raises, which the dispatch-level recorder could miss for host-side reads on CPU."""
    model = build(case).to("meta")
    batch = {name: value.to("meta") for name, value in batch_for(case).items()}
    loss = model(**batch).loss
    loss.backward()
    assert loss.device.type == "meta" and model.get_input_embeddings().weight.grad is not None
