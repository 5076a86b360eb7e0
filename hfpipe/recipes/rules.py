"""The recipe's cross-field rules (checks that need more than one key) and the defaults that depend on
other keys; run by ``Recipe.from_dict`` after every field has its type."""

from __future__ import annotations

import dataclasses
import string

from hfpipe.errors import InputError

from .engine import coerce, did_you_mean, error, flatten, hint_for, sections_of, show
from .paths import check_data_file, validate_paths
from .schema import (
    DEFAULT_VOCAB_SIZE,
    OBJECTIVES,
    DPO_TASK,
    SFT_TASK,
    SQUAD_TASKS,
    TAGGING_TASKS,
    IclSection,
    Recipe,
    TaskSection,
    TrainSection,
)

_TAGS_COLUMN = {"ner": "ner_tags", "pos": "pos_tags"}  # the Hub's CoNLL-2003 columns: task.tags_column's default
_SINGLE_SENTENCE_GLUE = ("cola", "sst2")  # the other seven tasks classify a pair of texts
_ICL_PLACEHOLDERS = ("text", "text_a", "text_b", "label")


def glue_task_names() -> tuple[str, ...]:
    """The nine GLUE task names, from hfpipe.tasks.glue's table."""
    from hfpipe.tasks.glue import GLUE_TASKS  # here, not at the top: tasks' modules import the recipes

    return tuple(GLUE_TASKS)


# Keys that act only for some values of a selector: set to anything but their default elsewhere, they
# would do nothing, so the recipe is refused (a key the user believes in must not be silently ignored).
# (The objective's keys need no entry: each objective is its own section, see schema.OBJECTIVES.)
_APPLIES_TO = {
    ("peft", "method"): {
        "r": ("lora",), "lora_alpha": ("lora",), "lora_dropout": ("lora",), "target_modules": ("lora", "ia3"),
        "num_virtual_tokens": ("prefix_tuning", "prompt_tuning"), "prompt_tuning_init_text": ("prompt_tuning",),
        "modules_to_save": ("lora", "ia3"),
    },
    ("task", "name"): {
        "doc_stride": ("squad", "squad_v2"), "n_best_size": ("squad", "squad_v2"),
        "max_answer_length": ("squad", "squad_v2"), "null_score_diff_threshold": ("squad_v2",),
        "instruction_column": ("sft",), "response_column": ("sft",), "chat_template": ("sft",),
        "context_column": ("sft",),
        "label_all_tokens": TAGGING_TASKS, "tokens_column": TAGGING_TASKS, "tags_column": TAGGING_TASKS,
        "conll_tag_column": TAGGING_TASKS,
        **{key: (DPO_TASK,) for key in ("beta", "dpo_loss", "reference_model", "prompt_column", "chosen_column",
                                        "rejected_column")},
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
            raise error(where, "task", f"required for kind: {r.kind} (task.name: a GLUE task, squad, squad_v2, sft, ner or pos)")
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


def _validate_task(r: Recipe, where: str) -> None:
    task, family = r.task, r.model.family
    valid = (*glue_task_names(), *SQUAD_TASKS) + ((SFT_TASK, *TAGGING_TASKS, DPO_TASK) if r.kind == "finetune" else ())
    if task.name not in valid:
        raise error(where, "task.name", f"unknown task {show(task.name)}{did_you_mean(task.name, valid)}; known: "
                     + ", ".join(valid))
    if task.name in SQUAD_TASKS and task.doc_stride >= task.max_seq_length:
        raise error(where, "task.doc_stride",
                     f"must be smaller than task.max_seq_length ({task.max_seq_length}), got {task.doc_stride}")
    if task.name == SFT_TASK and family != "decoder":
        raise error(where, "model.family", f"sft (instruction tuning) trains a decoder, got {family}")
    if task.name == DPO_TASK and family != "decoder":
        raise error(where, "model.family", f"dpo (preference finetuning) trains a decoder, got {family}")
    if task.name in TAGGING_TASKS and family != "encoder" and r.model.name_or_path is None:
        # hfpipe's decoder and seq2seq have no token-classification head; a checkpoint whose
        # transformers family has one (checked when it loads) may still be used.
        raise error(where, "model.family", f"{task.name} (token tagging) needs an encoder to train from scratch, got "
                     f"{family}; or give model.name_or_path a checkpoint with a token-classification head")
    if task.pair_format == "gpt" and family != "decoder":
        raise error(where, "task.pair_format",
                     f"gpt ([START] a [DELIM] b [EXTRACT], GPT-1) is for decoders, got model.family: {family}")
    if task.text_to_text and family != "seq2seq":
        raise error(where, "task.text_to_text", f"text-to-text needs model.family: seq2seq, got {family}")
    if task.name in SQUAD_TASKS and family == "seq2seq":
        if task.text_to_text is False:
            raise error(where, "task.text_to_text", "an encoder-decoder answers SQuAD by generating the answer's "
                         "text: expected true (span extraction needs model.family encoder or decoder)")
        defaults = TaskSection(name=task.name)
        for key in ("n_best_size", "null_score_diff_threshold"):
            if getattr(task, key) != getattr(defaults, key):
                raise error(where, f"task.{key}", "scores extracted spans and has no effect on generated "
                             "answers (text-to-text SQuAD); remove it")


def _validate_icl(r: Recipe, where: str) -> None:
    task, icl = r.task, r.icl or IclSection()
    if r.model.family == "encoder":
        raise error(where, "model.family", "icl scores label words with a language model: needs decoder or seq2seq")
    if r.peft.method != "none":
        raise error(where, "peft.method", "icl trains nothing: expected none")
    if task.name in SQUAD_TASKS or task.name == "stsb":
        raise error(where, "task.name",
                     f"icl compares label words: expected a GLUE classification task, got {task.name}")
    if icl.template is not None:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(icl.template) if f is not None}
        except ValueError as e:
            raise error(where, "icl.template",
                         f"not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
        unknown = sorted(names - set(_ICL_PLACEHOLDERS))
        if unknown:
            raise error(where, "icl.template", f"unknown placeholder {{{unknown[0]}}}; allowed: "
                         + ", ".join("{" + p + "}" for p in _ICL_PLACEHOLDERS))
        if "label" not in names:
            raise error(where, "icl.template", "must contain {label} (where the label word goes)")
        if task.name in _SINGLE_SENTENCE_GLUE and "text_b" in names:
            raise error(where, "icl.template", f"{task.name} has one text: use {{text}}, not {{text_b}}")
        if task.name not in _SINGLE_SENTENCE_GLUE and not {"text_a", "text_b"} <= names:
            raise error(where, "icl.template", f"{task.name} classifies a pair: use {{text_a}} and {{text_b}}")
    if icl.verbalizer is not None:
        labels = _glue_label_names(task.name)
        if labels is not None and set(icl.verbalizer) != set(labels):
            raise error(where, "icl.verbalizer", f"expected one word for each label of {task.name}: "
                         + ", ".join(labels) + f"; got {', '.join(icl.verbalizer)}")


def _glue_label_names(task: str) -> list[str] | None:
    """Label names from hfpipe.tasks.glue's table (None for a task without names: STS-B's scores)."""
    from hfpipe.tasks.glue import GLUE_TASKS

    info = GLUE_TASKS.get(task)
    names = getattr(info, "label_names", None)
    return [str(n) for n in names] if names else None


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
        if r.task.tags_column is None and r.task.name in TAGGING_TASKS:
            r.task.tags_column = _TAGS_COLUMN[r.task.name]
    if r.kind == "icl" and r.icl is None:
        r.icl = IclSection()
