"""A wall-clock budget (Cramming): training stops when the time is spent, and the learning rate
follows the spent fraction of the budget; the spent time survives a resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainingArguments

import hfpipe
from hfpipe.recipes import load_recipe
from hfpipe.training.budget import STATE_KEY, BudgetSchedule, TimeBudget, lr_factor, parse_duration
from hfpipe.training.trainer import HfpipeTrainer


class Ticks:
    """A clock that advances one second each time it is read: the callback reads it once at the
    start and once per optimizer step, so the budget is spent after exactly `seconds` steps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def _train(tmp_path, budget, max_steps=100, schedule="linear", warmup=0.2, resume=None, save_steps=1000):
    torch.manual_seed(0)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=50, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config)
    ids = torch.randint(1, 50, (64, 16))
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=1, save_steps=save_steps, report_to=[],
                             use_cpu=True, disable_tqdm=True)
    trainer = HfpipeTrainer(model=model, args=args, train_dataset=data, budget=BudgetSchedule(budget, warmup, schedule))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_training_stops_at_the_step_that_spends_the_budget_with_the_rate_of_its_fraction(tmp_path):
    budget = TimeBudget(10, clock=Ticks())
    trainer = _train(tmp_path, budget)
    assert trainer.state.global_step == 10  # not max_steps=100
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    # step k runs at the rate of the time spent before it, (k - 1) s of 10: warm-up over 2 s, then
    # linear to 0 at 10 s
    expected = [1e-3 * lr_factor(_at(k / 10), 0.2)(0) for k in range(10)]
    assert rates == pytest.approx(expected, abs=1e-12)
    assert rates[:4] == pytest.approx([0, 5e-4, 1e-3, 8.75e-4]) and rates[-1] == pytest.approx(1.25e-4)


def _at(fraction):
    budget = TimeBudget(1)
    budget.update(fraction)
    return budget


def test_max_steps_still_bounds_a_long_budget(tmp_path):
    trainer = _train(tmp_path, TimeBudget(1000, clock=Ticks()), max_steps=5)
    assert trainer.state.global_step == 5


def test_a_resumed_run_continues_the_budget_it_had_spent(tmp_path):
    _train(tmp_path, TimeBudget(10, clock=Ticks()), max_steps=4, save_steps=4)
    saved = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved[STATE_KEY] == {"spent_seconds": 4, "budget_seconds": 10}
    trainer = _train(tmp_path, TimeBudget(10, clock=Ticks()), resume=str(tmp_path / "checkpoint-4"))
    assert trainer.state.global_step == 10  # 4 s before, 6 after: the same 10 s in all
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates[-1] == pytest.approx(1.25e-4)  # the schedule of the uninterrupted run


@pytest.mark.parametrize("schedule, midpoint", [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0)])
def test_schedules_over_the_budget(schedule, midpoint):
    assert lr_factor(_at(0.05), 0.1, schedule)(123) == pytest.approx(0.5)  # half-way through warm-up
    assert lr_factor(_at(0.55), 0.1, schedule)(0) == pytest.approx(midpoint)
    assert lr_factor(_at(1.0), 0.1, schedule)(0) == pytest.approx(0.0 if schedule != "constant" else 1.0)


def test_cosine_with_min_lr_over_the_budget_ends_at_the_min_rate_as_transformers_schedule_does():
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    steps = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=10, num_training_steps=100,
                          scheduler_specific_kwargs={"min_lr_rate": 0.1})
    for step in (0, 5, 10, 40, 55, 99, 100):
        reference = steps.lr_lambdas[0](step)
        assert lr_factor(_at(step / 100), 0.1, "cosine_with_min_lr", min_lr_rate=0.1)(0) == pytest.approx(reference)


@pytest.mark.parametrize("text, seconds", [(1800, 1800), ("1800s", 1800), ("30m", 1800), ("1.5h", 5400),
                                           ("1h30m", 5400), ("90", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30x", "1h30", "m", "-5m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def _hfpipe(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600, stdin=subprocess.DEVNULL)


GPT = Path(__file__).resolve().parents[1] / "recipes" / "pretrain" / "gpt-clm.yaml"


@pytest.mark.slow
def test_a_recipe_with_a_time_budget_stops_on_time(tmp_path):
    out = tmp_path / "run"
    result = _hfpipe("pretrain", GPT, "--smoke", "--max-steps", 100_000, "--output-dir", out,
                     "--set", "train.time_budget=10s",  # the recipe's cosine_with_min_lr, over the budget
                     "--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
                     "--set", "train.mixed_precision=no", "--set", "train.save_steps=100000")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert 1 < state["global_step"] < 100_000
    assert state["stateful_callbacks"][STATE_KEY]["spent_seconds"] == pytest.approx(10)
    rates = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert max(rates) <= 1.0001 * float(load_recipe(GPT).train.learning_rate)
    assert (out / "model.safetensors").is_file()
    assert "time budget of 10 s spent: stopped after" in result.stderr  # a budget stop says so
    bar = result.stderr.replace("\r", "\n")
    assert "/10 s of the time budget, step" in bar and "/100000 " not in bar  # not a bar over max_steps


@pytest.mark.parametrize("setting, named", [("train.time_budget=30x", "train.time_budget"),
                                            ("train.lr_scheduler_type=polynomial", "train.lr_scheduler_type")])
def test_a_bad_time_budget_is_one_line(tmp_path, setting, named):
    result = _hfpipe("pretrain", GPT, "--smoke", "--set", "train.time_budget=20m", "--set", setting,
                     "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
