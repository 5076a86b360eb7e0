"""A finetuning task is one module: a toy one, registered from this test module, is a recipe section
with its own keys and checks, and `hfpipe finetune` trains and evaluates it, with no other change to
hfpipe. Also: recipe.yaml files saved when the task section was one flat bag of keys still load."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml
from tiny_runs import four_steps

import hfpipe  # noqa: F401  (registers the built-in tasks)
from hfpipe.errors import InputError
from hfpipe.recipes import TASKS, Recipe
from hfpipe.recipes.engine import AT_LEAST_ONE, checked, error
from hfpipe.tasks import Splits, Task, TaskRun
from hfpipe.tasks.base import adapt, predict_splits

WORDS = "the a cat dog sat ran on under mat log big small red blue".split()


@dataclass
class LongTextTask(Task):
    """A toy: is a text longer than ``threshold`` words? (an encoder's [CLS] classifier)."""

    name: Literal["toy_long_text"]
    threshold: int = checked(6, AT_LEAST_ONE)  # words; a text with more is "long"

    def check(self, recipe, where: str) -> None:
        if self.threshold >= self.max_seq_length:
            raise error(where, "task.threshold", f"must be < task.max_seq_length ({self.max_seq_length})")

    def _rows(self, count: int, rng: random.Random):
        import datasets

        texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 2 * self.threshold))) for _ in range(count)]
        return datasets.Dataset.from_dict({"text": texts, "label": [int(len(t.split()) > self.threshold) for t in texts]})

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        rng = random.Random(seed)
        return Splits({"train": self._rows(num_train, rng), "validation": self._rows(num_eval, rng)}, ["toy"])

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.training.trainer import build_trainer

        texts = lambda: (row["text"] for row in data.train)  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSequenceClassification, texts, num_labels=2)
        model = adapt(recipe, model, tokenizer)

        def features(rows):
            return rows.map(lambda b: tokenizer(b["text"], truncation=True, max_length=self.max_seq_length),
                            batched=True, remove_columns=["text"])

        def accuracy(eval_pred):
            return {"accuracy": float((eval_pred.predictions.argmax(-1) == eval_pred.label_ids).mean())}

        evaluation = {name: features(rows) for name, rows in data.evaluation.items()}
        trainer, _ = build_trainer(recipe, model, tokenizer, features(data.train), evaluation["validation"],
                                   DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        metrics, predictions = predict_splits(trainer, evaluation, lambda logits: logits.argmax(-1).tolist())
        return TaskRun(trainer, train_result, metrics, predictions["validation"])

    def write_predictions(self, output_dir: Path, predictions) -> None:
        (output_dir / "eval_predictions.jsonl").write_text("".join(json.dumps({"index": i, "long": bool(p)}) + "\n"
                                                                   for i, p in enumerate(predictions)))


def recipe(tmp_path, **task):
    return {"kind": "finetune", "model": {"family": "encoder", "size": "tiny"},
            "task": {"name": "toy_long_text", "max_seq_length": 32, **task},
            "tokenizer": {"vocab_size": 120},
            "data": {"max_train_samples": 64, "max_eval_samples": 16},
            "train": four_steps(tmp_path / "run", batch_size=8)}


def test_a_registered_task_is_a_recipe_section_with_its_keys_and_checks(register_plugin, tmp_path):
    toy_task = register_plugin(TASKS, LongTextTask)  # the one registry line
    r = Recipe.from_dict(recipe(tmp_path, threshold=4))
    assert isinstance(r.task, toy_task) and r.task.threshold == 4
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(InputError, match=r"task.threshold: must be < task.max_seq_length \(32\)"):
        Recipe.from_dict(recipe(tmp_path, threshold=40))
    with pytest.raises(InputError, match=r"task.doc_stride: has no effect with task.name: toy_long_text \(it applies "
                                         r"to squad, squad_v2\)"):
        Recipe.from_dict(recipe(tmp_path, doc_stride=64))
    with pytest.raises(InputError, match=r"task.threshold: has no effect with task.name: sst2 \(it applies to "
                                         r"toy_long_text\)"):
        Recipe.from_dict({**recipe(tmp_path), "task": {"name": "sst2", "threshold": 4}})


def test_an_unregistered_task_is_an_unknown_name(tmp_path):
    with pytest.raises(InputError, match="task.name: unknown task 'toy_long_text'; known: cola, sst2, .*, dpo$"):
        Recipe.from_dict(recipe(tmp_path))


def test_hfpipe_finetune_trains_a_registered_task(register_plugin, tmp_path):
    from hfpipe.finetune import run_finetuning

    toy_task = register_plugin(TASKS, LongTextTask)
    metrics = run_finetuning(Recipe.from_dict(recipe(tmp_path)))
    out = tmp_path / "run"
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "eval_loss" in metrics
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    lines = (out / "eval_predictions.jsonl").read_text().splitlines()
    assert len(lines) == 16 and set(json.loads(lines[0])) == {"index", "long"}  # the task's own prediction file
    saved = Recipe.from_dict(yaml.safe_load((out / "recipe.yaml").read_text()))
    assert isinstance(saved.task, toy_task) and set(saved.to_dict()["task"]) == {
        "name", "max_seq_length", "pair_format", "text_to_text", "threshold"}


# Every key of the one flat task section that recipes had before tasks were plug-ins, at its default:
# what each finished run's recipe.yaml holds (`hfpipe finetune runs/<run>/recipe.yaml` reruns it).
FLAT_TASK_SECTION = {
    "max_seq_length": 128, "doc_stride": 128, "n_best_size": 20, "max_answer_length": 30,
    "null_score_diff_threshold": 0.0, "pair_format": "plain", "text_to_text": False,
    "instruction_column": "instruction", "response_column": "response", "context_column": "context",
    "chat_template": None, "label_all_tokens": False, "tokens_column": "tokens", "tags_column": None,
    "conll_tag_column": -1, "beta": 0.1, "dpo_loss": "sigmoid", "reference_model": None, "prompt_column": "prompt",
    "chosen_column": "chosen", "rejected_column": "rejected",
}


@pytest.mark.parametrize("name", ["sst2", "squad_v2", "ner"])
def test_a_recipe_saved_with_the_flat_task_section_still_loads(name):
    task = {"name": name, **FLAT_TASK_SECTION, "tags_column": {"ner": "ner_tags"}.get(name),
            "max_seq_length": 384 if name.startswith("squad") else 128}
    r = Recipe.from_dict({"kind": "finetune", "model": {"family": "encoder"}, "task": task})
    assert r.task.name == name and type(r.task) is TASKS[name]
    assert set(r.to_dict()["task"]) < set(task)  # only the task's own keys are kept


def test_another_tasks_key_set_away_from_its_default_is_still_refused():
    task = {"name": "sst2", **FLAT_TASK_SECTION, "beta": 0.5}
    with pytest.raises(InputError, match=r"task.beta: has no effect with task.name: sst2 \(it applies to dpo\)"):
        Recipe.from_dict({"kind": "finetune", "model": {"family": "encoder"}, "task": task})


def test_each_task_name_maps_to_one_section():
    assert {name: TASKS[name].__name__ for name in TASKS} == {
        **dict.fromkeys(["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"], "Glue"),
        "squad": "Squad", "squad_v2": "SquadV2", "sft": "Sft", "ner": "Tagging", "pos": "Tagging", "dpo": "Dpo"}


def test_squad_v2s_threshold_is_refused_for_squad_v1():
    recipe = {"kind": "finetune", "model": {"family": "encoder"}}
    task = {"max_seq_length": 384, "null_score_diff_threshold": 1.5}
    assert Recipe.from_dict({**recipe, "task": {"name": "squad_v2", **task}}).task.no_answer_threshold == 1.5
    assert Recipe.from_dict({**recipe, "task": {"name": "squad", **task, "null_score_diff_threshold": 0.0}}
                            ).task.no_answer_threshold == 0.0
    with pytest.raises(InputError, match=r"task.null_score_diff_threshold: has no effect with task.name: squad "
                                         r"\(it applies to squad_v2\)"):
        Recipe.from_dict({**recipe, "task": {"name": "squad", **task}})


@pytest.mark.parametrize("name, key, value", [("squad", "n_best_size", 5), ("squad_v2", "n_best_size", 5),
                                              ("squad_v2", "null_score_diff_threshold", 1.5)])
def test_span_scoring_keys_are_refused_for_generated_squad_answers(name, key, value):
    recipe = {"kind": "finetune", "model": {"family": "seq2seq"}, "task": {"name": name, "max_seq_length": 384}}
    assert Recipe.from_dict(recipe).task.name == name  # at their defaults they are no error
    with pytest.raises(InputError, match=rf"task.{key}: scores extracted spans and has no effect on generated answers"):
        Recipe.from_dict({**recipe, "task": {**recipe["task"], key: value}})
