"""Preference finetuning: Direct Preference Optimization (Rafailov et al. 2023) through trl's DPOTrainer.

    pairs = load_preference_jsonl("pairs.jsonl")   # {"prompt", "chosen", "rejected"} per line, checked
    hfpipe finetune recipes/post/dpo-lora.yaml --train-file pairs.jsonl

A pair is a prompt and two completions of it, the preferred one first. DPO raises the policy's
log-probability of the chosen completion relative to the reference model's and lowers the rejected
one's, with no reward model and no sampling while training:

    sigmoid (DPO):  -log σ(β · [(log π(c) - log π_ref(c)) - (log π(r) - log π_ref(r))])
    ipo (IPO):      ([(…c) / |c| - (…r) / |r|] - 1 / (2β))²      (per-token averages; Azar et al. 2023)

where log π(·) sums the completion's token log-probabilities given the prompt. The reference is the
policy as it starts (``task.reference_model`` names another checkpoint); with a PEFT adapter it is the
same model with the adapter switched off, so no second copy is held. trl computes all of it (its
DPOTrainer, DPOConfig and preference collator); this module checks the pairs, builds the trainer with
hfpipe's callbacks, and reports trl's held-out reward accuracy and margins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets

from ..errors import InputError
from ..recipes.engine import POSITIVE, checked, error
from ..recipes.paths import check_model_path
from .base import Splits, Task, TaskRun, register
from .embedded import embedded_preferences
from .jsonl import json_lines

logger = logging.getLogger("hfpipe.tasks.dpo")

COLUMNS = ("prompt", "chosen", "rejected")


def _check_row(row: dict, where: str, columns: dict[str, str]) -> dict[str, str]:
    """The pair of one row, renamed to prompt/chosen/rejected; InputError naming ``where`` if it is not one."""
    pair = {}
    for target, key in columns.items():
        value = row.get(key)
        if not isinstance(value, str) or (target != "prompt" and not value.strip()):
            found = "missing" if key not in row else f"got {value!r}"[:80]
            wanted = "a string" if target == "prompt" else "a non-empty string"
            raise InputError(f"{where}: {key!r} must be {wanted} ({found})")
        pair[target] = value
    if not pair["prompt"].strip():
        raise InputError(f"{where}: {columns['prompt']!r} is empty; expected the text both completions continue")
    if pair["chosen"].strip() == pair["rejected"].strip():
        raise InputError(f"{where}: {columns['chosen']!r} and {columns['rejected']!r} are the same text; a pair "
                         "needs two different completions")
    return pair


def load_preference_jsonl(path: str | Path, prompt_column: str = "prompt", chosen_column: str = "chosen",
                          rejected_column: str = "rejected") -> datasets.Dataset:
    """A JSON-lines file of preference pairs as a Dataset with ``prompt``, ``chosen`` and ``rejected``.

    Every non-blank line must be an object whose three keys hold strings, chosen and rejected non-empty
    and different; the first line that is not raises InputError naming the file and line."""
    columns = {"prompt": prompt_column, "chosen": chosen_column, "rejected": rejected_column}
    rows = {name: [] for name in COLUMNS}
    for where, row in json_lines(path):
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with {', '.join(map(repr, columns.values()))}")
        for name, value in _check_row(row, where, columns).items():
            rows[name].append(value)
    if not rows["prompt"]:
        raise InputError(f"{path}: no preference pairs; expected JSON lines with "
                         f"{', '.join(map(repr, columns.values()))}")
    return datasets.Dataset.from_dict(rows)


def checked_pairs(dataset: datasets.Dataset, where: str, prompt_column: str = "prompt",
                  chosen_column: str = "chosen", rejected_column: str = "rejected") -> datasets.Dataset:
    """A Hub split's pairs, checked row by row like a file's (rows named by index), renamed to prompt/chosen/rejected."""
    columns = {"prompt": prompt_column, "chosen": chosen_column, "rejected": rejected_column}
    missing = [key for key in columns.values() if key not in dataset.column_names]
    if missing:
        raise InputError(f"{where}: no column {missing[0]!r} (task.prompt_column / chosen_column / rejected_column); "
                         f"it has {dataset.column_names}")
    rows = {name: [] for name in COLUMNS}
    for index, row in enumerate(dataset.select_columns(list(columns.values()))):
        for name, value in _check_row(row, f"{where} row {index}", columns).items():
            rows[name].append(value)
    return datasets.Dataset.from_dict(rows)


def load_pairs(recipe, train_files: list[str], validation_files: list[str], do_train: bool) -> dict:
    """{"train"?, "validation"?} pairs from JSONL files or a Hub dataset; without a validation set,
    data.validation_split_percentage of the training pairs are held out (seeded)."""
    task, data = recipe.task, recipe.data
    columns = dict(prompt_column=task.prompt_column, chosen_column=task.chosen_column,
                   rejected_column=task.rejected_column)
    splits = {}
    if train_files or validation_files:
        if train_files and do_train:
            splits["train"] = load_preference_jsonl(train_files[0], **columns)
        if validation_files:
            splits["validation"] = load_preference_jsonl(validation_files[0], **columns)
    else:
        from ..hub import load_hub_dataset

        loaded = load_hub_dataset(data.dataset, data.dataset_config, local_hint="give JSONL files of "
                                  "prompt/chosen/rejected pairs instead (--train-file/--validation-file)")
        for name, split in (("train", "train"), ("validation", "validation"), ("validation", "test")):
            if split in loaded and name not in splits and (do_train or name != "train"):
                splits[name] = checked_pairs(loaded[split], f"{data.dataset} [{split}]", **columns)
    if "validation" not in splits and "train" in splits and data.validation_split_percentage > 0:
        held = splits["train"].train_test_split(test_size=data.validation_split_percentage / 100,
                                                seed=recipe.train.seed)
        splits = {"train": held["train"], "validation": held["test"]}
    return splits


def require_trl():
    """trl's DPOTrainer and DPOConfig, or one line saying how to install them."""
    try:
        from trl import DPOConfig, DPOTrainer
    except ImportError as error:
        raise InputError(f"task dpo needs trl ({error}); install hfpipe's post-training extra: "
                         "pip install 'hfpipe[post]'") from None
    return DPOTrainer, DPOConfig


def build_dpo_trainer(recipe, model, tokenizer, train, validation):
    """trl's DPOTrainer with hfpipe's callbacks and the recipe's settings. With a PEFT method trl wraps
    ``model`` and the reference is the adapter-free base; else a frozen copy of ``model`` as it is now
    (or ``task.reference_model``)."""
    import copy

    from transformers import AutoModelForCausalLM

    from ..adapters import peft_config
    from ..checkpoints import load_model
    from ..training.trainer import build_trainer

    _, DPOConfig = require_trl()
    from ..training.dpo import HfpipeDPOTrainer  # trl is there: imports it

    task = recipe.task
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers have none; trl pads with it
        tokenizer.pad_token = tokenizer.eos_token
    adapter = peft_config(recipe.peft, model) if recipe.peft.method != "none" else None
    reference = None
    if task.reference_model is not None:
        reference = load_model(AutoModelForCausalLM, task.reference_model)
    elif adapter is None:
        # trl would reload the reference from config._name_or_path, which a model built from a config or
        # resized since has not got; the starting weights are what DPO's reference means
        reference = copy.deepcopy(model)
    if reference is not None:
        reference.eval().requires_grad_(False)
    trainer, _ = build_trainer(
        recipe, model, tokenizer, train, validation, data_collator=None, trainer_class=HfpipeDPOTrainer,
        args_class=DPOConfig,
        extra_args={"beta": task.beta, "loss_type": [task.dpo_loss], "max_length": task.max_seq_length,
                    # trl's DPOConfig turns activation checkpointing on by default; the recipe decides
                    "gradient_checkpointing": recipe.train.gradient_checkpointing},
        ref_model=reference, peft_config=adapter,
    )
    return trainer


# ---------------------------------------------------------------------------------- the task plug-in
@register
@dataclass
class Dpo(Task):
    """Preference finetuning (``task.name: dpo``) with trl's DPOTrainer; metrics on the held-out pairs:
    trl's rewards/accuracies (the share of pairs whose implicit reward ranks chosen first),
    rewards/margins, the chosen and rejected rewards (beta x log-ratio) and the loss."""

    name: Literal["dpo"]
    beta: float = checked(0.1, POSITIVE)  # dpo: how far the policy may move from the reference (IPO: its tau)
    dpo_loss: Literal["sigmoid", "ipo"] = "sigmoid"  # dpo: sigmoid = DPO (Rafailov et al. 2023), ipo = IPO (Azar et al.)
    reference_model: str | None = None  # dpo: the reference policy; None: the model as it starts (peft: the base)
    prompt_column: str = "prompt"  # dpo: the JSON key / dataset column of the prompt
    chosen_column: str = "chosen"  # dpo: ... of the preferred completion
    rejected_column: str = "rejected"  # dpo: ... of the other completion

    def check(self, recipe, where: str) -> None:
        if recipe.model.family != "decoder":
            raise error(where, "model.family", f"dpo (preference finetuning) trains a decoder, got {recipe.model.family}")
        if self.reference_model is not None:
            check_model_path(self.reference_model, "task.reference_model", where)

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        return Splits(embedded_preferences(seed=seed, num_train=num_train, num_eval=num_eval), ["hfpipe-embedded"])

    def load_data(self, recipe, train_files, validation_files, do_train) -> Splits:
        return Splits(load_pairs(recipe, train_files, validation_files, do_train),
                      [recipe.data.dataset or "local JSON lines"])

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        from transformers import AutoModelForCausalLM

        from ..adapters import prepare_quantized, quantization_config
        from ..build import load_tokenizer_and_model

        require_trl()  # before the model loads: a missing extra is one line
        texts = lambda: (t for row in data.train or [] for t in (row["prompt"], row["chosen"], row["rejected"]))  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForCausalLM, texts)
        if quantization_config(recipe.quantization) is not None:
            model = prepare_quantized(model)  # the adapter comes with trl's trainer (build_dpo_trainer)
        validation = data.evaluation.get("validation")
        trainer = build_dpo_trainer(recipe, model, tokenizer, data.train, validation)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        return TaskRun(trainer, train_result, trainer.evaluate() if validation is not None else {})


__all__ = ["build_dpo_trainer", "checked_pairs", "load_pairs", "load_preference_jsonl", "require_trl", "Dpo"]
