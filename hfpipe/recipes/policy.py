"""How a recipe file becomes the run's recipe: ``--set`` overrides, the CLI's own options
(``CLI_OVERRIDE_KEYS``), the ``--smoke`` defaults, and the check that this machine can run it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .engine import apply_override, error, flatten, parse_set, read_yaml
from .paths import check_data_file
from .schema import Recipe

# Optimizer names (transformers OptimizerNames) that need a package or a device torch alone lacks:
# checked against the machine before any work (no silent swaps).
_OPTIMIZER_NEEDS = (
    (("bnb", "8bit", "paged", "lion", "ademamix", "rmsprop_bnb"), "bitsandbytes", None),
    (("apex",), "apex", None),
    (("galore",), "galore_torch", None),
    (("apollo",), "apollo_torch", None),
    (("lomo",), "lomo_optim", None),
    (("grokadamw",), "grokadamw", None),
    (("schedule_free",), "schedulefree", None),
    (("torchao", "4bit"), "torchao", None),
    (("npu",), None, "an Ascend NPU"),
    (("xla", "tpu"), None, "a TPU (torch_xla)"),
)


# The CLI's own options and the recipe keys they set (--train-file also clears data.dataset).
CLI_OVERRIDE_KEYS: dict[str, str] = {
    "model": "model.name_or_path",
    "train_file": "data.train_files",
    "validation_file": "data.validation_files",
    "output_dir": "train.output_dir",
    "max_steps": "train.max_steps",
    "seed": "train.seed",
    "shots": "icl.shots",
}


def load_recipe(
    path: str | Path,
    overrides: Iterable[str] = (),
    smoke: bool = False,
    cli_overrides: Mapping[str, Any] | None = None,
) -> Recipe:
    """Read, override, validate and resolve a recipe file (the order: see `hfpipe.recipes`).

    ``overrides`` are ``--set`` strings ``"dotted.key=value"`` (value parsed as YAML);
    ``cli_overrides`` maps the CLI's option names (``CLI_OVERRIDE_KEYS``; None values are
    ignored) or dotted recipe keys to values.
    """
    if isinstance(overrides, str):  # one --set given bare, not in a list
        overrides = [overrides]
    where = str(path)
    raw = read_yaml(Path(path), "recipe file", "a mapping of sections (kind, model, train, ...)")
    user = [(*parse_set(item), f"--set {item}") for item in overrides]
    user += _cli_pairs(cli_overrides or {})
    for key, value, origin in user:
        apply_override(Recipe, raw, key, value, origin)
    recipe = Recipe.from_dict(raw, where, cross_checks=not smoke)
    if smoke:
        # Smoke defaults are computed from the user's recipe, then the recipe's own smoke
        # section refines them, then the user's explicit overrides win over both.
        keep_model = any(key == "model.name_or_path" for key, _, _ in user)
        for key, value in smoke_overrides(recipe, keep_model=keep_model).items():
            apply_override(Recipe, raw, key, value, "--smoke")
        for key, value in flatten(Recipe, recipe.smoke).items():
            apply_override(Recipe, raw, key, value, f"{where}: smoke")
        for key, value, origin in user:
            apply_override(Recipe, raw, key, value, origin)
        recipe = Recipe.from_dict(raw, where)
    if recipe.train.output_dir is None:
        recipe.train.output_dir = f"runs/{Path(path).stem}" + ("-smoke" if smoke else "")
    return recipe


SMOKE_MICRO_BATCHES = 30


def smoke_overrides(recipe: Recipe, keep_model: bool = False) -> dict[str, Any]:
    """The global ``--smoke`` defaults for ``recipe``: the same run, shrunk to a few dozen CPU steps.

    Smoke shrinks sizes, never semantics. It changes only:

    - the model: a tiny randomly initialised one (``model.size=tiny``, config overrides dropped,
      tokenizer trained on the data with at most 2,000 entries) unless ``keep_model`` (--model); a
      pretraining recipe's tiny model keeps the full recipe's position table;
    - steps and batches: about 30 micro-batches of 8 per device: max(3, ceil(30 / accumulation))
      optimizer steps (30 without accumulation, 8 at BERT's 4, 3 at GPT-2's 32); logging every sixth
      of the steps, evaluating and saving every third (checkpoints and resuming get exercised),
      warm-up 10% of the steps;
    - lengths: sequences of at most 64 tokens for pretraining (span corruption stays consistent:
      the raw length follows from the input length), 128 for tasks (SQuAD stride 32); in-context
      learning keeps up to 512-token prompts, shots <= 4 and 32 evaluation rows;
    - the data slice: at most 256 training / 64 evaluation examples; a remote dataset becomes the
      embedded data unless local files are given, with 10% held out when there is no validation file;
    - ``hub.push``: a smoke model never lands in a real repository.

    Streaming, gradient accumulation, the optimizer, mixed precision, torch.compile, activation
    checkpointing and dataloader workers stay as the recipe says; a setting this machine cannot run
    stops the run with one line (``check_machine``) unless ``train.cpu_substitutes`` asks otherwise.
    """
    out: dict[str, Any] = {}
    if not keep_model:
        out.update({"model.name_or_path": None, "model.size": "tiny", "model.config": {},
                    "tokenizer.name_or_path": None,
                    "tokenizer.vocab_size": min(recipe.tokenizer.vocab_size or 2000, 2000)})
    if recipe.objective is not None:
        out["objective.max_seq_length"] = min(recipe.objective.max_seq_length, 64)
        if not keep_model and recipe.model.family != "seq2seq":  # (T5's relative positions have no table)
            # The tiny model keeps the full recipe's position table (GPT-2's 1024, BERT's 512): what a
            # smoke checkpoint is finetuned or prompted with downstream fits it as it would the real one.
            out["model.config"] = {"max_position_embeddings": max(recipe.objective.max_seq_length, 128)}
    if recipe.kind == "icl":
        # The prompt holds every demonstration: keep room for them, but at most 4 of them.
        out["task.max_seq_length"] = min(recipe.task.max_seq_length, 512)
        out["icl.shots"] = [k for k in recipe.icl.shots if k <= 4] or [0]
        out["icl.max_eval_samples"] = min(recipe.icl.max_eval_samples or 32, 32)
    elif recipe.task is not None:
        out["task.max_seq_length"] = min(recipe.task.max_seq_length, 128)
        out.update(recipe.task.smoke_overrides())
    data = recipe.data
    if not data.train_files and not data.validation_files:
        out.update({"data.dataset": None, "data.dataset_config": None})
    if not data.validation_files:
        out["data.validation_split_percentage"] = max(data.validation_split_percentage, 10.0)
    # About 30 micro-batches whatever the accumulation: each step still accumulates as written (RoBERTa's
    # 256 micro-batches), and logging, evaluation and checkpoints still happen over at least 3 steps.
    steps = max(3, math.ceil(SMOKE_MICRO_BATCHES / recipe.train.gradient_accumulation_steps))
    out.update({
        "data.max_train_samples": min(data.max_train_samples or 256, 256),
        "data.max_eval_samples": min(data.max_eval_samples or 64, 64),
        "train.max_steps": steps,
        "train.per_device_train_batch_size": 8,
        "train.per_device_eval_batch_size": 8,
        "train.warmup_steps": 0,
        "train.warmup_ratio": 0.1,
        "train.logging_steps": max(1, steps // 6),
        "train.eval_steps": max(1, steps // 3),
        "train.save_steps": max(1, steps // 3),
        "train.save_total_limit": 2,
        "hub.push": False,
    })
    if recipe.train.time_budget is not None:
        out["train.time_budget"] = "30s"  # the budget is a size: its schedule still runs start to end
    return out


def check_machine(recipe: Recipe, where: str = "recipe") -> list[str]:
    """Stop before any work when this machine cannot run a setting of ``recipe`` as written.

    Returns the substitutions made when ``train.cpu_substitutes`` allows them (to be logged);
    without it, a CUDA-only setting on a machine without CUDA is one InputError naming the key.
    """
    import importlib.util
    import shutil

    import torch  # lazy: validation of the recipe file itself needs no torch

    train = recipe.train
    cuda = torch.cuda.is_available() and not train.use_cpu
    substituted: list[str] = []

    def unavailable(key: str, why: str, substitute: Any | None) -> None:
        if substitute is not None and train.cpu_substitutes:
            setattr(train, key, substitute)
            substituted.append(f"train.{key} -> {substitute} ({why})")
            return
        fix = f"; or set train.cpu_substitutes=true to run {substitute!r} instead" if substitute is not None else ""
        raise error(where, f"train.{key}", f"{why}{fix}")

    if train.mixed_precision == "fp16" and not cuda:
        unavailable("mixed_precision", "fp16 autocast needs a CUDA device and none is in use here "
                    "(bf16 autocast runs on CPU: train.mixed_precision=bf16)", "bf16")
    optim = train.optim
    for markers, package, device in _OPTIMIZER_NEEDS:
        if not any(m in optim for m in markers):
            continue
        if package is not None and importlib.util.find_spec(package) is None:
            extra = " (pip install 'hfpipe[quant]')" if package == "bitsandbytes" else ""
            unavailable("optim", f"{optim} needs the {package} package, which is not installed{extra}", "adamw_torch")
        if device is not None:
            unavailable("optim", f"{optim} needs {device}", "adamw_torch")
        break
    if train.torch_compile and not cuda and shutil.which("g++") is None and shutil.which("c++") is None:
        unavailable("torch_compile", "torch.compile on CPU needs a C++ compiler (g++), and none is on PATH", False)
    return substituted



def _cli_pairs(cli: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    pairs = []
    for name, value in cli.items():
        if value is None:  # argparse default: option not given
            continue
        origin = "--" + name.replace("_", "-")
        if name in ("train_file", "validation_file"):
            value = [value] if isinstance(value, (str, Path)) else list(value)
            value = [str(v) for v in value]
            for v in value:
                check_data_file(v, origin, "")
            # Local files replace the recipe's Hub dataset.
            pairs += [("data.dataset", None, origin), ("data.dataset_config", None, origin)]
        elif name == "shots" and not isinstance(value, (list, tuple)):
            value = [value]
        elif name == "model":
            value = str(value)
        key = CLI_OVERRIDE_KEYS.get(name, name)
        if "." not in key:
            raise ValueError(f"cli_overrides: unknown option {name!r}; known: {', '.join(CLI_OVERRIDE_KEYS)}")
        pairs.append((key, value, origin))
    return pairs
