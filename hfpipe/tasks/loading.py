"""The examples a finetuning or evaluation recipe names: local files, the Hub, or embedded data.

    data = load_task_data(recipe, do_train=True)   # TaskData(train, {"validation": ...}, names)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from hfpipe.errors import InputError
from hfpipe.recipes import DPO_TASK, SFT_TASK, SQUAD_TASKS, TAGGING_TASKS
from hfpipe.tasks import dpo, glue, sft, squad, tagging

logger = logging.getLogger("hfpipe.tasks.loading")


@dataclass
class TaskData:
    train: Any | None  # examples
    evaluation: dict[str, Any]  # split name -> examples (MNLI: matched and mismatched)
    datasets: list[str]  # names for the model card
    labels: list[str] | None = None  # ner/pos: the dataset's ClassLabel names (None: plain tag strings)
    where: dict[str, str] = field(default_factory=dict)  # ner/pos: split -> its file or "<hub id> [split]"


def load_task_data(recipe, do_train: bool) -> TaskData:
    """Local files, the Hub, or (no files and no dataset: --smoke, the demo) embedded data."""
    task, data = recipe.task.name, recipe.data
    train_files, validation_files = list(data.train_files), list(data.validation_files)
    embedded = not train_files and not validation_files and not data.dataset
    labels, where = None, {}  # ner/pos only
    if embedded:
        from hfpipe.tasks import embedded as embedded_data

        logger.warning("no data given: using hfpipe's embedded synthetic %s data (for smoke tests only)", task)
        sizes = {"num_train": data.max_train_samples or 1024, "num_eval": data.max_eval_samples or 256}
        if task == SFT_TASK:
            splits = embedded_data.embedded_sft(seed=recipe.train.seed, **sizes)
        elif task == DPO_TASK:
            splits = embedded_data.embedded_preferences(seed=recipe.train.seed, **sizes)
        elif task in SQUAD_TASKS:
            splits = embedded_data.embedded_squad(version="v2" if task == "squad_v2" else "v1",
                                                  seed=recipe.train.seed, **sizes)
        elif task in TAGGING_TASKS:
            splits, labels, where = tagging.from_dataset_dict(
                embedded_data.embedded_tagging(seed=recipe.train.seed, **sizes), tagging.TAGS_COLUMNS[task])
        else:
            splits = embedded_data.embedded_glue(task, seed=recipe.train.seed, **sizes)
        names = ["hfpipe-embedded"]
    elif task == SFT_TASK:
        splits, names = _load_sft(recipe, train_files, validation_files, do_train), [data.dataset or "local JSON lines"]
    elif task == DPO_TASK:
        splits = dpo.load_pairs(recipe, train_files, validation_files, do_train)
        names = [data.dataset or "local JSON lines"]
    elif task in SQUAD_TASKS:
        version = "2.0" if task == "squad_v2" else "1.1"
        source_train = train_files[0] if train_files else data.dataset
        source_eval = validation_files[0] if validation_files else data.dataset
        splits = {}
        if do_train:
            if not source_train:
                raise InputError(f"{task}: no training data; pass --train-file (SQuAD JSON) or set data.dataset")
            splits["train"] = squad.load_squad(source_train, version, split="train")
        if source_eval:
            splits["validation"] = squad.load_squad(source_eval, version, split="validation")
        names = [data.dataset] if data.dataset else []
    elif task in TAGGING_TASKS:
        sources = {"train": train_files[0] if train_files else data.dataset,
                   "validation": validation_files[0] if validation_files else data.dataset}
        sources = {k: v for k, v in sources.items() if v and (do_train or k != "train")}
        t = recipe.task
        splits, labels, where = tagging.load_splits(
            sources, t.tokens_column, t.tags_column, t.conll_tag_column, data.dataset_config,
            holdout_percentage=data.validation_split_percentage if do_train else 0.0, seed=recipe.train.seed)
        names = [data.dataset] if data.dataset else ["local CoNLL files"]
    else:
        splits = glue.load_glue(
            task,
            train_file=train_files[0] if train_files else None,
            validation_file=validation_files[0] if validation_files else None,
            validation_mismatched_file=validation_files[1] if len(validation_files) > 1 else None,
        ) if (train_files or validation_files) else glue.load_glue(task, dataset=data.dataset,
                                                                      dataset_config=data.dataset_config)
        names = [data.dataset or glue.GLUE_HUB_ID] if not (train_files or validation_files) else ["local GLUE files"]
    train = splits.get("train") if do_train else None
    if do_train and train is None:
        raise InputError(f"{task}: no training split; pass --train-file")
    evaluation = {k: v for k, v in splits.items() if k.startswith("validation")}
    if train is not None and data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if data.max_eval_samples:
        evaluation = {k: v.select(range(min(data.max_eval_samples, len(v)))) for k, v in evaluation.items()}
    return TaskData(train, evaluation, names, labels, where)


def _load_sft(recipe, train_files, validation_files, do_train) -> dict:
    """JSON-lines files or a Hub dataset; no validation set: data.validation_split_percentage held out."""
    task, data = recipe.task, recipe.data
    columns = {"instruction_column": task.instruction_column, "response_column": task.response_column,
               "context_column": task.context_column}
    if train_files or validation_files:
        splits = {"train": sft.load_sft_jsonl(train_files[0], **columns)} if train_files and do_train else {}
        if validation_files:
            splits["validation"] = sft.load_sft_jsonl(validation_files[0], **columns)
    else:
        from ..hub import load_hub_dataset

        loaded = load_hub_dataset(data.dataset, data.dataset_config, local_hint="give JSONL files of "
                                  "instruction/response pairs instead (--train-file/--validation-file)")
        renames = {task.instruction_column: "instruction", task.response_column: "response"}
        splits = {}
        for name, split in (("train", "train"), ("validation", "validation"), ("validation", "test")):
            if split in loaded and name not in splits:
                missing = [c for c in renames if c not in loaded[split].column_names]
                if missing:
                    raise InputError(f"{data.dataset} [{split}]: no column {missing[0]!r} (task.instruction_column / "
                                     f"task.response_column); it has {loaded[split].column_names}")
                kept = loaded[split]
                if task.context_column in kept.column_names:
                    kept = kept.map(lambda row: {task.instruction_column: sft.with_context(
                        row[task.instruction_column], row[task.context_column])})
                kept = kept.select_columns(list(renames))
                splits[name] = kept.rename_columns({k: v for k, v in renames.items() if k != v})
    if "validation" not in splits and "train" in splits and data.validation_split_percentage > 0:
        held = splits["train"].train_test_split(test_size=data.validation_split_percentage / 100,
                                                seed=recipe.train.seed)
        splits = {"train": held["train"], "validation": held["test"]}
    return splits
