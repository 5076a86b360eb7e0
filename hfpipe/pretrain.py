"""``hfpipe pretrain RECIPE``: raw text -> tokenizer -> objective examples -> Trainer.

    recipe.data       -> corpus.load_text_dataset        (Hub name, local files, embedded text; or
                                                          data.sources interleaved by weight)
    data.streaming    -> data.streaming.ResumableStream  (this process's part; position in checkpoints)
    recipe.tokenizer  -> tokenization.train_tokenizer    (on the first tokenizer.train_samples texts)
    recipe.objective  -> examples + collator + model     (the objective's own module, hfpipe/objectives/)
    recipe.train      -> training.trainer.build_trainer  (Accelerate, checkpoints, resume)
"""

from __future__ import annotations

import logging

from transformers import set_seed

from .build import load_tokenizer
from .data.sources import is_stream, load_corpus_and_mixture
from .data.streaming import resumable_stream, stream_report
from .training.output_dir import distributed_state, prepare_output_dir
from .training.results import finish_run
from .training.trainer import build_trainer

logger = logging.getLogger("hfpipe.pretrain")


def _train_tokenizer_texts(recipe, train):
    """The bounded tokenizer sample (first tokenizer.train_samples texts) and its running count."""
    from .data.sampling import TextSample, sample_texts

    sample = TextSample()
    return sample_texts(train, recipe.data.text_column, recipe.tokenizer.train_samples, sample=sample), sample


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
    objective = recipe.objective  # one of hfpipe/objectives/
    added_tokens = objective.add_tokens(tokenizer)
    model = objective.build_model(recipe, tokenizer, added_tokens)  # checks the vocabulary first
    streamed = is_stream(corpus["train"])
    with state.local_main_process_first():
        examples = objective.examples(recipe, corpus, tokenizer)
    extra_args = {}
    if streamed:
        counters = {**examples.counters, **({"mixture": mixture} if mixture is not None else {})}
        examples.train, extra_args = resumable_stream(examples.train, recipe.train.per_device_train_batch_size,
                                                      counters, resume_from)
    elif mixture is not None:
        logger.info("%s", mixture.report())
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %s, %.2fM parameters; %s training examples", type(model).__name__, n_params / 1e6,
                "a stream of" if streamed else len(examples.train))
    from .data.collators import ReproducibleCollator

    trainer, _ = build_trainer(
        recipe, model, tokenizer, examples.train, examples.validation,
        ReproducibleCollator(examples.collator, recipe.train.seed),
        compute_metrics=examples.compute_metrics,
        preprocess_logits_for_metrics=examples.preprocess_logits_for_metrics,
        trainer_class=objective.trainer_class(), extra_args=extra_args,
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    if streamed:
        report = stream_report(examples.train, trainer.state.global_step * recipe.train.gradient_accumulation_steps)
        logger.info("training stream (this process): %s", ", ".join(f"{k}={v}" for k, v in report.items()))
        train_result.metrics.update(report)
    metrics = trainer.evaluate() if examples.validation is not None else None
    if metrics is not None:
        metrics = objective.final_metrics(metrics)
        trainer.log_metrics("eval", metrics)
    datasets = [recipe.data.dataset] if recipe.data.dataset else [s.dataset for s in recipe.data.sources if s.dataset]
    return finish_run(trainer, recipe, output_dir, train_result, metrics,
                      model_name=output_dir.name, task=objective.hub_task, datasets=datasets,
                      base_model=recipe.model.name_or_path)


__all__ = ["run_pretraining"]
