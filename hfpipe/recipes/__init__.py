"""Recipes: the typed YAML schema every hfpipe verb runs from, validated before any heavy work.

A recipe is one YAML file with one mapping per section (``model``, ``tokenizer``,
``objective``, ``data``, ``task``, ``peft``, ``quantization``, ``train``, ``icl``,
``hub``, ``smoke``); each section is a dataclass of :mod:`hfpipe.recipes.schema` whose fields carry their
type, default and a one-line comment. Load one with::

    recipe = load_recipe("recipes/finetune/glue-sst2.yaml",
                         overrides=["train.learning_rate=3e-5"],      # --set
                         smoke=False,                                  # --smoke
                         cli_overrides={"model": "runs/bert", "seed": 1})

Every problem raises :class:`hfpipe.errors.InputError` with one line
``<file>: <dotted.key>: <what was expected>``: unknown keys (with the closest
valid key), wrong types, missing required keys, enum values (the allowed list
named), local paths that do not exist, objectives that do not fit the model
family, unknown GLUE tasks, contradictory options. Each objective is its own section, picked by
``objective.name`` (``schema.OBJECTIVES``, filled by hfpipe/objectives/): a key of another objective is
refused, not ignored.

Resolution order (later wins):
  1. the YAML file;
  2. ``--set dotted.key=value`` overrides (value parsed as YAML), in order;
  3. the CLI's own options (``--model``, ``--train-file``, ... see ``CLI_OVERRIDE_KEYS``);
  4. with ``--smoke``: the global smoke defaults (``smoke_overrides``), then the
     recipe's own ``smoke:`` mapping, then 2 and 3 again so the user's explicit
     choices beat smoke defaults;
  5. defaults that depend on other keys (``train.output_dir``, ``tokenizer.vocab_size``,
     ``tokenizer.lowercase``, ``task.text_to_text``, ``task.pair_format``, ``task.tags_column``) are filled in,
     so ``Recipe.save_yaml`` writes the fully resolved recipe.

Relative paths (data files, local checkpoints, tokenizer dirs) are relative to the
current working directory, as with every other command-line tool.

The package: ``engine`` (the typed-YAML engine, nothing hfpipe-specific), ``schema`` (the sections),
``rules`` (cross-field checks, resolved defaults), ``paths`` (local paths must exist) and ``policy``
(loading: ``--set``, CLI options, ``--smoke``; machine checks).
"""

from . import rules  # noqa: F401  (hands Recipe its cross-field rules)
from .policy import CLI_OVERRIDE_KEYS, check_machine, load_recipe, smoke_overrides
from .schema import (
    DEFAULT_VOCAB_SIZE,
    OBJECTIVES,
    TASKS,
    DataSection,
    HubSection,
    IclSection,
    ModelSection,
    ObjectiveSection,
    PeftSection,
    QuantizationSection,
    Recipe,
    SourceSection,
    TaskSection,
    TokenizerSection,
    TrainSection,
)

__all__ = [
    "CLI_OVERRIDE_KEYS",
    "DEFAULT_VOCAB_SIZE",
    "DataSection",
    "HubSection",
    "IclSection",
    "ModelSection",
    "OBJECTIVES",
    "ObjectiveSection",
    "PeftSection",
    "QuantizationSection",
    "Recipe",
    "SourceSection",
    "TASKS",
    "TaskSection",
    "TokenizerSection",
    "TrainSection",
    "check_machine",
    "load_recipe",
    "smoke_overrides",
]
