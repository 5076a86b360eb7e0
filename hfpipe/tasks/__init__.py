"""Finetuning tasks as plug-ins: one module per task, one line per task in the table below.

Each module defines its task as one class, a subclass of :class:`Task` registered with :func:`register`:
the class is the recipe's ``task`` section (``name: Literal[...]`` and the keys only it takes, with
their checks) and says what the task does: its data (files, the Hub, embedded examples), its model
head, its metrics and its prediction file. ``hfpipe finetune`` and ``hfpipe evaluate``
(hfpipe/finetune.py) are the driver that runs any of them. A new task is one new file here and one
name in this import.
"""

from .base import Splits, Task, TaskRun, register
from . import glue, squad, sft, tagging, dpo  # noqa: E402,I001  the table

__all__ = ["Splits", "Task", "TaskRun", "register"]
