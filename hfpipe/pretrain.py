"""``hfpipe pretrain RECIPE``: raw text -> tokenizer -> objective examples -> Trainer.

    recipe.data       -> corpus.load_text_dataset        (Hub name, local files, embedded text; or
                                                          data.sources interleaved by weight)
    data.streaming    -> data.streaming.ResumableStream  (this process's part; position in checkpoints)
    recipe.tokenizer  -> tokenization.train_tokenizer    (on the first tokenizer.train_samples texts)
    recipe.objective  -> examples + collator             (one function per objective below)
    recipe.model      -> hfpipe.config_for(...)          (or from_pretrained)
    recipe.train      -> training.trainer.build_trainer  (Accelerate, checkpoints, resume)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    set_seed,
)

from .build import load_tokenizer, new_model_config
from .data.collators import DataCollatorForBertPretraining
from .data.sources import is_stream, load_corpus_and_mixture
from .errors import InputError
from .training.output_dir import distributed_state, prepare_output_dir
from .training.results import add_perplexity, finish_run
from .training.trainer import HfpipeTrainer, build_trainer

logger = logging.getLogger("hfpipe.pretrain")

# objective -> the Auto class of its model
AUTO_CLASS = {
    "mlm_nsp": AutoModelForPreTraining,
    "sop": AutoModelForPreTraining,
    "mlm": AutoModelForMaskedLM,
    "span_mlm": AutoModelForMaskedLM,
    "clm": AutoModelForCausalLM,
    "span_corruption": AutoModelForSeq2SeqLM,
    "prefix_lm": AutoModelForSeq2SeqLM,
    "ul2": AutoModelForSeq2SeqLM,
}


@dataclass
class Examples:
    """What an objective hands the Trainer."""

    train: Any
    validation: Any | None
    collator: Callable
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    counters: dict[str, Any] = field(default_factory=dict)  # streamed: counts kept as the stream is read


def build_model(recipe, tokenizer, positions_needed: int, added_tokens: int = 0):
    """A new model sized from ``len(tokenizer)``, or the recipe's checkpoint. ``added_tokens``: tokens the
    objective added to the tokenizer (UL2's paradigm tokens); a checkpoint gets embedding rows for them."""
    if recipe.objective.name == "electra":
        return build_electra(recipe, tokenizer, positions_needed)
    auto_class = AUTO_CLASS[recipe.objective.name]
    if recipe.model.name_or_path:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(recipe.model.name_or_path)
        model = auto_class.from_pretrained(name, revision=revision, trust_remote_code=recipe.model.trust_remote_code)
    else:
        model = auto_class.from_config(new_model_config(recipe, tokenizer, positions_needed))
    embeddings = model.get_input_embeddings().weight.shape[0]
    if embeddings < len(tokenizer) <= embeddings + added_tokens:  # only the objective's own tokens are new
        logger.info("%d tokens added for %s: embedding %d -> %d rows", added_tokens, recipe.objective.name,
                    embeddings, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
        embeddings = len(tokenizer)
    if len(tokenizer) > embeddings:
        raise InputError(
            f"tokenizer {recipe.tokenizer.name_or_path or '(trained)'} has {len(tokenizer)} entries but the "
            f"embedding of model {recipe.model.name_or_path or '(new)'} has {embeddings} rows; "
            "use the model's own tokenizer or a matching tokenizer.name_or_path"
        )
    return model


def build_electra(recipe, tokenizer, positions_needed: int):
    """ELECTRA's generator + discriminator: new, sized as the recipe's encoder (the discriminator) and
    ``objective.generator_size_fraction`` of it, or continued from an ELECTRA run's output folder (the
    discriminator there, the generator in its generator/; a plain encoder checkpoint gets a new generator)."""
    from transformers import AutoConfig

    from .models.electra import GENERATOR_FOLDER, HfpipeElectraForPreTraining, electra_generator_config

    objective = recipe.objective
    if recipe.model.name_or_path:
        from .hub import parse_model_reference

        name, revision = parse_model_reference(recipe.model.name_or_path)
        config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=recipe.model.trust_remote_code)
        if config.model_type != "hfpipe_encoder":
            raise InputError(f"model.name_or_path {recipe.model.name_or_path}: ELECTRA continues an hfpipe encoder, "
                             f"got model_type {config.model_type}")
    else:
        config = new_model_config(recipe, tokenizer, positions_needed)
    try:
        generator_config = electra_generator_config(config, objective.generator_size_fraction)
    except ValueError as problem:
        raise InputError(f"objective.generator_size_fraction: {problem}") from None
    model = HfpipeElectraForPreTraining(config, generator_config, discriminator_weight=objective.discriminator_weight)
    if recipe.model.name_or_path:
        from transformers import AutoModelForMaskedLM

        from .models.electra import HfpipeEncoderForReplacedTokenDetection

        # the discriminator head is new where the checkpoint has none (a plain encoder)
        discriminator = HfpipeEncoderForReplacedTokenDetection.from_pretrained(name, revision=revision)
        model.discriminator.load_state_dict(discriminator.state_dict())
        try:
            generator = AutoModelForMaskedLM.from_pretrained(name, revision=revision, subfolder=GENERATOR_FOLDER)
        except OSError:
            logger.info("%s has no %s/: a new generator of %.2f the width", name, GENERATOR_FOLDER,
                        objective.generator_size_fraction)
        else:
            if generator.config.hidden_size != generator_config.hidden_size:
                raise InputError(f"{name}/{GENERATOR_FOLDER}: hidden size {generator.config.hidden_size}, but "
                                 f"objective.generator_size_fraction gives {generator_config.hidden_size}")
            model.generator.load_state_dict(generator.state_dict())  # its embeddings are the shared ones
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        raise InputError(f"tokenizer has {len(tokenizer)} entries but the embedding of model "
                         f"{recipe.model.name_or_path} has {model.get_input_embeddings().weight.shape[0]} rows")
    n_generator = sum(p.numel() for n, p in model.generator.named_parameters() if ".embeddings." not in n)
    logger.info("ELECTRA generator: hidden %d, %d heads, FFN %d, %d layers (%.2fM parameters besides the shared "
                "embeddings); discriminator weight %g", generator_config.hidden_size,
                generator_config.num_attention_heads, generator_config.intermediate_size,
                generator_config.num_hidden_layers, n_generator / 1e6, objective.discriminator_weight)
    return model


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


def _electra_metrics(eval_pred):
    """ELECTRA's evaluation (the official code's metric_fn): the generator's masked-LM loss and accuracy,
    how many masked tokens its samples replaced, the discriminator's accuracy over every token."""
    logits, replaced, predictions, nll = eval_pred.predictions[:4]
    labels = eval_pred.label_ids
    masked = labels != -100
    scored = replaced != -100  # Trainer pads batches with -100 too
    return {
        "generator_loss": float(nll[masked].mean()) if masked.any() else float("nan"),
        "generator_accuracy": token_accuracy(predictions, labels),
        "replaced_fraction": float(replaced[masked].mean()) if masked.any() else float("nan"),
        "discriminator_accuracy": float(((logits > 0) == (replaced == 1))[scored].mean()),
    }


def _tokenized(recipe, corpus, tokenizer):
    from .data.tokenized import tokenize_dataset

    return {
        split: tokenize_dataset(dataset, tokenizer, text_column=recipe.data.text_column,
                                num_proc=recipe.data.preprocessing_num_workers)
        for split, dataset in corpus.items()
    }


def _map_options(dataset, desc: str) -> dict:
    """IterableDataset.map takes no progress-bar description."""
    return {} if is_stream(dataset) else {"desc": desc}


def _packed(recipe, corpus, tokenizer, block_size: int, eos: int | None):
    """(blocks per split, {"packing": PackingCounter} when the training split is streamed)."""
    from .data.packing import pack_dataset

    out, counters = {}, {}
    for split, dataset in _tokenized(recipe, corpus, tokenizer).items():
        packed, stats = pack_dataset(dataset, block_size, eos_token_id=eos, desc=f"packing {split}")
        if is_stream(packed):  # counted as the stream is read; reported at the end of the run
            logger.info("%s: packing a stream into blocks of %d; counts are reported at the end", split, block_size)
            if split == "train":
                counters["packing"] = stats
            out[split] = packed
            continue
        logger.info("%s: %d documents, %d tokens -> %d blocks of %d (%d tokens dropped, %.2f%%)", split,
                    stats.num_documents, stats.num_tokens, stats.num_blocks, block_size,
                    stats.num_dropped_tokens, 100 * stats.dropped_fraction)
        if len(packed) == 0:
            raise InputError(
                f"data: the {split} text holds {stats.num_tokens} tokens, fewer than one block of {block_size}; "
                "give more text or lower objective.max_seq_length"
            )
        out[split] = packed
    return out, counters


def masking_collator(objective, tokenizer) -> DataCollatorForBertPretraining:
    """BERT's masking as the objective section says, for pairs (MLM+NSP/SOP) and packed blocks (MLM):
    transformers' masking, whole-word masking on ids that have no offset mappings, or SpanBERT's spans."""
    masking = dict(mlm_probability=objective.mlm_probability, mask_replace_prob=objective.mask_replace_prob,
                   random_replace_prob=objective.random_replace_prob,
                   document_mask=getattr(objective, "document_mask", False))  # packed blocks: mlm, span_mlm
    if objective.name == "span_mlm":
        from .data.span_masking import DataCollatorForSpanMasking

        return DataCollatorForSpanMasking(tokenizer, geometric_p=objective.geometric_p,
                                          max_span_length=objective.max_span_length, **masking)
    return DataCollatorForBertPretraining(tokenizer, whole_word_mask=objective.whole_word_mask, **masking)


def bert_pairs(recipe, corpus, tokenizer) -> Examples:
    from .data.tokenized import sentences_dataset
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
        if not is_stream(documents):
            # A stream is read in order: datasets' shuffle buffer is not restored by load_state_dict,
            # so shuffling it would break exact resumes; streamed corpora are usually shuffled at rest.
            documents = documents.shuffle(seed=recipe.train.seed)
        splits[split] = documents.map(
            builder, batched=True, with_indices=True, remove_columns=documents.column_names or ["sentences"],
            **_map_options(documents, f"{objective.name} pairs ({split})"),
        )
    collator = masking_collator(objective, tokenizer)
    return Examples(splits["train"], splits.get("validation"), collator, _bert_metrics, _argmax)


def masked_lm(recipe, corpus, tokenizer) -> Examples:
    """RoBERTa's FULL-SENTENCES: packed blocks of max_seq_length - 2, framed by CLS/SEP (SpanBERT's
    single sequences too: ``span_mlm`` differs only in its collator)."""
    objective = recipe.objective
    splits, counters = _packed(recipe, corpus, tokenizer, objective.max_seq_length - 2, tokenizer.sep_token_id)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def frame(batch):
        return {"input_ids": [[cls, *block, sep] for block in batch["input_ids"]]}

    splits = {k: v.map(frame, batched=True, **_map_options(v, "framing")) for k, v in splits.items()}
    collator = masking_collator(objective, tokenizer)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax, counters)


def electra(recipe, corpus, tokenizer) -> Examples:
    """ELECTRA: packed blocks masked as mlm (the objective's 85% [MASK], no random tokens); the
    generator's sampling happens in the model, which needs the generator."""
    examples = masked_lm(recipe, corpus, tokenizer)
    examples.compute_metrics, examples.preprocess_logits_for_metrics = _electra_metrics, None
    return examples


class ElectraTrainer(HfpipeTrainer):
    """Trainer for ELECTRA's pair (models/electra.py): logs the generator and discriminator losses
    apart, writes the tokenizer beside the generator too, and resumes both parts from a checkpoint
    (whose folder holds the discriminator and generator/, not one state dict of the pair)."""

    _electra_sums = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            if self._electra_sums is None:  # the first micro-batch since the last log
                self._electra_sums = {"generator_loss": 0.0, "discriminator_loss": 0.0}
                self._electra_first_step = self.state.global_step
            for key in self._electra_sums:  # each micro-batch's share of its optimizer step's loss
                self._electra_sums[key] = self._electra_sums[key] + outputs[key].detach()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and self._electra_sums is not None:
            steps = max(self.state.global_step - self._electra_first_step, 1)  # optimizer steps since the last log
            for key, total in self._electra_sums.items():
                logs[key] = round(float(total) / steps, 4)
            self._electra_sums = None
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # the two scalar losses do not concatenate over batches; _electra_metrics has the per-token outputs
        ignore = [*(ignore_keys or []), "generator_loss", "discriminator_loss"]
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        from .models.electra import GENERATOR_FOLDER

        if self.args.should_save and self.processing_class is not None:
            self.processing_class.save_pretrained(Path(output_dir or self.args.output_dir) / GENERATOR_FOLDER)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self.accelerator.unwrap_model(model or self.model).load_saved(resume_from_checkpoint)

    def _load_best_model(self):
        self.accelerator.unwrap_model(self.model).load_saved(self.state.best_model_checkpoint)


def causal_lm(recipe, corpus, tokenizer) -> Examples:
    from .data.collators import DataCollatorForCausalLM

    splits, counters = _packed(recipe, corpus, tokenizer, recipe.objective.max_seq_length, tokenizer.eos_token_id)
    # not transformers' collator: with pad = EOS (GPT-2 style) it would drop every EOS label
    collator = DataCollatorForCausalLM(tokenizer, document_mask=recipe.objective.document_mask)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(True), _argmax, counters)


def span_corruption(recipe, corpus, tokenizer) -> Examples:
    from .data.span_corruption import DataCollatorForSpanCorruption, span_corruption_lengths

    objective = recipe.objective
    raw_length, _ = span_corruption_lengths(
        objective.max_seq_length, objective.noise_density, objective.mean_noise_span_length
    )
    # T5 packs raw text with no separators; the collator appends EOS after corruption. With
    # document_mask the documents keep their EOS separators: the collator splits blocks at them.
    separator = tokenizer.eos_token_id if objective.document_mask else None
    splits, counters = _packed(recipe, corpus, tokenizer, raw_length, separator)
    collator = DataCollatorForSpanCorruption(
        tokenizer,
        noise_density=objective.noise_density,
        mean_noise_span_length=objective.mean_noise_span_length,
        input_length=objective.max_seq_length,
        document_mask=objective.document_mask,
    )
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax, counters)


def prefix_lm(recipe, corpus, tokenizer) -> Examples:
    from .data.collators import DataCollatorForPrefixLM

    splits, counters = _packed(recipe, corpus, tokenizer, recipe.objective.max_seq_length, tokenizer.eos_token_id)
    collator = DataCollatorForPrefixLM(tokenizer)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax, counters)


def ul2(recipe, corpus, tokenizer) -> Examples:
    """UL2's mixture of denoisers: raw blocks as long as the most demanding denoiser needs (no separators, as T5)."""
    from .data.ul2 import DataCollatorForUL2, as_denoisers, ul2_lengths

    objective = recipe.objective
    denoisers = as_denoisers(objective.denoisers)
    lengths = ul2_lengths(objective.max_seq_length, denoisers)
    unused = lengths.unused_fraction([d.weight for d in denoisers])
    logger.info("ul2: %d denoisers; raw blocks of %d tokens, %.1f%% of them unused on average (raw per denoiser: %s)",
                len(denoisers), lengths.block_length, 100 * unused, ", ".join(str(n.raw) for n in lengths.denoisers))
    splits, counters = _packed(recipe, corpus, tokenizer, lengths.block_length, None)
    collator = DataCollatorForUL2(tokenizer, denoisers, input_length=objective.max_seq_length)
    return Examples(splits["train"], splits.get("validation"), collator, _lm_metrics(False), _argmax, counters)


OBJECTIVES = {
    "mlm_nsp": bert_pairs,
    "sop": bert_pairs,
    "mlm": masked_lm,
    "span_mlm": masked_lm,
    "electra": electra,
    "clm": causal_lm,
    "span_corruption": span_corruption,
    "prefix_lm": prefix_lm,
    "ul2": ul2,
}


def _train_tokenizer_texts(recipe, train):
    """The bounded tokenizer sample (first tokenizer.train_samples texts) and its running count."""
    from .data.sampling import TextSample, sample_texts

    sample = TextSample()
    return sample_texts(train, recipe.data.text_column, recipe.tokenizer.train_samples, sample=sample), sample


def _streamed_examples(recipe, examples, mixture, resume_from):
    """Wrap the streamed training examples; load their position from the checkpoint when resuming.
    Returns (ResumableStream, TrainingArguments overrides)."""
    from .data.streaming import ResumableStream, process_rank_and_count, stream_state_path

    counters = dict(examples.counters)
    if mixture is not None:
        counters["mixture"] = mixture
    stream = ResumableStream(examples.train, recipe.train.per_device_train_batch_size, counters)
    if not resume_from:
        return stream, {}
    rank, count = process_rank_and_count()
    path = stream_state_path(resume_from, rank)
    state = json.loads(path.read_text()) if path.is_file() else None
    # A machine that shares no disk with the others holds only its own processes' positions: the
    # number of processes that wrote them is in each (older checkpoints: count the files).
    saved = state.get("processes", len(list(Path(resume_from).glob("stream-*.json")))) if state else 0
    if saved != count:
        logger.warning("%s holds the stream positions of %d processes, not this process's of %d; re-reading the "
                       "stream up to the checkpoint", resume_from, saved, count)
        return stream, {}
    stream.load_state(state)
    logger.info("resuming the stream at the position saved in %s (pass %d, batch %d)", path, stream.epoch + 1,
                stream.batches)
    return stream, {"ignore_data_skip": True}  # the position is loaded: Trainer must not skip batches again


def stream_report(stream, consumed_batches: int) -> dict:
    """Counts of the training stream up to the last batch trained on (flat, for train_results.json)."""
    snapshot = stream.state_after(consumed_batches)
    counters = snapshot["counters"] if snapshot else {name: c.state() for name, c in stream.counters.items()}
    report = {"train_stream_passes": (snapshot or {"epoch": stream.epoch})["epoch"] + 1}
    for key, value in counters.get("packing", {}).items():
        report[f"train_packing_{key.removeprefix('num_')}"] = value
    mixture = stream.counters.get("mixture")
    if mixture is not None and "mixture" in counters:
        mixture.load_state(counters["mixture"])
        for name, fraction in mixture.realised().items():
            report[f"train_mixture_{name}"] = round(fraction, 6)
        logger.info("%s", mixture.report())
    return report


def run_pretraining(recipe) -> dict:
    """Pretrain as the recipe says; returns the final evaluation metrics."""
    output_dir, resume_from = prepare_output_dir(recipe)
    set_seed(recipe.train.seed)  # before any weight is initialised: Trainer seeds only once built
    # Data is prepared once per machine: its first process fills the local datasets cache, the others
    # then read it (machines need not share a disk). The tokenizer step in between is collective.
    state = distributed_state(recipe)
    with state.local_main_process_first():
        corpus, mixture = load_corpus_and_mixture(recipe, split=True)  # a stream: this process's part
    texts, sample = _train_tokenizer_texts(recipe, corpus["train"])
    tokenizer = load_tokenizer(recipe, texts, output_dir)
    if sample.texts:
        logger.info("tokenizer trained on the first %d texts (%.1f MB) of the training data (tokenizer.train_samples=%d)",
                    sample.texts, sample.bytes / 1e6, recipe.tokenizer.train_samples)
    added_tokens = 0
    if recipe.objective.name == "ul2":  # paradigm tokens and sentinels, before the embedding is sized
        from .data.ul2 import add_ul2_tokens, as_denoisers

        added_tokens = add_ul2_tokens(tokenizer, as_denoisers(recipe.objective.denoisers),
                                      recipe.objective.max_seq_length)
    model = build_model(recipe, tokenizer, recipe.objective.max_seq_length, added_tokens)  # checks the vocabulary first
    streamed = is_stream(corpus["train"])
    with state.local_main_process_first():
        examples = OBJECTIVES[recipe.objective.name](recipe, corpus, tokenizer)
    extra_args = {}
    if streamed:
        examples.train, extra_args = _streamed_examples(recipe, examples, mixture, resume_from)
    elif mixture is not None:
        logger.info("%s", mixture.report())
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters; %s training examples", type(model).__name__, n_params / 1e6,
                "a stream of" if streamed else len(examples.train))
    from .data.collators import ReproducibleCollator

    trainer_class = ElectraTrainer if recipe.objective.name == "electra" else HfpipeTrainer
    trainer, _ = build_trainer(
        recipe, model, tokenizer, examples.train, examples.validation,
        ReproducibleCollator(examples.collator, recipe.train.seed),
        compute_metrics=examples.compute_metrics,
        preprocess_logits_for_metrics=examples.preprocess_logits_for_metrics,
        trainer_class=trainer_class, extra_args=extra_args,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    if streamed:
        report = stream_report(examples.train, trainer.state.global_step * recipe.train.gradient_accumulation_steps)
        logger.info("training stream (this process): %s", ", ".join(f"{k}={v}" for k, v in report.items()))
        train_result.metrics.update(report)
    metrics = trainer.evaluate() if examples.validation is not None else None
    if metrics is not None and recipe.objective.name == "electra":
        # eval_loss adds lambda times the discriminator's BCE: the perplexity is the generator's MLM one
        metrics["perplexity"] = math.exp(min(metrics["eval_generator_loss"], 700.0))
    elif metrics is not None:
        metrics = add_perplexity(metrics)
    if metrics is not None:
        trainer.log_metrics("eval", metrics)
    datasets = [recipe.data.dataset] if recipe.data.dataset else [s.dataset for s in recipe.data.sources if s.dataset]
    return finish_run(trainer, recipe, output_dir, train_result, metrics,
                      # the Hub has no replaced-token-detection task: the discriminator is kept as an encoder
                      model_name=output_dir.name, task="feature-extraction" if recipe.objective.name == "electra"
                      else None, datasets=datasets,
                      base_model=recipe.model.name_or_path)


__all__ = ["run_pretraining", "OBJECTIVES", "AUTO_CLASS", "build_model", "build_electra"]
