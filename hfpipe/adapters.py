"""Parameter-efficient finetuning and quantization from a recipe's ``peft:`` and
``quantization:`` sections, through peft and bitsandbytes.

    lora            W = W0 + B·A·(alpha/r), W0 frozen           peft.LoraConfig
    ia3             learned rescaling of keys, values, MLP      peft.IA3Config
    prefix_tuning   trainable key/value prefixes at every layer peft.PrefixTuningConfig
    prompt_tuning   trainable input embeddings                  peft.PromptTuningConfig
    QLoRA           base weights in 4-bit NF4 + LoRA            BitsAndBytesConfig + prepare_model_for_kbit_training

Works on hfpipe's families and on transformers' own models: default target modules are found
by name (hfpipe/LLaMA q_proj/v_proj, BERT query/value, GPT-2 c_attn, T5 q/v).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from .errors import InputError
from .heads import head_for, head_for_peft_task

logger = logging.getLogger("hfpipe.adapters")

# Heads trained in full besides the adapter, and kept out of quantization.
HEAD_MODULES = ["classifier", "score", "qa_outputs", "pooler", "lm_head", "mlm_head", "nsp_head"]

# Attention projections LoRA adapts by default (the LoRA paper adapts W_q and W_v), by naming scheme.
_ATTENTION_NAMES = [(("q_proj", "v_proj"), "q_proj"), (("query", "value"), "query"), (("c_attn",), "c_attn"),
                    (("q", "v"), "SelfAttention.q")]
_IA3_NAMES = [(["k_proj", "v_proj", "down_proj"], ["down_proj"]), (["key", "value", "output.dense"], ["output.dense"]),
              (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]), (["k", "v", "wo"], ["wo"])]


def _module_names(model) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
            or type(module).__name__ in ("Conv1D", "Linear4bit", "Linear8bitLt")]


def default_target_modules(model) -> list[str]:
    names = _module_names(model)
    for targets, probe in _ATTENTION_NAMES:
        if any(name.endswith(probe) for name in names):
            return list(targets)
    raise InputError("peft.target_modules: no known attention projection names in this model; set them explicitly")


def _ia3_targets(model) -> tuple[list[str], list[str]]:
    names = _module_names(model)
    for targets, feedforward in _IA3_NAMES:
        if any(name.endswith(targets[0]) for name in names):
            return targets, feedforward
    raise InputError("peft.target_modules: no known module names for IA3 in this model; set them explicitly")


def task_type_for(model):
    from peft import TaskType

    head = head_for(type(model).__name__)
    return TaskType[head.peft_task] if head is not None and head.peft_task else TaskType.FEATURE_EXTRACTION


def peft_config(section, model):
    """A recipe's ``peft`` section -> the peft config for ``model``."""
    import peft

    task_type = task_type_for(model)
    heads = section.modules_to_save
    if section.method == "lora":
        return peft.LoraConfig(task_type=task_type, r=section.r, lora_alpha=section.lora_alpha,
                               lora_dropout=section.lora_dropout,
                               target_modules=section.target_modules or default_target_modules(model),
                               modules_to_save=heads)
    if section.method == "ia3":
        targets, feedforward = _ia3_targets(model)
        return peft.IA3Config(task_type=task_type, target_modules=section.target_modules or targets,
                              feedforward_modules=feedforward if not section.target_modules else [],
                              modules_to_save=heads)
    if section.method == "prefix_tuning":
        return peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=section.num_virtual_tokens)
    if section.method == "prompt_tuning":
        # Text initialisation happens in apply_peft from the run's own tokenizer (see there).
        return peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=section.num_virtual_tokens)
    raise InputError(f"peft.method: unknown method {section.method!r}")


def virtual_positions(section) -> int:
    """Positions the method's virtual tokens occupy ahead of the input: prompt tuning prepends its
    embeddings, prefix tuning's keys and values shift the input's positions by their length."""
    return section.num_virtual_tokens if section.method in ("prefix_tuning", "prompt_tuning") else 0


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def init_prompt_from_text(wrapped, tokenizer, text: str) -> None:
    """Prompt tuning's TEXT initialisation: the virtual tokens start as the embeddings of ``text``'s
    tokens, repeated or cut to their number (peft's algorithm). peft would load the tokenizer again by
    path, and a tokenizer trained in this run, or a model's folder without one, has no such path."""
    virtual = wrapped.peft_config["default"].num_virtual_tokens * wrapped.peft_config["default"].num_transformer_submodules
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError(f"peft.prompt_tuning_init_text: {text!r} gives no tokens")
    ids = (ids * math.ceil(virtual / len(ids)))[:virtual]
    embeddings = wrapped.get_input_embeddings()
    with torch.no_grad():
        wrapped.prompt_encoder["default"].embedding.weight.copy_(
            embeddings(torch.tensor(ids, device=embeddings.weight.device)))


def apply_peft(model, section, tokenizer=None):
    """Wrap ``model`` as the recipe's ``peft`` section says (no-op for ``none``); logs the
    trainable share. ``tokenizer`` initialises prompt tuning from ``prompt_tuning_init_text``."""
    if section.method == "none":
        return model
    import peft

    wrapped = peft.get_peft_model(model, peft_config(section, model))
    if section.method == "prompt_tuning" and section.prompt_tuning_init_text:
        if tokenizer is None:
            raise InputError("peft.prompt_tuning_init_text: needs the run's tokenizer")
        init_prompt_from_text(wrapped, tokenizer, section.prompt_tuning_init_text)
    trainable, total = count_parameters(wrapped)
    message = f"peft {section.method}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.3f}%)"
    logger.info(message)
    print(message, flush=True)
    return wrapped


def quantization_config(section):
    """A recipe's ``quantization`` section -> transformers' BitsAndBytesConfig, or None."""
    if not (section.load_in_4bit or section.load_in_8bit):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise InputError("quantization: needs bitsandbytes; pip install 'hfpipe[quant]'") from error
    from transformers import BitsAndBytesConfig

    skip = section.llm_int8_skip_modules or HEAD_MODULES
    if section.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=section.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=getattr(torch, section.bnb_4bit_compute_dtype),
        llm_int8_skip_modules=skip,
    )


def quantized_load_kwargs(section) -> dict:
    """``from_pretrained`` kwargs that load a checkpoint quantized (CPU backend when no GPU)."""
    config = quantization_config(section)
    if config is None:
        return {}
    return {"quantization_config": config, "device_map": "auto" if torch.cuda.is_available() else "cpu"}


def prepare_quantized(model):
    """QLoRA's preparation: norms in float32, input gradients on for checkpointing."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def merge_adapter(adapter_dir: str, destination: str):
    """``hfpipe merge``: fold a LoRA adapter into its base and save a standalone checkpoint."""
    import transformers
    from peft import PeftModel

    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise InputError(f"{adapter_dir}: no adapter_config.json; expected a PEFT adapter folder")
    adapter = json.loads(config_path.read_text())
    if adapter.get("peft_type") != "LORA":
        raise InputError(f"{config_path}: peft_type {adapter.get('peft_type')!r}; only LoRA adapters can be merged")
    base_name = adapter.get("base_model_name_or_path")
    head = head_for_peft_task(adapter.get("task_type"))
    auto_name = head.auto_class if head is not None else "AutoModel"
    base_source = base_name if base_name and Path(base_name).exists() else adapter_dir
    # hfpipe saves the finetuned base config (labels, added tokens) next to the adapter.
    kwargs = {}
    if (Path(adapter_dir) / "config.json").is_file():
        kwargs["config"] = transformers.AutoConfig.from_pretrained(adapter_dir)
    base = getattr(transformers, auto_name).from_pretrained(base_source, **kwargs)
    if len(base.get_input_embeddings().weight) != kwargs.get("config", base.config).vocab_size:
        base.resize_token_embeddings(kwargs["config"].vocab_size)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(destination)
    for source in (adapter_dir, base_source):
        try:
            transformers.AutoTokenizer.from_pretrained(source).save_pretrained(destination)
            break
        except (OSError, ValueError):
            continue
    return merged
