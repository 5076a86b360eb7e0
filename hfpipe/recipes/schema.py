"""The recipe's schema: one dataclass per section, each field with its type, default and a one-line comment.

``Recipe.from_dict`` builds one with the typed-YAML engine (:mod:`hfpipe.recipes.engine`), then
applies the cross-field rules and the defaults that depend on other keys (:mod:`hfpipe.recipes.rules`,
which registers them here).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from .engine import (
    AT_LEAST_ONE,
    HALF_OPEN_UNIT,
    NON_NEGATIVE,
    POSITIVE,
    Range,
    Registry,
    build,
    checked,
)

Kind = Literal["pretrain", "finetune", "icl"]
Family = Literal["encoder", "decoder", "seq2seq"]
Size = Literal["tiny", "small", "base", "large"]
PeftMethod = Literal["none", "lora", "prefix_tuning", "prompt_tuning", "ia3"]
MixedPrecision = Literal["no", "bf16", "fp16"]

DEFAULT_VOCAB_SIZE = {"encoder": 30522, "decoder": 50257, "seq2seq": 32000}  # BERT, GPT-2, T5


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


@dataclass
class ObjectiveSection:
    """What every pretraining objective has. Each objective is a subclass in ``hfpipe/objectives/<name>.py``
    with ``name: Literal["<name>"]`` and its own keys, registered in :data:`OBJECTIVES`; ``objective.name``
    picks it, and only its keys may appear in the recipe (a key of another objective would do nothing).
    The checks and the family are the recipe's; what the objective does with data and models is
    hfpipe.objectives.Objective's."""

    family: ClassVar[str]  # the model family it trains: encoder | decoder | seq2seq

    name: str  # one of OBJECTIVES; required
    max_seq_length: int = checked(128, AT_LEAST_ONE)  # tokens per example; span_corruption: encoder input (512: 568 raw)

    def check(self, where: str) -> None:
        """Rules between this section's own keys, run after every key has its type (raise InputError)."""


# objective.name -> its section: the tagged union of every registered objective (hfpipe/objectives/)
OBJECTIVES = Registry(ObjectiveSection, "name")


@dataclass
class SourceSection:
    """One corpus of a weighted mixture (``data.sources``)."""

    weight: float = checked(check=POSITIVE)  # relative share of documents; normalised over the sources; required
    dataset: str | None = None  # Hub dataset name (or files)
    dataset_config: str | None = None  # Hub dataset config
    files: list[str] = field(default_factory=list)  # local files (globs allowed)
    embedded: bool = False  # hfpipe's embedded corpus (the standard library's docstrings) instead
    text_column: str | None = None  # its text column; None: data.text_column
    name: str | None = None  # how the logs and train_results.json name it; None: the dataset or first file


@dataclass
class DataSection:
    dataset: str | None = None  # Hub dataset name; None and no files: hfpipe's embedded sample data
    dataset_config: str | None = None  # Hub dataset config, e.g. "wikitext-103-raw-v1", "sst2"
    train_files: list[str] = field(default_factory=list)  # local files (globs allowed); replace data.dataset
    validation_files: list[str] = field(default_factory=list)  # local files; MNLI: [matched, mismatched]
    text_column: str = "text"  # pretraining: the column holding raw text
    validation_split_percentage: float = checked(5.0, Range(0, 100, high_open=True))  # % held out if no validation set
    max_train_samples: int | None = checked(None, AT_LEAST_ONE)  # truncate the training set (debugging)
    max_eval_samples: int | None = checked(None, AT_LEAST_ONE)  # truncate the evaluation set
    streaming: bool = False  # stream a Hub dataset instead of downloading it whole
    validation_samples: int | None = checked(None, AT_LEAST_ONE)  # hold out the first N documents for evaluation
    sources: list[SourceSection] = field(default_factory=list)  # weighted mixture: [{dataset|files, weight}, ...]
    preprocessing_num_workers: int | None = checked(None, AT_LEAST_ONE)  # datasets.map num_proc


@dataclass
class TaskSection:
    """What every finetuning task has. Each task is a subclass in ``hfpipe/tasks/<name>.py`` with
    ``name: Literal[...]`` (its names) and its own keys, registered in :data:`TASKS`; ``task.name`` picks it.
    Another task's key is refused when set (it would do nothing); at its default it is dropped, so the
    recipe.yaml of runs from before the split (one flat section, every key written) still loads. The
    checks are the recipe's; what a task does with data and models is hfpipe.tasks.base.Task's."""

    kinds: ClassVar[tuple[str, ...]] = ("finetune",)  # the recipe kinds that take it (icl: GLUE)

    name: str  # one of TASKS: cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli|squad|squad_v2|sft|ner|pos|dpo; required
    max_seq_length: int = checked(128, AT_LEAST_ONE)  # tokens per (pair of) input text(s)
    pair_format: Literal["plain", "gpt"] | None = None  # gpt: [START] a [DELIM] b [EXTRACT] (GPT-1); None: gpt for decoders
    text_to_text: bool | None = None  # seq2seq: labels as words, generated (T5); None: true for seq2seq

    def check(self, recipe, where: str) -> None:
        """Rules between this task's keys and the rest of the recipe (raise InputError)."""

    def check_icl(self, recipe, where: str) -> None:
        """Rules for in-context evaluation (kind: icl) of this task: its template and label words."""

    def resolve_defaults(self, recipe) -> None:
        """Fill in this task's defaults that depend on other keys (the saved recipe says what ran)."""

    def smoke_overrides(self) -> dict[str, Any]:
        """This task's keys that ``--smoke`` shrinks, as dotted keys."""
        return {}


# task.name -> its section: the tagged union of every registered task (hfpipe/tasks/)
TASKS = Registry(TaskSection, "name", noun="task", keeps_defaults=True)


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
    # Cramming's budget: "30m", "1.5h", "1800s". Training stops when it is spent (max_steps stays a
    # bound) and the schedule (linear, cosine or constant; warmup_ratio of the budget) runs over it.
    time_budget: str | None = None

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
    objective: Annotated[ObjectiveSection, OBJECTIVES] | None = None  # required for pretrain, else not allowed; by name
    data: DataSection = field(default_factory=DataSection)
    task: Annotated[TaskSection, TASKS] | None = None  # required for finetune and icl; not for pretrain; by name
    peft: PeftSection = field(default_factory=PeftSection)
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    train: TrainSection = field(default_factory=TrainSection)
    icl: IclSection | None = None  # icl only (defaults filled in for kind icl)
    hub: HubSection = field(default_factory=HubSection)
    smoke: dict[str, Any] = field(default_factory=dict)  # this recipe's own --smoke overrides: {dotted.key: value}

    # The rules between keys, and the defaults that depend on other keys: hfpipe.recipes.rules, which reads
    # the sections above, hands them over as it loads (with the recipes package), so the schema imports
    # nothing of it.
    validate_rules: ClassVar[Callable[[Recipe, str], None]]
    resolve_defaults: ClassVar[Callable[[Recipe], None]]

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>", cross_checks: bool = True) -> Recipe:
        """Validate a plain mapping (as parsed from YAML) and build the recipe; raise InputError.
        ``cross_checks=False`` checks keys and types only, not the rules between fields (--smoke's
        first pass: the rules then judge the recipe as smoke will run it)."""
        recipe = build(cls, d, "", source)
        if cross_checks:
            cls.validate_rules(recipe, source)
        cls.resolve_defaults(recipe)
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-safe); ``Recipe.from_dict(r.to_dict()) == r``."""
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        """Write the fully resolved recipe (what the run used) as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
