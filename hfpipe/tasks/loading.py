"""The examples a finetuning or evaluation recipe names: local files, the Hub, or embedded data.

    data = load_task_data(recipe, do_train=True)   # Splits: data.train, data.evaluation["validation"]
"""

from __future__ import annotations

import dataclasses
import logging

from hfpipe.errors import InputError

from .base import Splits

logger = logging.getLogger("hfpipe.tasks.loading")


def load_task_data(recipe, do_train: bool) -> Splits:
    """Local files, the Hub, or (no files and no dataset: --smoke, the demo) embedded data, as the
    recipe's task reads them; then data.max_train_samples / max_eval_samples."""
    task, data = recipe.task, recipe.data
    train_files, validation_files = list(data.train_files), list(data.validation_files)
    if not train_files and not validation_files and not data.dataset:
        logger.warning("no data given: using hfpipe's embedded synthetic %s data (for smoke tests only)", task.name)
        loaded = task.embedded_data(seed=recipe.train.seed, num_train=data.max_train_samples or 1024,
                                    num_eval=data.max_eval_samples or 256)
    else:
        loaded = task.load_data(recipe, train_files, validation_files, do_train)
    train = loaded.train if do_train else None
    if do_train and train is None:
        raise InputError(f"{task.name}: no training split; pass --train-file")
    evaluation = loaded.evaluation
    if train is not None and data.max_train_samples:
        train = train.select(range(min(data.max_train_samples, len(train))))
    if data.max_eval_samples:
        evaluation = {k: v.select(range(min(data.max_eval_samples, len(v)))) for k, v in evaluation.items()}
    return dataclasses.replace(loaded, splits=({"train": train} if train is not None else {}) | evaluation)
