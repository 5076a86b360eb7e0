"""The recipe's cross-field rules (checks that need more than one key) and the defaults that depend on
other keys; run by ``Recipe.from_dict`` after every field has its type."""

from __future__ import annotations

import dataclasses

from .engine import coerce, did_you_mean, error, flatten, hint_for, sections_of, show
from .paths import check_data_file, validate_paths
from .schema import DEFAULT_VOCAB_SIZE, OBJECTIVES, TASKS, IclSection, Recipe, TrainSection

# Keys that act only for some values of a selector: set to anything but their default elsewhere, they
# would do nothing, so the recipe is refused (a key the user believes in must not be silently ignored).
# (The objective's and the task's keys need no entry: each is its own section, see schema.OBJECTIVES
# and schema.TASKS.)
_APPLIES_TO = {
    ("peft", "method"): {
        "r": ("lora",), "lora_alpha": ("lora",), "lora_dropout": ("lora",), "target_modules": ("lora", "ia3"),
        "num_virtual_tokens": ("prefix_tuning", "prompt_tuning"), "prompt_tuning_init_text": ("prompt_tuning",),
        "modules_to_save": ("lora", "ia3"),
    },
}


def _validate_applicable(r: Recipe, where: str) -> None:
    for (section_name, selector), keys in _APPLIES_TO.items():
        section = getattr(r, section_name)
        if section is None:
            continue
        chosen = getattr(section, selector)
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                    for f in dataclasses.fields(section) if f.name in keys}
        for key, applies in keys.items():
            if chosen not in applies and getattr(section, key) != defaults[key]:
                raise error(where, f"{section_name}.{key}", f"has no effect with {section_name}.{selector}: {chosen} "
                             f"(it applies to {', '.join(applies)}); remove it")


def validate(r: Recipe, where: str) -> None:
    """Checks that need more than one key; run after every field has its type."""
    _validate_applicable(r, where)
    family = r.model.family
    if r.kind == "pretrain":
        if r.objective is None:
            raise error(where, "objective", "required for kind: pretrain (objective.name: one of "
                         + ", ".join(OBJECTIVES) + ")")
        if r.task is not None:
            raise error(where, "task", "not used by kind: pretrain (remove it, or use kind: finetune)")
        wanted = type(r.objective).family
        if wanted != family:
            raise error(where, "objective.name", f"{r.objective.name} needs model.family: {wanted}, got {family}")
        r.objective.check(where)
    else:
        if r.objective is not None:
            raise error(where, "objective", f"only for kind: pretrain, got kind: {r.kind}")
        if r.task is None:
            raise error(where, "task", f"required for kind: {r.kind} (task.name: one of {', '.join(_task_names(r.kind))})")
        _validate_task(r, where)
    if r.kind != "icl" and r.icl is not None:
        raise error(where, "icl", f"only for kind: icl, got kind: {r.kind}")
    if r.kind == "icl":
        _validate_icl(r, where)

    q = r.quantization
    if q.load_in_4bit and q.load_in_8bit:
        raise error(where, "quantization", "load_in_4bit and load_in_8bit are exclusive: choose one")
    if (q.load_in_4bit or q.load_in_8bit) and r.kind != "icl" and r.peft.method == "none":
        raise error(where, "peft.method",
                     "a quantized model cannot be trained in full: choose an adapter, e.g. lora (QLoRA)")

    validate_paths(r, where)
    d = r.data
    if d.dataset is not None and (d.train_files or d.validation_files):
        raise error(where, "data.dataset", "give a Hub dataset or local train/validation files, not both")
    if d.sources and (d.dataset is not None or d.train_files):
        raise error(where, "data.sources", "a mixture replaces data.dataset and data.train_files: give one of them")
    for i, source in enumerate(d.sources):
        if (source.dataset is not None) + bool(source.files) + source.embedded != 1:
            raise error(where, f"data.sources[{i}]",
                        "expected exactly one of dataset (a Hub name), files or embedded: true")
        for j, name in enumerate(source.files):
            check_data_file(name, f"data.sources[{i}].files[{j}]", where)
    if r.hub.push and not r.hub.repo_id:
        raise error(where, "hub.repo_id", "required when hub.push is true (e.g. my-org/my-model)")
    if r.hub.repo_id is not None and not _is_repo_id(r.hub.repo_id):
        raise error(where, "hub.repo_id", f"expected 'name' or 'org/name', got {show(r.hub.repo_id)}")
    _validate_train(r.train, where)
    # The smoke section is checked on every load, so a typo there shows before anyone runs --smoke.
    for key, value in flatten(Recipe, r.smoke).items():
        hint = hint_for(Recipe, key, f"{where}: smoke")
        if not sections_of(hint):
            coerce(value, hint, key, f"{where}: smoke")


def _task_names(kind: str) -> list[str]:
    return [name for name, task in TASKS.items() if kind in task.kinds]


def _validate_task(r: Recipe, where: str) -> None:
    task, family = r.task, r.model.family
    valid = _task_names(r.kind)
    if task.name not in valid:
        raise error(where, "task.name", f"unknown task {show(task.name)}{did_you_mean(task.name, valid)}; known: "
                     + ", ".join(valid))
    task.check(r, where)
    if task.pair_format == "gpt" and family != "decoder":
        raise error(where, "task.pair_format",
                     f"gpt ([START] a [DELIM] b [EXTRACT], GPT-1) is for decoders, got model.family: {family}")
    if task.text_to_text and family != "seq2seq":
        raise error(where, "task.text_to_text", f"text-to-text needs model.family: seq2seq, got {family}")


def _validate_icl(r: Recipe, where: str) -> None:
    if r.model.family == "encoder":
        raise error(where, "model.family", "icl scores label words with a language model: needs decoder or seq2seq")
    if r.peft.method != "none":
        raise error(where, "peft.method", "icl trains nothing: expected none")
    r.task.check_icl(r, where)


def _validate_train(t: TrainSection, where: str) -> None:
    if t.max_steps == 0 or t.max_steps < -1:
        raise error(where, "train.max_steps",
                     f"expected -1 (use num_train_epochs) or a positive integer, got {t.max_steps}")
    if t.warmup_ratio and t.warmup_steps:
        raise error(where, "train.warmup_steps", "give warmup_steps or warmup_ratio, not both")
    if t.load_best_model_at_end and t.save_steps % t.eval_steps:
        raise error(where, "train.save_steps",
                     f"must be a multiple of train.eval_steps ({t.eval_steps}) when load_best_model_at_end is true")
    if t.time_budget is not None:
        from hfpipe.training.budget import SCHEDULES, parse_duration

        try:
            seconds = parse_duration(t.time_budget)
        except ValueError as problem:
            raise error(where, "train.time_budget", f"expected {problem}") from None
        if seconds <= 0:
            raise error(where, "train.time_budget", f"must be positive, got {show(t.time_budget)}")
        if t.lr_scheduler_type not in SCHEDULES:
            raise error(where, "train.lr_scheduler_type", f"{show(t.lr_scheduler_type)} counts steps; with "
                         f"train.time_budget the schedule runs over time: one of {', '.join(SCHEDULES)}")
        if t.warmup_steps:
            raise error(where, "train.warmup_steps", "counts steps; with train.time_budget give warmup_ratio "
                         "(a fraction of the budget)")
        allowed = {"min_lr_rate"} if t.lr_scheduler_type == "cosine_with_min_lr" else set()
        extra = sorted(set(t.lr_scheduler_kwargs or {}) - allowed)
        if extra:
            raise error(where, "train.lr_scheduler_kwargs", f"{extra[0]!r} is an option of step-based schedules; with "
                         "train.time_budget only cosine_with_min_lr's min_lr_rate applies")
    from transformers.trainer_utils import SchedulerType  # lazy, and the allowed names stay transformers' own
    from transformers.training_args import OptimizerNames

    for key, enum in (("lr_scheduler_type", SchedulerType), ("optim", OptimizerNames)):
        value = getattr(t, key)
        allowed = [member.value for member in enum]
        if value not in allowed:
            raise error(where, f"train.{key}", f"unknown value {show(value)}{did_you_mean(value, allowed)}; allowed: "
                         + ", ".join(allowed))


def _is_repo_id(text: str) -> bool:
    """The Hub's own rule (huggingface_hub's validate_repo_id): "name" or "org/name", at most 96
    characters of letters, digits, "-", "_" and ".", no "--" or "..", not ending in ".git"."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


# ---------------------------------------------------------------------------- resolved defaults
def resolve_defaults(r: Recipe) -> None:
    """Fill in defaults that depend on other keys, so the saved recipe says what ran."""
    family = r.model.family
    trains_tokenizer = r.tokenizer.name_or_path is None and r.model.name_or_path is None
    if trains_tokenizer:
        if r.tokenizer.vocab_size is None:
            r.tokenizer.vocab_size = DEFAULT_VOCAB_SIZE[family]
        if r.tokenizer.lowercase is None:
            r.tokenizer.lowercase = family == "encoder"
    if r.task is not None:
        if r.task.text_to_text is None:
            r.task.text_to_text = family == "seq2seq"
        if r.task.pair_format is None:
            r.task.pair_format = "gpt" if family == "decoder" else "plain"
        r.task.resolve_defaults(r)
    if r.kind == "icl" and r.icl is None:
        r.icl = IclSection()


Recipe.validate_rules, Recipe.resolve_defaults = staticmethod(validate), staticmethod(resolve_defaults)
