"""What every verb builds from a recipe before it trains or evaluates: the tokenizer and the model.

    tokenizer = load_tokenizer(recipe, texts)        # given, the checkpoint's, the run's own, or trained
    config = new_model_config(recipe, tokenizer, positions_needed=512)   # a fresh model's config
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSequenceClassification, texts,
                                                num_labels=2)            # the finetuning verbs

Checks that protect the run before any weight loads live here too: ``model.config`` overrides
must name fields of the family's config, and a learned position table must hold the longest input.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any, Callable

from transformers import AutoConfig, AutoTokenizer

from . import models
from .adapters import quantization_config, quantized_load_kwargs, virtual_positions
from .checkpoints import holder_of, hub_errors_as_input_errors, is_adapter_folder, load_model, merged
from .errors import InputError
from .recipes import DEFAULT_VOCAB_SIZE

logger = logging.getLogger("hfpipe.build")


def load_tokenizer(recipe, texts, output_dir=None):
    """The recipe's tokenizer, the starting checkpoint's, or one trained on ``texts``.

    Under several processes only the main one trains (into ``output_dir/tokenizer``); the
    others load its result, so every rank maps text to the same ids.
    """
    source = recipe.tokenizer.name_or_path or recipe.model.name_or_path
    if source:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(source)
        holder = holder_of(name, "tokenizer_config.json")
        if holder != name:  # an adapter folder in peft's layout: its base's tokenizer, at the base's revision
            name, revision = holder, None
        with hub_errors_as_input_errors(name):
            return AutoTokenizer.from_pretrained(name, revision=revision)
    folder = Path(output_dir or recipe.train.output_dir) / "tokenizer"
    if recipe.train.resume:
        # A resumed run must see the very ids it was trained with: reuse, never retrain. Trainer
        # saves the tokenizer into every checkpoint, so one pulled from the Hub carries it too.
        from .training.output_dir import last_complete_checkpoint

        resumed = recipe.train.resume if isinstance(recipe.train.resume, str) else None
        for saved in (folder, resumed, last_complete_checkpoint(folder.parent)):
            if saved and (Path(saved) / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(saved)
    return train_shared_tokenizer(recipe, texts, folder)


def train_shared_tokenizer(recipe, texts, folder: Path):
    """Trained once, by the main process of the whole run, and sent to every process: WordPiece and
    Unigram training are not reproducible (tied pieces get other ids from one run to the next), so a
    tokenizer per machine would map text to other ids, and other machines may not see this disk.
    Each machine's first process keeps a copy in its own ``folder``, for resuming there."""
    from accelerate.utils import broadcast_object_list

    from .tokenization import train_tokenizer
    from .training.output_dir import distributed_state

    state = distributed_state(recipe)
    tokenizer = None
    if state.is_main_process:
        logger.info("training a %s tokenizer on the training text", recipe.model.family)
        tokenizer = train_tokenizer(
            texts,
            family=recipe.model.family,
            vocab_size=recipe.tokenizer.vocab_size or DEFAULT_VOCAB_SIZE[recipe.model.family],
            min_frequency=recipe.tokenizer.min_frequency,
            lowercase=recipe.tokenizer.lowercase,
        )
        tokenizer.save_pretrained(folder)
    if state.num_processes == 1:
        return tokenizer
    files = [{p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if state.is_main_process else None]
    files = broadcast_object_list(files)[0]
    if state.is_local_main_process and not state.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            if not ((folder / name).is_file() and (folder / name).read_bytes() == data):  # shared disk: already there
                (folder / name).write_bytes(data)
    state.wait_for_everyone()
    return tokenizer if state.is_main_process else AutoTokenizer.from_pretrained(folder)


def _config_fields(config_class) -> set[str]:
    known = set()
    for cls in config_class.__mro__:
        if "__init__" in cls.__dict__:
            known |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    return known | {"num_labels", "id2label", "label2id", "problem_type"}


def _refuse_unknown(keys, known: set[str], what: str) -> None:
    import difflib

    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(f"model.config: unknown {what} config field {key!r}{hint}")


def check_config_keys(recipe) -> None:
    """model.config overrides must name fields of the family's config (no silent typos)."""
    _refuse_unknown(recipe.model.config, _config_fields(models.CONFIG_CLASSES[recipe.model.family]),
                    recipe.model.family)


def check_checkpoint_config_keys(recipe, config) -> None:
    """... and of a checkpoint's own config: transformers hands a key its config lacks to the model's
    __init__, which fails with a TypeError after the weights are read (e.g. hfpipe's classifier_pooling
    on a BERT checkpoint)."""
    known = _config_fields(type(config)) | set(config.to_dict())
    _refuse_unknown(recipe.model.config, known, f"{recipe.model.name_or_path} ({type(config).__name__})")


def new_model_config(recipe, tokenizer, positions_needed: int, **overrides):
    """The config of a new model of the recipe's family and size, sized from ``tokenizer`` (vocabulary,
    special ids) with a position table of at least ``positions_needed`` (128 at least)."""
    check_config_keys(recipe)
    values = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
              "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
              **recipe.model.config, **overrides}
    if recipe.model.family == "seq2seq":
        values["decoder_start_token_id"] = tokenizer.pad_token_id  # T5 starts decoding from the pad id
    else:
        values.setdefault("max_position_embeddings", max(positions_needed, 128))
    return models.config_for(recipe.model.family, recipe.model.size, **values)


def load_tokenizer_and_model(recipe, auto_class, texts: Callable[[], Any], **model_kwargs):
    """From ``model.name_or_path`` (a new head where the checkpoint has none), or -- no checkpoint
    (``--smoke``) -- a tiny model of the family with a tokenizer trained on the task's text."""
    positions_needed = recipe.task.max_seq_length + virtual_positions(recipe.peft)
    # the recipe's tokenizer, the checkpoint's, the run's own on resume, or one trained on the task
    tokenizer = load_tokenizer(recipe, texts(), Path(recipe.train.output_dir))
    if recipe.model.name_or_path:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(recipe.model.name_or_path)
        config = AutoConfig.from_pretrained(holder_of(name, "config.json"), revision=revision,
                                            trust_remote_code=recipe.model.trust_remote_code)
        check_positions(recipe, config, positions_needed)
        check_checkpoint_config_keys(recipe, config)
        # model.config overrides apply to a checkpoint's config too (e.g. finetuning dropout)
        model = load_model(
            auto_class, name, revision=revision, trust_remote_code=recipe.model.trust_remote_code,
            **quantized_load_kwargs(recipe.quantization), **{**recipe.model.config, **model_kwargs},
        )
        if is_adapter_folder(name):  # finetuning goes on from the adapter folded into its base
            model = merged(model, name)
    else:
        model = auto_class.from_config(new_model_config(recipe, tokenizer, positions_needed, **model_kwargs))
        if quantization_config(recipe.quantization) is not None:
            # bitsandbytes quantizes while loading: save the fresh tiny model and load it back.
            base_dir = Path(recipe.train.output_dir) / "base-model"
            model.save_pretrained(base_dir)
            model = auto_class.from_pretrained(base_dir, **quantized_load_kwargs(recipe.quantization))
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def check_positions(recipe, config, needed: int) -> None:
    """A learned position table must cover the longest input plus any virtual tokens; past its end
    the embedding lookup fails mid-training with an IndexError (relative positions have no end)."""
    table = getattr(config, "max_position_embeddings", None)
    if table is None or needed <= table:
        return
    virtual = virtual_positions(recipe.peft)
    extra = f" + peft.num_virtual_tokens {virtual}" if virtual else ""
    raise InputError(f"task.max_seq_length {recipe.task.max_seq_length}{extra} = {needed} positions, but "
                     f"{recipe.model.name_or_path or 'the model'} has {table}: lower task.max_seq_length"
                     + (" or peft.num_virtual_tokens" if virtual else ""))


def save_random_twin(checkpoint: str | Path, output_dir: str | Path, seed: int = 0,
                     keep_layers: int | None = None, keep_word_embeddings: bool = True) -> Path:
    """The control of "does pretraining pay off?": ``checkpoint``'s class, config and tokenizer with
    freshly initialised weights, saved to ``output_dir``. Finetuned by the same recipe, the two differ
    only in what pretraining put into the weights.

    ``keep_layers=k`` keeps the pretrained embeddings and the first k blocks and draws only the blocks
    above afresh (re-initialising the top layers, Zhang et al. 2021, "Revisiting few-sample BERT
    fine-tuning"): it tells which of the pretrained weights pay off. ``keep_word_embeddings=False``
    draws the word embeddings afresh as well (position tables and blocks stay pretrained)."""
    import torch

    config = AutoConfig.from_pretrained(checkpoint)
    model_class = getattr(models, config.architectures[0], None)
    if model_class is None:
        raise InputError(f"{checkpoint}: {config.architectures[0]} is not one of hfpipe's models; expected a "
                         "checkpoint hfpipe pretrained")
    torch.manual_seed(seed)
    model = model_class(config)  # __init__ initialises the weights afresh
    if keep_layers is not None:
        layers = config.num_hidden_layers
        if not 0 <= keep_layers <= layers:
            raise InputError(f"keep_layers {keep_layers}: expected 0 to {layers}, the blocks of {checkpoint}")
        pretrained = model_class.from_pretrained(checkpoint).state_dict()
        model.load_state_dict({name: weight for name, weight in pretrained.items() if _below(name, keep_layers)
                               and (keep_word_embeddings or not _word_embeddings(name))}, strict=False)
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(output_dir)
    return Path(output_dir)


def _word_embeddings(name: str) -> bool:
    return name.endswith(("word_embeddings.weight", "shared.weight"))


def _below(name: str, keep_layers: int) -> bool:
    """Whether parameter ``name`` lies in the embeddings or in one of the first ``keep_layers`` blocks
    (of the encoder and of the decoder alike; T5's relative position table belongs to its first block)."""
    block = re.search(r"\.layers\.(\d+)\.", name)
    if block:
        return int(block.group(1)) < keep_layers
    if "relative_position_bias" in name:
        return keep_layers > 0
    return "embeddings" in name or name.endswith("shared.weight")
