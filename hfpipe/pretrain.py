"""``hfpipe pretrain RECIPE``: raw text -> tokenizer -> objective examples -> Trainer.

    recipe.data       -> corpus.load_text_dataset        (Hub name, local files, or embedded text)
    recipe.tokenizer  -> tokenization.train_tokenizer    (or a saved one)
    recipe.objective  -> examples + collator             (one function per objective below)
    recipe.model      -> hfpipe.config_for(...)          (or from_pretrained)
    recipe.train      -> train.build_trainer             (Accelerate, checkpoints, resume)
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    set_seed,
)

from . import models
from .errors import InputError
from .train import add_perplexity, build_trainer, finish_run, prepare_output_dir

logger = logging.getLogger("hfpipe.pretrain")

# objective -> the Auto class of its model
AUTO_CLASS = {
    "mlm_nsp": AutoModelForPreTraining,
    "sop": AutoModelForPreTraining,
    "mlm": AutoModelForMaskedLM,
    "clm": AutoModelForCausalLM,
    "span_corruption": AutoModelForSeq2SeqLM,
    "prefix_lm": AutoModelForSeq2SeqLM,
}


@dataclass
class Examples:
    """What an objective hands the Trainer."""

    train: Any
    validation: Any | None
    collator: Callable
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None


def load_tokenizer(recipe, texts, output_dir=None):
    """The recipe's tokenizer, the starting checkpoint's, or one trained on ``texts``.

    Under several processes only the main one trains (into ``output_dir/tokenizer``); the
    others load its result, so every rank maps text to the same ids.
    """
    source = recipe.tokenizer.name_or_path or recipe.model.name_or_path
    if source:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(source)
        return AutoTokenizer.from_pretrained(name, revision=revision)
    folder = Path(output_dir or recipe.train.output_dir) / "tokenizer"
    if recipe.train.resume:
        # A resumed run must see the very ids it was trained with: reuse, never retrain. Trainer
        # saves the tokenizer into every checkpoint, so one pulled from the Hub carries it too.
        from .train import last_complete_checkpoint

        resumed = recipe.train.resume if isinstance(recipe.train.resume, str) else None
        for saved in (folder, resumed, last_complete_checkpoint(folder.parent)):
            if saved and (Path(saved) / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(saved)
    return train_shared_tokenizer(recipe, texts, folder)


def train_shared_tokenizer(recipe, texts, folder: Path):
    from accelerate import PartialState

    from .tokenization import train_tokenizer

    state = PartialState()
    with state.main_process_first():
        if not state.is_main_process:
            return AutoTokenizer.from_pretrained(folder)
        default_vocab = {"encoder": 30522, "decoder": 50257, "seq2seq": 32000}[recipe.model.family]
        logger.info("training a %s tokenizer on the training text", recipe.model.family)
        tokenizer = train_tokenizer(
            texts,
            family=recipe.model.family,
            vocab_size=recipe.tokenizer.vocab_size or default_vocab,
            min_frequency=recipe.tokenizer.min_frequency,
            lowercase=recipe.tokenizer.lowercase,
        )
        tokenizer.save_pretrained(folder)
        return tokenizer


def build_model(recipe, tokenizer, positions_needed: int):
    auto_class = AUTO_CLASS[recipe.objective.name]
    if recipe.model.name_or_path:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(recipe.model.name_or_path)
        model = auto_class.from_pretrained(name, revision=revision, trust_remote_code=recipe.model.trust_remote_code)
    else:
        special = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        check_config_keys(recipe)
        overrides = {"vocab_size": len(tokenizer), **special, **recipe.model.config}
        if recipe.model.family != "seq2seq":
            overrides.setdefault("max_position_embeddings", max(positions_needed, 128))
        if recipe.model.family == "seq2seq":
            overrides["decoder_start_token_id"] = tokenizer.pad_token_id
        config = models.config_for(recipe.model.family, recipe.model.size, **overrides)
        model = auto_class.from_config(config)
    embeddings = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > embeddings:
        raise InputError(
            f"tokenizer {recipe.tokenizer.name_or_path or '(trained)'} has {len(tokenizer)} entries but the "
            f"embedding of model {recipe.model.name_or_path or '(new)'} has {embeddings} rows; "
            "use the model's own tokenizer or a matching tokenizer.name_or_path"
        )
    return model


def check_config_keys(recipe) -> None:
    """model.config overrides must name fields of the family's config (no silent typos)."""
    import difflib

    config_class = models.CONFIG_CLASSES[recipe.model.family]
    known = set()
    for cls in config_class.__mro__:
        if "__init__" in cls.__dict__:
            known |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    known |= {"num_labels", "id2label", "label2id", "problem_type"}
    for key in recipe.model.config:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(f"model.config: unknown {recipe.model.family} config field {key!r}{hint}")


def token_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    chosen = labels != -100
    return float((predictions[chosen] == labels[chosen]).mean()) if chosen.any() else float("nan")


def _argmax(logits, labels):
    """Keep only argmaxes on the way to compute_metrics: full vocab logits would not fit."""
    if isinstance(logits, tuple):
        return tuple(x.argmax(-1) for x in logits if x is not None and x.dim() >= 2)
    return logits.argmax(-1)


def _lm_metrics(shift: bool):
    def compute(eval_pred):
        predictions, labels = eval_pred.predictions, eval_pred.label_ids
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        labels = labels[0] if isinstance(labels, tuple) else labels
        if shift:
            predictions, labels = predictions[:, :-1], labels[:, 1:]
        return {"token_accuracy": token_accuracy(predictions, labels)}

    return compute


def _bert_metrics(eval_pred):
    mlm_predictions, nsp_predictions = eval_pred.predictions[:2]
    labels, nsp_labels = eval_pred.label_ids
    return {
        "mlm_accuracy": token_accuracy(mlm_predictions, labels),
        "nsp_accuracy": float((nsp_predictions == nsp_labels).mean()),
    }


def _tokenized(recipe, corpus, tokenizer):
    from .data.corpus import tokenize_dataset

    return {
        split: tokenize_dataset(dataset, tokenizer, text_column=recipe.data.text_column,
                                num_proc=recipe.data.preprocessing_num_workers)
        for split, dataset in corpus.items()
    }


def _packed(recipe, corpus, tokenizer, block_size: int, eos: int | None):
    from .data.packing import pack_dataset

    out = {}
    for split, dataset in _tokenized(recipe, corpus, tokenizer).items():
        packed, stats = pack_dataset(dataset, block_size, eos_token_id=eos, desc=f"packing {split}")
        logger.info("%s: %d documents, %d tokens -> %d blocks of %d (%d tokens dropped, %.2f%%)", split,
                    stats.num_documents, stats.num_tokens, stats.num_blocks, block_size,
                    stats.num_dropped_tokens, 100 * stats.dropped_fraction)
        if len(packed) == 0:
            raise InputError(
                f"data: the {split} text holds {stats.num_tokens} tokens, fewer than one block of {block_size}; "
                "give more text or lower objective.max_seq_length"
            )
        out[split] = packed
    return out


def bert_pairs(recipe, corpus, tokenizer) -> Examples:
    from .data.collators import DataCollatorForBertPretraining
    from .data.corpus import sentences_dataset
    from .data.nsp import BertPretrainingPairs

    objective = recipe.objective
    builder = BertPretrainingPairs(
        tokenizer,
        max_seq_length=objective.max_seq_length,
        nsp_probability=objective.nsp_probability,
        short_seq_probability=objective.short_seq_probability,
        sentence_order=objective.name == "sop",
        seed=recipe.train.seed,
    )
    splits = {}
    for split, dataset in corpus.items():
        documents = sentences_dataset(dataset, tokenizer, text_column=recipe.data.text_column)
        splits[split] = documents.shuffle(seed=recipe.train.seed).map(
            builder, batched=True, with_indices=True, remove_columns=documents.column_names,
            desc=f"{objective.name} pairs ({split})",
        )
    collator = DataCollatorForBertPretraining(
        tokenizer,
        mlm_probability=objective.mlm_probability,
        mask_replace_prob=objective.mask_replace_prob,
        random_replace_prob=objective.random_replace_prob,
        whole_word_mask=objective.whole_word_mask,
    )
    return Examples(splits["train"], splits.get("validation"), collator, _bert_metrics, _argmax)


def masked_lm(recipe, corpus, tokenizer) -> Examples:
    """RoBERTa's FULL-SENTENCES: packed blocks of max_seq_length - 2, framed by CLS/SEP."""
    objective = recipe.objective
    splits = _packed(recipe, corpus, tokenizer, objective.max_seq_length - 2, tokenizer.sep_token_id)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def frame(batch):
        return {"input_ids": [[cls, *block, sep] for block in batch["input_ids"]]}

    splits = {k: v.map(frame, batched=True, desc="framing") for k, v in splits.items()}
    collator = DataCollatorForLanguageModeling(
        tokenizer,
        mlm=True,
        mlm_probability=objective.mlm_probability,
        mask_replace_prob=objective.mask_replace_prob,
        random_replace_prob=objective.random_replace_prob,
    )
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax)


def causal_lm(recipe, corpus, tokenizer) -> Examples:
    from .data.collators import DataCollatorForCausalLM

    splits = _packed(recipe, corpus, tokenizer, recipe.objective.max_seq_length, tokenizer.eos_token_id)
    # not transformers' collator: with pad = EOS (GPT-2 style) it would drop every EOS label
    collator = DataCollatorForCausalLM(tokenizer)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(True), _argmax)


def span_corruption(recipe, corpus, tokenizer) -> Examples:
    from .data.span_corruption import DataCollatorForSpanCorruption, span_corruption_lengths

    objective = recipe.objective
    raw_length, _ = span_corruption_lengths(
        objective.max_seq_length, objective.noise_density, objective.mean_noise_span_length
    )
    # T5 packs raw text with no separators; the collator appends EOS after corruption.
    splits = _packed(recipe, corpus, tokenizer, raw_length, None)
    collator = DataCollatorForSpanCorruption(
        tokenizer,
        noise_density=objective.noise_density,
        mean_noise_span_length=objective.mean_noise_span_length,
        input_length=objective.max_seq_length,
    )
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax)


def prefix_lm(recipe, corpus, tokenizer) -> Examples:
    from .data.collators import DataCollatorForPrefixLM

    splits = _packed(recipe, corpus, tokenizer, recipe.objective.max_seq_length, tokenizer.eos_token_id)
    collator = DataCollatorForPrefixLM(tokenizer)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax)


OBJECTIVES = {
    "mlm_nsp": bert_pairs,
    "sop": bert_pairs,
    "mlm": masked_lm,
    "clm": causal_lm,
    "span_corruption": span_corruption,
    "prefix_lm": prefix_lm,
}


def load_corpus(recipe):
    from .data.corpus import load_text_dataset

    data = recipe.data
    corpus = load_text_dataset(
        source=data.dataset,
        files=list(data.train_files) or None,
        validation_files=list(data.validation_files) or None,
        dataset_config=data.dataset_config,
        text_column=data.text_column,
        streaming=data.streaming,
        validation_split_percentage=data.validation_split_percentage,
        seed=recipe.train.seed,
    )
    if data.max_train_samples:
        corpus["train"] = corpus["train"].select(range(min(data.max_train_samples, len(corpus["train"]))))
    if data.max_eval_samples and "validation" in corpus:
        corpus["validation"] = corpus["validation"].select(range(min(data.max_eval_samples, len(corpus["validation"]))))
    return corpus


def run_pretraining(recipe) -> dict:
    """Pretrain as the recipe says; returns the final evaluation metrics."""
    output_dir, resume_from = prepare_output_dir(recipe)
    set_seed(recipe.train.seed)  # before any weight is initialised: Trainer seeds only once built
    corpus = load_corpus(recipe)
    tokenizer = load_tokenizer(recipe, (text for text in corpus["train"][recipe.data.text_column]), output_dir)
    model = build_model(recipe, tokenizer, recipe.objective.max_seq_length)  # checks the vocabulary first
    examples = OBJECTIVES[recipe.objective.name](recipe, corpus, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters; %d training examples", type(model).__name__, n_params / 1e6,
                len(examples.train))
    from .data.collators import ReproducibleCollator

    trainer, _ = build_trainer(
        recipe, model, tokenizer, examples.train, examples.validation,
        ReproducibleCollator(examples.collator, recipe.train.seed),
        compute_metrics=examples.compute_metrics,
        preprocess_logits_for_metrics=examples.preprocess_logits_for_metrics,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = add_perplexity(trainer.evaluate()) if examples.validation is not None else None
    if metrics is not None:
        trainer.log_metrics("eval", metrics)
    datasets = [recipe.data.dataset] if recipe.data.dataset else []
    return finish_run(trainer, recipe, output_dir, train_result, metrics,
                      model_name=output_dir.name, task=None, datasets=datasets,
                      base_model=recipe.model.name_or_path)


__all__ = ["run_pretraining", "OBJECTIVES", "AUTO_CLASS", "load_tokenizer", "build_model"]
