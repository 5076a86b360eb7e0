"""Recipes: the typed YAML schema every hfpipe verb runs from, validated before any heavy work.

A recipe is one YAML file with one mapping per section (``model``, ``tokenizer``,
``objective``, ``data``, ``task``, ``peft``, ``quantization``, ``train``, ``icl``,
``hub``, ``smoke``); each section is a dataclass below whose fields carry their
type, default and a one-line comment. Load one with::

    recipe = load_recipe("recipes/finetune/glue-sst2.yaml",
                         overrides=["train.learning_rate=3e-5"],      # --set
                         smoke=False,                                  # --smoke
                         cli_overrides={"model": "runs/bert", "seed": 1})

Every problem raises :class:`hfpipe.errors.InputError` with one line
``<file>: <dotted.key>: <what was expected>``: unknown keys (with the closest
valid key), wrong types, missing required keys, enum values (the allowed list
named), local paths that do not exist, objectives that do not fit the model
family, unknown GLUE tasks, contradictory options.

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
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import glob
import math
import string
import types
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from hfpipe.errors import InputError

__all__ = [
    "CLI_OVERRIDE_KEYS",
    "DEFAULT_VOCAB_SIZE",
    "DataSection",
    "HubSection",
    "IclSection",
    "ModelSection",
    "OBJECTIVE_FAMILY",
    "ObjectiveSection",
    "PeftSection",
    "QuantizationSection",
    "Recipe",
    "TaskSection",
    "TokenizerSection",
    "TrainSection",
    "glue_task_names",
    "load_recipe",
    "smoke_overrides",
]

Kind = Literal["pretrain", "finetune", "icl"]
Family = Literal["encoder", "decoder", "seq2seq"]
Size = Literal["tiny", "small", "base", "large"]
ObjectiveName = Literal["mlm_nsp", "sop", "mlm", "span_mlm", "clm", "span_corruption", "prefix_lm", "ul2"]
PeftMethod = Literal["none", "lora", "prefix_tuning", "prompt_tuning", "ia3"]
MixedPrecision = Literal["no", "bf16", "fp16"]

# Which family each pretraining objective trains (BERT / ALBERT / RoBERTa, GPT, T5).
OBJECTIVE_FAMILY: dict[str, str] = {
    "mlm_nsp": "encoder",
    "sop": "encoder",
    "mlm": "encoder",
    "span_mlm": "encoder",
    "clm": "decoder",
    "span_corruption": "seq2seq",
    "prefix_lm": "seq2seq",
    "ul2": "seq2seq",
}
SQUAD_TASKS = ("squad", "squad_v2")
SFT_TASK = "sft"  # instruction tuning (hfpipe.tasks.sft)
TAGGING_TASKS = ("ner", "pos")  # token tagging: named entities, part of speech (hfpipe.tasks.tagging)
_TAGS_COLUMN = {"ner": "ner_tags", "pos": "pos_tags"}  # the Hub's CoNLL-2003 columns: task.tags_column's default
# GLUE's task list is fixed by the benchmark; used only when hfpipe.tasks.glue cannot be imported.
_GLUE_FALLBACK = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
_SINGLE_SENTENCE_GLUE = ("cola", "sst2")  # the other seven tasks classify a pair of texts
DEFAULT_VOCAB_SIZE = {"encoder": 30522, "decoder": 50257, "seq2seq": 32000}  # BERT, GPT-2, T5
_ICL_PLACEHOLDERS = ("text", "text_a", "text_b", "label")
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


# ---------------------------------------------------------------------------- value checks
@dataclass(frozen=True)
class _Range:
    """A numeric bound kept in a field's metadata; checked after types are coerced."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None and (v >= self.high if self.high_open else v > self.high))

    def describe(self) -> str:
        if self.high is None:
            return f"a number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = _Range(0, low_open=True)
NON_NEGATIVE = _Range(0)
AT_LEAST_ONE = _Range(1)
PROBABILITY = _Range(0, 1)
HALF_OPEN_UNIT = _Range(0, 1, high_open=True)
OPEN_UNIT = _Range(0, 1, low_open=True, high_open=True)


def checked(default: Any = dataclasses.MISSING, check: _Range | None = None, **kwargs: Any) -> Any:
    """``dataclasses.field`` with a range checked on load (on each element for lists; None skipped)."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(metadata={"check": check}, **kwargs)


# ---------------------------------------------------------------------------- sections
@dataclass
class ModelSection:
    family: Family  # encoder (BERT) | decoder (GPT) | seq2seq (T5); required
    size: Size = "base"  # preset from hfpipe.models when training from scratch
    name_or_path: str | None = None  # start from a checkpoint: local dir or Hub id, "org/name@revision" allowed
    config: dict[str, Any] = field(default_factory=dict)  # config overrides, e.g. {num_hidden_layers: 6}
    trust_remote_code: bool = False  # passed to from_pretrained for checkpoints with custom code


@dataclass
class TokenizerSection:
    name_or_path: str | None = None  # None: the model's own (checkpoint) or train one on the data (scratch)
    vocab_size: int | None = checked(None, AT_LEAST_ONE)  # when training; None: 30522 / 50257 / 32000 by family
    lowercase: bool | None = None  # when training; None: True for encoder (BERT uncased), else False
    min_frequency: int = checked(2, AT_LEAST_ONE)  # when training: merges/pieces seen fewer times are dropped
    train_samples: int = checked(1_000_000, AT_LEAST_ONE)  # when training: read at most the first N texts (streams!)


@dataclass(kw_only=True)  # keyword-only: noise_density is required yet follows an optional key
class DenoiserSection:
    """One denoiser of UL2's mixture (``objective.denoisers``; see hfpipe.data.ul2)."""

    paradigm: Literal["r", "x", "s"]  # r: span corruption, [NLU]; x: extreme, [NLG]; s: prefix LM, [S2S]; required
    mean_noise_span_length: float | None = checked(None, AT_LEAST_ONE)  # r/x: mean span in tokens (required); s: none
    noise_density: float = checked(check=OPEN_UNIT)  # r/x: fraction of tokens corrupted; s: fraction that is target
    weight: float = checked(1.0, POSITIVE)  # relative share of examples; normalised over the denoisers


@dataclass
class ObjectiveSection:
    name: ObjectiveName  # mlm_nsp | sop | mlm | span_mlm | clm | span_corruption | prefix_lm | ul2; required
    max_seq_length: int = checked(128, AT_LEAST_ONE)  # tokens per example; span_corruption: encoder input (512: 568 raw)
    mlm_probability: float = checked(0.15, PROBABILITY)  # fraction of tokens chosen for prediction (BERT)
    mask_replace_prob: float = checked(0.8, PROBABILITY)  # of those: -> [MASK]
    random_replace_prob: float = checked(0.1, PROBABILITY)  # of those: -> random token (the rest unchanged)
    whole_word_mask: bool = False  # choose whole words rather than word pieces
    nsp_probability: float = checked(0.5, PROBABILITY)  # mlm_nsp: chance that segment B is a random one
    short_seq_probability: float = checked(0.1, PROBABILITY)  # mlm_nsp/sop: chance of a shorter target length (BERT)
    geometric_p: float = checked(0.2, OPEN_UNIT)  # span_mlm: span length in words ~ Geometric(p) (SpanBERT)
    max_span_length: int = checked(10, AT_LEAST_ONE)  # span_mlm: longest span in words; 0.2 and 10: mean 3.8
    noise_density: float = checked(0.15, OPEN_UNIT)  # span_corruption: fraction of tokens corrupted (T5)
    mean_noise_span_length: float = checked(3.0, AT_LEAST_ONE)  # span_corruption: mean span length in tokens (T5)
    denoisers: list[DenoiserSection] = field(default_factory=list)  # ul2: the mixture; []: UL2's seven, uniform


@dataclass
class SourceSection:
    """One corpus of a weighted mixture (``data.sources``)."""

    weight: float = checked(check=POSITIVE)  # relative share of documents; normalised over the sources; required
    dataset: str | None = None  # Hub dataset name (or files)
    dataset_config: str | None = None  # Hub dataset config
    files: list[str] = field(default_factory=list)  # local files (globs allowed)
    text_column: str | None = None  # its text column; None: data.text_column
    name: str | None = None  # how the logs and train_results.json name it; None: the dataset or first file


@dataclass
class DataSection:
    dataset: str | None = None  # Hub dataset name; None and no files: hfpipe's embedded sample data
    dataset_config: str | None = None  # Hub dataset config, e.g. "wikitext-103-raw-v1", "sst2"
    train_files: list[str] = field(default_factory=list)  # local files (globs allowed); replace data.dataset
    validation_files: list[str] = field(default_factory=list)  # local files; MNLI: [matched, mismatched]
    text_column: str = "text"  # pretraining: the column holding raw text
    validation_split_percentage: float = checked(5.0, _Range(0, 100, high_open=True))  # % held out if no validation set
    max_train_samples: int | None = checked(None, AT_LEAST_ONE)  # truncate the training set (debugging)
    max_eval_samples: int | None = checked(None, AT_LEAST_ONE)  # truncate the evaluation set
    streaming: bool = False  # stream a Hub dataset instead of downloading it whole
    validation_samples: int | None = checked(None, AT_LEAST_ONE)  # hold out the first N documents for evaluation
    sources: list[SourceSection] = field(default_factory=list)  # weighted mixture: [{dataset|files, weight}, ...]
    preprocessing_num_workers: int | None = checked(None, AT_LEAST_ONE)  # datasets.map num_proc


@dataclass
class TaskSection:
    name: str  # cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli|squad|squad_v2|sft|ner|pos; required
    max_seq_length: int = checked(128, AT_LEAST_ONE)  # tokens per (pair of) input text(s)
    doc_stride: int = checked(128, AT_LEAST_ONE)  # SQuAD: overlap between windows of a long context
    n_best_size: int = checked(20, AT_LEAST_ONE)  # SQuAD: start/end candidates kept per window
    max_answer_length: int = checked(30, AT_LEAST_ONE)  # SQuAD: longest answer in tokens
    null_score_diff_threshold: float = 0.0  # SQuAD v2: predict "" when null score - best span > this
    pair_format: Literal["plain", "gpt"] | None = None  # gpt: [START] a [DELIM] b [EXTRACT] (GPT-1); None: gpt for decoders
    text_to_text: bool | None = None  # seq2seq: labels as words, generated (T5); None: true for seq2seq
    instruction_column: str = "instruction"  # sft: the JSON key / dataset column of the instruction
    response_column: str = "response"  # sft: ... of the response (the only tokens with a loss)
    context_column: str | None = "context"  # sft: an optional passage joined to the instruction (Dolly); None: ignore
    chat_template: str | None = None  # sft: Jinja chat template; None: the tokenizer's own, else hfpipe's plain one
    label_all_tokens: bool = False  # ner/pos: label every word piece (B- -> I- after the first), not the first only
    tokens_column: str = "tokens"  # ner/pos: the dataset/JSON column of a sentence's words
    tags_column: str | None = None  # ner/pos: ... of its tags (ClassLabel ids or names); None: ner_tags / pos_tags
    conll_tag_column: int = -1  # ner/pos, CoNLL text files: the tags' column (word = 0); -1: the last (NER), 1: POS


@dataclass
class PeftSection:
    method: PeftMethod = "none"  # none = full finetuning
    r: int = checked(8, AT_LEAST_ONE)  # LoRA rank
    lora_alpha: int = checked(16, AT_LEAST_ONE)  # LoRA scale alpha / r
    lora_dropout: float = checked(0.1, HALF_OPEN_UNIT)  # dropout on the LoRA input
    target_modules: list[str] | str | None = None  # names, a regex or "all-linear"; None: per-family default
    num_virtual_tokens: int = checked(20, AT_LEAST_ONE)  # prefix / prompt tuning length
    prompt_tuning_init_text: str | None = None  # prompt tuning: initialise from this text's embeddings (None: random)
    modules_to_save: list[str] | None = None  # trained fully besides the adapter; None: the task head


@dataclass
class QuantizationSection:
    load_in_4bit: bool = False  # QLoRA: base weights in 4-bit (bitsandbytes)
    load_in_8bit: bool = False  # LLM.int8() base weights
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"  # NF4 is QLoRA's data type
    bnb_4bit_use_double_quant: bool = True  # quantise the quantisation constants too (QLoRA)
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # matmul dtype
    llm_int8_skip_modules: list[str] | None = None  # kept unquantised; None: the task heads


@dataclass
class TrainSection:
    """Maps onto transformers.TrainingArguments (see ``to_training_arguments_kwargs``)."""

    output_dir: str | None = None  # None: runs/<recipe file name> (runs/<name>-smoke under --smoke)
    num_train_epochs: float = checked(3.0, POSITIVE)  # ignored when max_steps > 0
    max_steps: int = -1  # optimizer steps; -1: run num_train_epochs
    per_device_train_batch_size: int = checked(8, AT_LEAST_ONE)  # examples per device per micro-step
    per_device_eval_batch_size: int = checked(8, AT_LEAST_ONE)  # examples per device at evaluation
    gradient_accumulation_steps: int = checked(1, AT_LEAST_ONE)  # micro-steps per optimizer step
    learning_rate: float = checked(5e-5, POSITIVE)  # peak learning rate
    weight_decay: float = checked(0.0, NON_NEGATIVE)  # decoupled weight decay (AdamW)
    adam_beta1: float = checked(0.9, HALF_OPEN_UNIT)  # AdamW beta1
    adam_beta2: float = checked(0.999, HALF_OPEN_UNIT)  # AdamW beta2
    adam_epsilon: float = checked(1e-8, POSITIVE)  # AdamW epsilon
    max_grad_norm: float = checked(1.0, NON_NEGATIVE)  # gradient clipping; 0 disables
    lr_scheduler_type: str = "linear"  # a transformers SchedulerType: linear, cosine, inverse_sqrt, constant, ...
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {min_lr_rate: 0.1} for cosine_with_min_lr
    warmup_ratio: float = checked(0.0, HALF_OPEN_UNIT)  # warm-up as a fraction of all steps (or warmup_steps)
    warmup_steps: int = checked(0, NON_NEGATIVE)  # warm-up in steps (or warmup_ratio)
    logging_steps: int = checked(50, AT_LEAST_ONE)  # log the training loss every N steps
    eval_steps: int = checked(500, AT_LEAST_ONE)  # evaluate every N steps (and at the end)
    save_steps: int = checked(500, AT_LEAST_ONE)  # write checkpoint-N/ every N steps
    save_total_limit: int | None = checked(3, AT_LEAST_ONE)  # keep the newest N checkpoints; None: all
    seed: int = 42  # seeds python, numpy, torch and data order
    mixed_precision: MixedPrecision = "no"  # no | bf16 | fp16 (autocast)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~20% slower
    optim: str = "adamw_torch"  # transformers OptimizerNames: adamw_torch_fused, adafactor, adamw_bnb_8bit, ...
    torch_compile: bool = False  # torch.compile the model
    dataloader_num_workers: int = checked(0, NON_NEGATIVE)  # DataLoader worker processes
    resume: bool | str = False  # true: newest checkpoint-N/ in output_dir; a path: that one; org/name[@rev]: the Hub's
    overwrite: bool = False  # allow writing into a non-empty output_dir
    load_best_model_at_end: bool = False  # reload the best checkpoint by metric_for_best_model
    metric_for_best_model: str | None = None  # e.g. "accuracy", "f1"; None: eval loss
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # logging integrations; [] for none
    use_cpu: bool = False  # train on CPU even when an accelerator is present
    cpu_substitutes: bool = False  # without CUDA: fp16 -> bf16 autocast, CUDA-only optimizers -> adamw_torch (logged)

    def to_training_arguments_kwargs(self, do_eval: bool = True) -> dict[str, Any]:
        """Keyword arguments for ``transformers.TrainingArguments`` (transformers 5 names).

        ``do_eval=False`` (no validation data) turns evaluation off, and with it
        ``load_best_model_at_end``. ``resume`` and ``overwrite`` are hfpipe's own and not included.
        """
        import transformers  # lazy: recipes are validated before the heavy imports

        names = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
        kwargs: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate",
                "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                "lr_scheduler_type", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
                "seed", "optim", "torch_compile", "dataloader_num_workers", "metric_for_best_model",
                "use_cpu",
            )
        }
        kwargs["lr_scheduler_kwargs"] = dict(self.lr_scheduler_kwargs)
        kwargs["bf16"] = self.mixed_precision == "bf16"
        kwargs["fp16"] = self.mixed_precision == "fp16"
        kwargs["logging_strategy"] = "steps"
        kwargs["save_strategy"] = "steps"
        kwargs["eval_strategy"] = "steps" if do_eval else "no"
        kwargs["load_best_model_at_end"] = self.load_best_model_at_end and do_eval
        kwargs["report_to"] = list(self.report_to) or "none"
        # transformers 5.x renamed gradient_checkpointing (a deprecated alias now) and folded
        # warmup_ratio into a fractional warmup_steps; older 5.x releases still have the old names.
        checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
        kwargs[checkpointing] = self.gradient_checkpointing
        if self.warmup_ratio and "warmup_ratio" in names:
            kwargs["warmup_ratio"] = self.warmup_ratio
        else:
            kwargs["warmup_steps"] = self.warmup_ratio or self.warmup_steps
        return kwargs


@dataclass
class IclSection:
    shots: list[int] = checked(check=NON_NEGATIVE, default_factory=lambda: [0, 1, 4, 8])  # demonstrations per prompt
    template: str | None = None  # one demonstration, e.g. "Review: {text}\nSentiment: {label}"; None: task default
    separator: str = "\n\n"  # between demonstrations and before the query
    verbalizer: dict[str, str] | None = None  # label name -> word scored, e.g. {positive: great}; None: task default
    balanced: bool = True  # draw demonstrations evenly across labels
    seed: int = 42  # which demonstrations are drawn
    max_eval_samples: int | None = checked(None, AT_LEAST_ONE)  # evaluate on the first N rows


@dataclass
class HubSection:
    push: bool = False  # push the output directory to the Hub after training
    repo_id: str | None = None  # "org/name"; required when push is true
    private: bool = False  # create the repository private
    revision: str | None = None  # branch to push to (created when missing)
    hub_strategy: Literal["end", "every_save"] = "end"  # push once at the end, or at every checkpoint


@dataclass(kw_only=True)  # keyword-only, so fields keep the order a reader expects in recipe.yaml
class Recipe:
    kind: Kind  # pretrain | finetune | icl; required
    description: str = ""  # one line shown in logs and the model card
    model: ModelSection  # required
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    objective: ObjectiveSection | None = None  # required for pretrain; not allowed otherwise
    data: DataSection = field(default_factory=DataSection)
    task: TaskSection | None = None  # required for finetune and icl; not allowed for pretrain
    peft: PeftSection = field(default_factory=PeftSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    train: TrainSection = field(default_factory=TrainSection)
    icl: IclSection | None = None  # icl only (defaults filled in for kind icl)
    hub: HubSection = field(default_factory=HubSection)
    smoke: dict[str, Any] = field(default_factory=dict)  # this recipe's own --smoke overrides: {dotted.key: value}

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> Recipe:
        """Validate a plain mapping (as parsed from YAML) and build the recipe; raise InputError."""
        recipe = _build(cls, d, "", source)
        _validate(recipe, source)
        _resolve_defaults(recipe)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe); ``Recipe.from_dict(r.to_dict()) == r``."""
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        """Write the fully resolved recipe (what the run used) as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


# ---------------------------------------------------------------------------- loading
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
    """Read, override, validate and resolve a recipe file (see the module docstring for the order).

    ``overrides`` are ``--set`` strings ``"dotted.key=value"`` (value parsed as YAML);
    ``cli_overrides`` maps the CLI's option names (``CLI_OVERRIDE_KEYS``; None values are
    ignored) or dotted recipe keys to values.
    """
    if isinstance(overrides, str):  # one --set given bare, not in a list
        overrides = [overrides]
    where = str(path)
    raw = _read_yaml(Path(path))
    user = [(*_parse_set(item), f"--set {item}") for item in overrides]
    user += _cli_pairs(cli_overrides or {})
    for key, value, origin in user:
        _apply(raw, key, value, origin)
    recipe = Recipe.from_dict(raw, where)
    if smoke:
        # Smoke defaults are computed from the user's recipe, then the recipe's own smoke
        # section refines them, then the user's explicit overrides win over both.
        keep_model = any(key == "model.name_or_path" for key, _, _ in user)
        for key, value in smoke_overrides(recipe, keep_model=keep_model).items():
            _apply(raw, key, value, "--smoke")
        for key, value in _flatten(recipe.smoke).items():
            _apply(raw, key, value, f"{where}: smoke")
        for key, value, origin in user:
            _apply(raw, key, value, origin)
        recipe = Recipe.from_dict(raw, where)
    if recipe.train.output_dir is None:
        recipe.train.output_dir = f"runs/{Path(path).stem}" + ("-smoke" if smoke else "")
    return recipe


def smoke_overrides(recipe: Recipe, keep_model: bool = False) -> dict[str, Any]:
    """The global ``--smoke`` defaults for ``recipe``: the same run, shrunk to a few dozen CPU steps.

    Smoke shrinks sizes, never semantics. It changes only:

    - the model: a tiny randomly initialised one (``model.size=tiny``, config overrides dropped,
      tokenizer trained on the data with at most 2,000 entries) unless ``keep_model`` (--model);
    - steps and batches: 30 steps at batch 8 per device, logging every 5, evaluating and saving
      every 10 (checkpoints and resuming get exercised), warm-up 10% of the steps;
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
    if recipe.kind == "icl":
        # The prompt holds every demonstration: keep room for them, but at most 4 of them.
        out["task.max_seq_length"] = min(recipe.task.max_seq_length, 512)
        out["icl.shots"] = [k for k in recipe.icl.shots if k <= 4] or [0]
        out["icl.max_eval_samples"] = min(recipe.icl.max_eval_samples or 32, 32)
    elif recipe.task is not None:
        out["task.max_seq_length"] = min(recipe.task.max_seq_length, 128)
        if recipe.task.name in SQUAD_TASKS:
            out["task.doc_stride"] = min(recipe.task.doc_stride, 32)
    data = recipe.data
    if not data.train_files and not data.validation_files:
        out.update({"data.dataset": None, "data.dataset_config": None})
    if not data.validation_files:
        out["data.validation_split_percentage"] = max(data.validation_split_percentage, 10.0)
    out.update({
        "data.max_train_samples": min(data.max_train_samples or 256, 256),
        "data.max_eval_samples": min(data.max_eval_samples or 64, 64),
        "train.max_steps": 30,
        "train.per_device_train_batch_size": 8,
        "train.per_device_eval_batch_size": 8,
        "train.warmup_steps": 0,
        "train.warmup_ratio": 0.1,
        "train.logging_steps": 5,
        "train.eval_steps": 10,
        "train.save_steps": 10,
        "train.save_total_limit": 2,
        "hub.push": False,
    })
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
        raise _error(where, f"train.{key}", f"{why}{fix}")

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


def glue_task_names() -> tuple[str, ...]:
    """The nine GLUE task names, from hfpipe.tasks.glue's table."""
    try:
        from hfpipe.tasks.glue import GLUE_TASKS
    except ImportError:  # hfpipe.tasks.glue missing or broken: GLUE's nine tasks are fixed by the benchmark
        return _GLUE_FALLBACK
    return tuple(GLUE_TASKS)


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a recipe must not."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in seen:
                raise _DuplicateKey(f"line {line}: key {_show(key)} appears twice (lines {seen[key]} and {line}); "
                                    "YAML would keep only the last one")
            if isinstance(key, Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such recipe file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except _DuplicateKey as e:
        raise InputError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise InputError(f"{path}: {line}{problem}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of sections (kind, model, train, ...), got {_show(data)}")
    return data


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--set {item}: expected dotted.key=value, e.g. train.learning_rate=3e-5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError(f"--set {item}: the value is not valid YAML (quote it)") from None
    return key.strip(), value


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
                _check_data_file(v, origin, "")
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


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"max_steps": 5}} or {"train.max_steps": 5} -> {"train.max_steps": 5}; stops at non-sections."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and _is_section(dotted):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _is_section(dotted: str) -> bool:
    try:
        hint = _hint_for(dotted, "")
    except InputError:
        return False
    return dataclasses.is_dataclass(_strip_optional(hint))


def _hint_for(dotted: str, where: str) -> Any:
    """The type of a dotted key (unknown keys raise the same error as in a file); dict keys pass through."""
    hint: Any = Recipe
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        inner = _strip_optional(hint)
        prefix = ".".join(parts[:i])
        if dataclasses.is_dataclass(inner):
            hints = _hints(inner)
            if part not in hints:
                raise _unknown_key(inner, part, prefix + "." if prefix else "", where)
            hint = hints[part]
        elif get_origin(inner) is dict:
            hint = get_args(inner)[1]
        elif inner is Any:
            hint = Any
        else:
            raise InputError(f"{where}: {dotted}: {prefix} is a single value, not a section")
    return hint


def _apply(raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """Set ``dotted`` in the raw nested dict after checking the key and the value's type."""
    hint = _hint_for(dotted, where)
    section = dataclasses.is_dataclass(_strip_optional(hint))
    if not section:  # report a bad value against its origin (--set, --smoke), not the file
        _coerce(value, hint, dotted, where)
    node = raw
    *parents, last = dotted.split(".")
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{where}: {'.'.join(parents[: i + 1])}: expected a mapping, got {_show(child)}")
        node = child
    if section and isinstance(value, Mapping) and isinstance(node.get(last), dict):
        for key, sub in value.items():  # a mapping given for a section updates it key by key
            _apply(raw, f"{dotted}.{key}", sub, where)
    else:
        node[last] = copy.deepcopy(value)


# ---------------------------------------------------------------------------- generic validator
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, cut to one short line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_text(key: Any) -> str:
    """A mapping key for a message: as written when it is a plain string, else its repr (one line)."""
    return key if isinstance(key, str) and key.isprintable() else repr(key)


def _describe(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {_describe(args[0]).split(' ', 1)[-1]}s" if args[0] is not Any else "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "a boolean (true/false)", int: "an integer", float: "a float", str: "a string"}.get(hint, "a value")


def _closest(word: Any, choices: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    guess = _closest(word, choices)
    return f" (did you mean '{guess}'?)" if guess else ""


def _unknown_key(cls: type, key: Any, prefix: str, where: str) -> InputError:
    valid = [f.name for f in dataclasses.fields(cls)]
    guess = _closest(key, valid)
    suggestion = f"{prefix}{guess}" if guess else None
    if guess is None and not prefix:
        # A section's key written at the top level: point at its real home.
        for section in valid:
            inner = _strip_optional(_hints(cls)[section])
            if dataclasses.is_dataclass(inner) and key in {f.name for f in dataclasses.fields(inner)}:
                suggestion = f"{section}.{key}"
                break
    hint = f"did you mean '{suggestion}'?" if suggestion else "valid keys: " + ", ".join(valid)
    return InputError(f"{where}: {prefix}{_key_text(key)}: unknown key ({hint})")


def _build(cls: type, raw: Any, prefix: str, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys, types and ranges field by field."""
    section = prefix[:-1] or "recipe"
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: {section}: expected a mapping, got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _unknown_key(cls, key, prefix, where)
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            kwargs[name] = value = _coerce(raw[name], _hints(cls)[name], key, where)
            check = f.metadata.get("check")
            values = value if isinstance(value, list) else [value]
            for v in values:
                if check is not None and v is not None and not check(v):
                    raise InputError(f"{where}: {key}: expected {check.describe()}, got {_show(v)}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = _hints(cls)[name]
            what = "section" if dataclasses.is_dataclass(hint) else f"key ({_describe(hint)})"
            raise InputError(f"{where}: {key}: missing required {what}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """``value`` converted to ``hint`` (YAML scalars are forgiving: 2 -> 2.0, "1e-4" -> 1e-4)."""

    def fail(extra: str = "") -> InputError:
        return InputError(f"{where}: {key}: expected {_describe(hint)}, got {_show(value)}{extra}")

    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        _check_plain(value, key, where)
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]: X's own, more precise, messages
            return _coerce(value, members[0], key, where)
        # Members of the value's own type first, so "all-linear" stays a str in list[str] | str.
        members.sort(key=lambda a: not _is_instance(value, a))
        for member in members:
            try:
                return _coerce(value, member, key, where)
            except InputError:
                continue
        raise fail()
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", where)
    if origin is Literal:
        if value is False and "no" in args:  # YAML 1.1 reads a bare `no` as false
            return "no"
        if isinstance(value, str) and value in args:
            return value
        raise fail(_did_you_mean(value, args) if isinstance(value, str) else "")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise fail()
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail()
        return {_coerce(k, args[0], key, where): _coerce(v, args[1], f"{key}.{_key_text(k)}", where)
                for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):  # e.g. a numeric revision
            return str(value)
        raise fail()
    if hint in (int, float):
        number = _to_number(value)
        if number is None or (hint is int and not float(number).is_integer()):
            raise fail()
        return int(number) if hint is int else float(number)
    raise TypeError(f"recipes: no coercion for type {hint!r} at {key}")  # a schema bug, not user input


def _is_instance(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (list, dict):
        return isinstance(value, origin)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def _to_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _check_plain(value: Any, key: str, where: str) -> None:
    """Free-form values (model.config, smoke) must be YAML scalars, lists and mappings with string keys."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{key}[{i}]", where)
        return
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: {key}: expected string keys, got {_show(k)}")
            _check_plain(v, f"{key}.{_key_text(k)}", where)
        return
    raise InputError(f"{where}: {key}: expected a number, string, boolean, list or mapping, got {_show(value)}")


# ---------------------------------------------------------------------------- cross-field checks
def _error(where: str, key: str, message: str) -> InputError:
    return InputError(f"{where}: {key}: {message}" if where else f"{key}: {message}")


# Keys that act only for some values of a selector: set to anything but their default elsewhere, they
# would do nothing, so the recipe is refused (a key the user believes in must not be silently ignored).
_MASKING = ("mlm_nsp", "sop", "mlm", "span_mlm")
_APPLIES_TO = {
    ("objective", "name"): {
        "mlm_probability": _MASKING, "mask_replace_prob": _MASKING, "random_replace_prob": _MASKING,
        "whole_word_mask": ("mlm_nsp", "sop", "mlm"),  # span_mlm always masks whole words
        "geometric_p": ("span_mlm",), "max_span_length": ("span_mlm",),
        "nsp_probability": ("mlm_nsp",), "short_seq_probability": ("mlm_nsp", "sop"),
        "noise_density": ("span_corruption",), "mean_noise_span_length": ("span_corruption",),
        "denoisers": ("ul2",),
    },
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
                raise _error(where, f"{section_name}.{key}", f"has no effect with {section_name}.{selector}: {chosen} "
                             f"(it applies to {', '.join(applies)}); remove it")


def _validate(r: Recipe, where: str) -> None:
    """Checks that need more than one key; run after every field has its type."""
    _validate_applicable(r, where)
    family = r.model.family
    if r.kind == "pretrain":
        if r.objective is None:
            raise _error(where, "objective", "required for kind: pretrain (objective.name: one of "
                         + ", ".join(OBJECTIVE_FAMILY) + ")")
        if r.task is not None:
            raise _error(where, "task", "not used by kind: pretrain (remove it, or use kind: finetune)")
        wanted = OBJECTIVE_FAMILY[r.objective.name]
        if wanted != family:
            raise _error(where, "objective.name", f"{r.objective.name} needs model.family: {wanted}, got {family}")
        if r.objective.mask_replace_prob + r.objective.random_replace_prob > 1:
            raise _error(where, "objective.random_replace_prob", "mask_replace_prob + random_replace_prob must be <= 1")
        if r.objective.name == "ul2":  # each denoiser's lengths must fit max_seq_length, before any data is read
            from hfpipe.data.ul2 import UL2_DENOISERS, check_denoisers

            try:
                check_denoisers(r.objective.denoisers or UL2_DENOISERS, r.objective.max_seq_length,
                                "objective.denoisers")
            except InputError as e:
                raise InputError(f"{where}: {e}" if where else str(e)) from None
    else:
        if r.objective is not None:
            raise _error(where, "objective", f"only for kind: pretrain, got kind: {r.kind}")
        if r.task is None:
            raise _error(where, "task", f"required for kind: {r.kind} (task.name: a GLUE task, squad, squad_v2, sft, ner or pos)")
        _validate_task(r, where)
    if r.kind != "icl" and r.icl is not None:
        raise _error(where, "icl", f"only for kind: icl, got kind: {r.kind}")
    if r.kind == "icl":
        _validate_icl(r, where)

    q = r.quantization
    if q.load_in_4bit and q.load_in_8bit:
        raise _error(where, "quantization", "load_in_4bit and load_in_8bit are exclusive: choose one")
    if (q.load_in_4bit or q.load_in_8bit) and r.kind != "icl" and r.peft.method == "none":
        raise _error(where, "peft.method",
                     "a quantized model cannot be trained in full: choose an adapter, e.g. lora (QLoRA)")

    _validate_paths(r, where)
    d = r.data
    if d.dataset is not None and (d.train_files or d.validation_files):
        raise _error(where, "data.dataset", "give a Hub dataset or local train/validation files, not both")
    if d.sources and (d.dataset is not None or d.train_files):
        raise _error(where, "data.sources", "a mixture replaces data.dataset and data.train_files: give one of them")
    for i, source in enumerate(d.sources):
        if (source.dataset is None) == (not source.files):
            raise _error(where, f"data.sources[{i}]", "expected exactly one of dataset (a Hub name) or files")
        for j, name in enumerate(source.files):
            _check_data_file(name, f"data.sources[{i}].files[{j}]", where)
    if r.hub.push and not r.hub.repo_id:
        raise _error(where, "hub.repo_id", "required when hub.push is true (e.g. my-org/my-model)")
    if r.hub.repo_id is not None and not _is_repo_id(r.hub.repo_id):
        raise _error(where, "hub.repo_id", f"expected 'name' or 'org/name', got {_show(r.hub.repo_id)}")
    _validate_train(r.train, where)
    # The smoke section is checked on every load, so a typo there shows before anyone runs --smoke.
    for key, value in _flatten(r.smoke).items():
        hint = _hint_for(key, f"{where}: smoke")
        if not dataclasses.is_dataclass(_strip_optional(hint)):
            _coerce(value, hint, key, f"{where}: smoke")


def _validate_task(r: Recipe, where: str) -> None:
    task, family = r.task, r.model.family
    valid = (*glue_task_names(), *SQUAD_TASKS) + ((SFT_TASK, *TAGGING_TASKS) if r.kind == "finetune" else ())
    if task.name not in valid:
        raise _error(where, "task.name", f"unknown task {_show(task.name)}{_did_you_mean(task.name, valid)}; known: "
                     + ", ".join(valid))
    if task.name in SQUAD_TASKS and task.doc_stride >= task.max_seq_length:
        raise _error(where, "task.doc_stride",
                     f"must be smaller than task.max_seq_length ({task.max_seq_length}), got {task.doc_stride}")
    if task.name == SFT_TASK and family != "decoder":
        raise _error(where, "model.family", f"sft (instruction tuning) trains a decoder, got {family}")
    if task.name in TAGGING_TASKS and family != "encoder" and r.model.name_or_path is None:
        # hfpipe's decoder and seq2seq have no token-classification head; a checkpoint whose
        # transformers family has one (checked when it loads) may still be used.
        raise _error(where, "model.family", f"{task.name} (token tagging) needs an encoder to train from scratch, got "
                     f"{family}; or give model.name_or_path a checkpoint with a token-classification head")
    if task.pair_format == "gpt" and family != "decoder":
        raise _error(where, "task.pair_format",
                     f"gpt ([START] a [DELIM] b [EXTRACT], GPT-1) is for decoders, got model.family: {family}")
    if task.text_to_text and family != "seq2seq":
        raise _error(where, "task.text_to_text", f"text-to-text needs model.family: seq2seq, got {family}")
    if task.name in SQUAD_TASKS and family == "seq2seq":
        if task.text_to_text is False:
            raise _error(where, "task.text_to_text", "an encoder-decoder answers SQuAD by generating the answer's "
                         "text: expected true (span extraction needs model.family encoder or decoder)")
        defaults = TaskSection(name=task.name)
        for key in ("n_best_size", "null_score_diff_threshold"):
            if getattr(task, key) != getattr(defaults, key):
                raise _error(where, f"task.{key}", "scores extracted spans and has no effect on generated "
                             "answers (text-to-text SQuAD); remove it")


def _validate_icl(r: Recipe, where: str) -> None:
    task, icl = r.task, r.icl or IclSection()
    if r.model.family == "encoder":
        raise _error(where, "model.family", "icl scores label words with a language model: needs decoder or seq2seq")
    if r.peft.method != "none":
        raise _error(where, "peft.method", "icl trains nothing: expected none")
    if task.name in SQUAD_TASKS or task.name == "stsb":
        raise _error(where, "task.name",
                     f"icl compares label words: expected a GLUE classification task, got {task.name}")
    if icl.template is not None:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(icl.template) if f is not None}
        except ValueError as e:
            raise _error(where, "icl.template",
                         f"not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
        unknown = sorted(names - set(_ICL_PLACEHOLDERS))
        if unknown:
            raise _error(where, "icl.template", f"unknown placeholder {{{unknown[0]}}}; allowed: "
                         + ", ".join("{" + p + "}" for p in _ICL_PLACEHOLDERS))
        if "label" not in names:
            raise _error(where, "icl.template", "must contain {label} (where the label word goes)")
        if task.name in _SINGLE_SENTENCE_GLUE and "text_b" in names:
            raise _error(where, "icl.template", f"{task.name} has one text: use {{text}}, not {{text_b}}")
        if task.name not in _SINGLE_SENTENCE_GLUE and not {"text_a", "text_b"} <= names:
            raise _error(where, "icl.template", f"{task.name} classifies a pair: use {{text_a}} and {{text_b}}")
    if icl.verbalizer is not None:
        labels = _glue_label_names(task.name)
        if labels is not None and set(icl.verbalizer) != set(labels):
            raise _error(where, "icl.verbalizer", f"expected one word for each label of {task.name}: "
                         + ", ".join(labels) + f"; got {', '.join(icl.verbalizer)}")


def _glue_label_names(task: str) -> list[str] | None:
    """Label names from hfpipe.tasks.glue's table when it provides them (None: not checkable here)."""
    try:
        from hfpipe.tasks.glue import GLUE_TASKS
    except ImportError:  # the check is an early convenience; the ICL code checks again when it runs
        return None
    info = GLUE_TASKS.get(task)
    names = info.get("label_names") if isinstance(info, Mapping) else getattr(info, "label_names", None)
    return [str(n) for n in names] if names else None


def _validate_train(t: TrainSection, where: str) -> None:
    if t.max_steps == 0 or t.max_steps < -1:
        raise _error(where, "train.max_steps",
                     f"expected -1 (use num_train_epochs) or a positive integer, got {t.max_steps}")
    if t.warmup_ratio and t.warmup_steps:
        raise _error(where, "train.warmup_steps", "give warmup_steps or warmup_ratio, not both")
    if t.load_best_model_at_end and t.save_steps % t.eval_steps:
        raise _error(where, "train.save_steps",
                     f"must be a multiple of train.eval_steps ({t.eval_steps}) when load_best_model_at_end is true")
    from transformers.trainer_utils import SchedulerType  # lazy, and the allowed names stay transformers' own
    from transformers.training_args import OptimizerNames

    for key, enum in (("lr_scheduler_type", SchedulerType), ("optim", OptimizerNames)):
        value = getattr(t, key)
        allowed = [member.value for member in enum]
        if value not in allowed:
            raise _error(where, f"train.{key}", f"unknown value {_show(value)}{_did_you_mean(value, allowed)}; allowed: "
                         + ", ".join(allowed))


def _is_repo_id(text: str) -> bool:
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and all(p and all(c.isalnum() or c in "-_." for c in p) for p in parts)


# ---------------------------------------------------------------------------- paths
def _looks_local(text: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else with a path shape is meant as a local path."""
    return (text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..")
            or text.count("/") >= 2 or "\\" in text)


def _exists(text: str, kind: Literal["any", "file", "dir", "glob"] = "any") -> bool:
    try:
        path = Path(text).expanduser()
        if kind == "glob":
            return bool(glob.glob(str(path)))
        return {"any": path.exists, "file": path.is_file, "dir": path.is_dir}[kind]()
    except (OSError, ValueError, RuntimeError):  # NUL bytes, over-long names, unknown ~user: no such path
        return False


def _check_model_path(text: str, key: str, where: str) -> None:
    if _exists(text):
        if key == "model.name_or_path" and Path(text).is_dir() and not (Path(text) / "config.json").is_file() \
                and not (Path(text) / "adapter_config.json").is_file():
            raise _error(where, key, f"{_show(text)} holds no config.json; expected a saved model checkpoint "
                         "(a folder written by save_pretrained or hfpipe)")
        return
    base = text.rsplit("@", 1)[0] if "@" in text else text  # "org/name@revision"
    if _looks_local(base) and not _exists(base):
        raise _error(where, key, f"no such directory {_show(base)} (a local path; Hub ids look like org/name)")


def _check_data_file(text: str, key: str, where: str) -> None:
    if "://" in text:  # a remote URL (hf://, https://): datasets resolves it
        return
    if glob.has_magic(text):
        if not _exists(text, "glob"):
            raise _error(where, key, f"no file matches {_show(text)}")
    elif not _exists(text, "file"):
        raise _error(where, key, f"no such file {_show(text)}")


def _validate_paths(r: Recipe, where: str) -> None:
    for section in ("model", "tokenizer"):
        value = getattr(r, section).name_or_path
        if value is not None:
            _check_model_path(value, f"{section}.name_or_path", where)
    for key in ("train_files", "validation_files"):
        for i, name in enumerate(getattr(r.data, key)):
            _check_data_file(name, f"data.{key}[{i}]", where)
    resume = r.train.resume
    if isinstance(resume, str) and not _exists(resume, "dir") and _looks_local(resume.rsplit("@", 1)[0]):
        raise _error(where, "train.resume",
                     f"no such checkpoint directory {_show(resume)} (or true, or a Hub id org/name[@revision])")


# ---------------------------------------------------------------------------- resolved defaults
def _resolve_defaults(r: Recipe) -> None:
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
