"""A finetuning run scores its validation set once at its end (issue 27): the predictions file and
eval_results.json come from the evaluation Trainer runs at the last step, not from a second pass."""

import json
import math
from pathlib import Path

import pytest
from torch.nn.modules.module import register_module_forward_hook

from hfpipe.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FAST = ["--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
        "--set", "train.mixed_precision=no"]


class EvaluationPasses:
    """The task model's forward calls (``...For...`` classes), as runs of consecutive evaluation batches
    (eval mode, with labels) between training forwards: one run per evaluation pass, its length the
    batches of the pass. A second pass right after Trainer's last one would double the last run."""

    def __init__(self):
        self.runs: list[int] = []
        self.in_evaluation = False

    def __call__(self, module, args, kwargs, output):
        if "For" not in type(module).__name__:
            return
        if module.training:
            self.in_evaluation = False
        elif kwargs.get("labels") is not None:  # (SFT's greedy answers after training pass no labels)
            if not self.in_evaluation:
                self.runs.append(0)
                self.in_evaluation = True
            self.runs[-1] += 1

    def __enter__(self):
        self.handle = register_module_forward_hook(self, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("recipe", ["finetune/glue-mrpc.yaml", "finetune/conll2003-ner.yaml", "finetune/sft.yaml"])
def test_the_validation_set_is_scored_once_per_evaluation_and_not_again_at_the_end(tmp_path, recipe):
    out = tmp_path / "run"
    with EvaluationPasses() as passes:
        assert main(["finetune", str(RECIPES / recipe), "--smoke", "--max-steps", "20", "--output-dir", str(out),
                     "--set", "train.eval_steps=10", "--set", "train.save_steps=10", *FAST]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_loss" in entry]
    assert [entry["step"] for entry in evaluations] == [10, 20]  # Trainer's periodic and final evaluations
    assert len(passes.runs) == 2 and passes.runs[0] == passes.runs[1] > 0, passes.runs  # nothing after them
    results = json.loads((out / "eval_results.json").read_text())
    assert results["eval_loss"] == pytest.approx(evaluations[-1]["eval_loss"])  # the results are the last pass's
    if "glue" in recipe:  # and so are the predictions: one line per validation row, all from that pass
        rows = (out / "eval_predictions.jsonl").read_text().splitlines()
        assert passes.runs[-1] == math.ceil(len(rows) / 8)  # --smoke's evaluation batch of 8
