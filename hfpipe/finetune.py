"""``hfpipe finetune RECIPE`` and ``hfpipe evaluate RECIPE --model DIR``: GLUE, SQuAD,
instruction tuning and token tagging (NER, POS).

    recipe.task.name  -> tasks.glue / tasks.squad / tasks.sft / tasks.tagging   (data, formatting, post-processing)
    recipe.model      -> a head on any checkpoint   (encoder: [CLS]; decoder: last token or
                                                     GPT-1 pair format; seq2seq: text-to-text)
    recipe.train      -> training.trainer.build_trainer
    outputs           -> eval_results.json, eval_predictions.jsonl|json (sft: eval_generations.jsonl),
                         the model, the card
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Seq2SeqTrainingArguments,
    set_seed,
)

from .adapters import apply_peft, prepare_quantized, quantization_config
from .build import load_tokenizer_and_model
from .errors import InputError
from .metrics import load_metric
from .recipes import DPO_TASK, SFT_TASK, SQUAD_TASKS, TAGGING_TASKS
from .tasks import dpo, generative_qa, glue, sft, squad, tagging
from .tasks.loading import TaskData, load_task_data
from .training.output_dir import prepare_output_dir
from .training.results import (add_perplexity, finish_run, is_bookkeeping, results_table, standard_metric_name,
                               write_json)
from .training.trainer import HfpipeSeq2SeqTrainer, build_trainer

logger = logging.getLogger("hfpipe.finetune")

SFT_GENERATION_SAMPLES = 8  # validation instructions answered greedily after training, for a look


def adapt(recipe, model, tokenizer):
    """Quantized bases get QLoRA's preparation; then the recipe's PEFT method (if any)."""
    if quantization_config(recipe.quantization) is not None:
        model = prepare_quantized(model)
    return apply_peft(model, recipe.peft, tokenizer)


def _uses_gpt_pairs(recipe) -> bool:
    return recipe.model.family == "decoder" and (recipe.task.pair_format or "gpt") == "gpt"


def _text_to_text(recipe) -> bool:
    return recipe.model.family == "seq2seq" and recipe.task.text_to_text is not False


# ------------------------------------------------------------------------------------------- GLUE
def _glue_texts(batch, spec):
    a = batch[spec.text_fields[0]]
    b = batch[spec.text_fields[1]] if len(spec.text_fields) > 1 else None
    return a, b


def run_glue(recipe, data: TaskData, do_train: bool, resume_from):
    spec = glue.get_glue_task(recipe.task.name)
    max_length = recipe.task.max_seq_length
    texts = lambda: (t for row in data.train or [] for t in glue.encoder_inputs(row, spec) if t)  # noqa: E731
    if _text_to_text(recipe):
        return _run_glue_text_to_text(recipe, data, do_train, resume_from, spec, texts)
    label_kwargs = {"num_labels": spec.num_labels}
    if spec.label_names:
        label_kwargs["id2label"] = dict(enumerate(spec.label_names))
        label_kwargs["label2id"] = {name: i for i, name in enumerate(spec.label_names)}
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSequenceClassification, texts, **label_kwargs)
    gpt_pairs = _uses_gpt_pairs(recipe)
    if gpt_pairs and tokenizer.add_tokens(list(glue.GPT_SPECIAL_TOKENS), special_tokens=True):
        model.resize_token_embeddings(len(tokenizer))
    model = adapt(recipe, model, tokenizer)

    def encode(batch):
        a, b = _glue_texts(batch, spec)
        if gpt_pairs:
            encoded = tokenizer([glue.gpt_pair_text(x, y if b else None) for x, y in zip(a, b or a)],
                                truncation=True, max_length=max_length)
        else:
            encoded = tokenizer(a, b, truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        return encoded

    def features(dataset):
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")

    metric = load_metric("glue", spec.name)

    def compute_metrics(eval_pred):
        predictions = glue.predictions_from_logits(spec, eval_pred.predictions)
        return metric.compute(predictions=predictions, references=eval_pred.label_ids)

    train = features(data.train) if data.train is not None else None
    evaluation = {name: features(ds) for name, ds in data.evaluation.items()}
    first_eval = next(iter(evaluation.values()), None)
    trainer, _ = build_trainer(recipe, model, tokenizer, train, first_eval, DataCollatorWithPadding(tokenizer),
                               compute_metrics=compute_metrics)
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    metrics, predictions = _predict_splits(trainer, evaluation, lambda logits: glue.predictions_from_logits(spec, logits))
    return trainer, train_result, metrics, {"glue": (spec, predictions)}, tokenizer


def _run_glue_text_to_text(recipe, data, do_train, resume_from, spec, texts):
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSeq2SeqLM, texts)
    model = adapt(recipe, model, tokenizer)
    max_length = recipe.task.max_seq_length
    target_words = [glue.text_to_text({**{f: "" for f in spec.text_fields}, "label": i}, spec)[1]
                    for i in range(spec.num_labels)] if spec.label_names else ["5.0"]
    target_length = max(len(tokenizer(w).input_ids) for w in target_words) + 2

    def encode(batch):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        pairs = [glue.text_to_text(row, spec) for row in rows]
        encoded = tokenizer([s for s, _ in pairs], truncation=True, max_length=max_length)
        encoded["labels"] = tokenizer([t for _, t in pairs], truncation=True, max_length=target_length)["input_ids"]
        return encoded

    def features(dataset):
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="text-to-text")

    metric = load_metric("glue", spec.name)

    def compute_metrics(eval_pred):
        generated = np.where(eval_pred.predictions < 0, tokenizer.pad_token_id, eval_pred.predictions)
        texts_out = tokenizer.batch_decode(generated, skip_special_tokens=True)
        predictions, invalid = glue.labels_from_texts(spec, texts_out)
        labels = np.where(eval_pred.label_ids < 0, tokenizer.pad_token_id, eval_pred.label_ids)
        references, _ = glue.labels_from_texts(spec, tokenizer.batch_decode(labels, skip_special_tokens=True))
        result = metric.compute(predictions=predictions, references=references)
        result["invalid_predictions"] = invalid
        return result

    train = features(data.train) if data.train is not None else None
    evaluation = {name: features(ds) for name, ds in data.evaluation.items()}
    trainer, _ = build_trainer(
        recipe, model, tokenizer, train, next(iter(evaluation.values()), None),
        DataCollatorForSeq2Seq(tokenizer, model=model), compute_metrics=compute_metrics,
        trainer_class=HfpipeSeq2SeqTrainer,
        args_class=Seq2SeqTrainingArguments,
        extra_args={"predict_with_generate": True, "generation_max_length": target_length},
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    def to_labels(generated):
        generated = np.where(generated < 0, tokenizer.pad_token_id, generated)
        return np.array(glue.labels_from_texts(spec, tokenizer.batch_decode(generated, skip_special_tokens=True))[0])

    metrics, predictions = _predict_splits(trainer, evaluation, to_labels)
    return trainer, train_result, metrics, {"glue": (spec, predictions)}, tokenizer


def _predict_splits(trainer, evaluation: dict, to_predictions) -> tuple[dict, dict]:
    """Metrics and predictions for each evaluation split; MNLI's mismatched set gets ``_mm``."""
    metrics, predictions = {}, {}
    for name, dataset in evaluation.items():
        split_metrics, split_predictions = trainer.evaluate_once(dataset)  # the final step's pass, if it ran one
        suffix = "_mm" if name.endswith("mismatched") else ""
        metrics.update({standard_metric_name(k) + suffix: v for k, v in split_metrics.items()})
        predictions[name] = to_predictions(split_predictions)
    return metrics, predictions


# ---------------------------------------------------------------------------------- token tagging
def run_tagging(recipe, data: TaskData, do_train: bool, resume_from):
    """NER / POS (tasks.tagging): one label per word, from its first word piece; seqeval's entity
    scores (NER) or token accuracy (POS) on the validation sentences, one prediction line each."""
    task = recipe.task
    config = _checkpoint_config(recipe)
    labels = tagging.label_list(data.train, data.labels) if do_train else _model_labels(recipe, config)
    for split, sentences in [("train", data.train), *data.evaluation.items()]:
        if sentences is not None:
            tagging.check_tags(sentences, labels, data.where.get(split, split))
    label2id = {tag: i for i, tag in enumerate(labels)}
    texts = lambda: (" ".join(row["tokens"]) for row in data.train or [])  # noqa: E731
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForTokenClassification, texts,
                                                num_labels=len(labels), id2label=dict(enumerate(labels)),
                                                label2id=label2id)
    model = adapt(recipe, model, tokenizer)
    align = dict(tokenizer=tokenizer, label2id=label2id, max_seq_length=task.max_seq_length,
                 label_all_tokens=task.label_all_tokens)
    window_columns = list(tagging.WINDOW_COLUMNS)
    train = (tagging.tokenize_and_align(data.train, **align).remove_columns(window_columns)
             if data.train is not None else None)
    sentences = data.evaluation.get("validation")
    windows = tagging.tokenize_and_align(sentences, **align) if sentences is not None else None
    model_inputs = windows.remove_columns(window_columns) if windows is not None else None
    metric = load_metric("seqeval")

    def to_tags(predicted_ids):
        return tagging.tags_from_predictions(predicted_ids, windows, labels, [len(t) for t in sentences["tokens"]])

    def compute_metrics(eval_pred):
        scores = metric.compute(predictions=to_tags(eval_pred.predictions), references=list(sentences["tags"]))
        return tagging.flat_scores(scores, task.name)

    collator = DataCollatorForTokenClassification(tokenizer)  # pads labels with -100
    trainer, _ = build_trainer(recipe, model, tokenizer, train, model_inputs, collator,
                               compute_metrics=compute_metrics if windows is not None else None,
                               preprocess_logits_for_metrics=_label_ids)
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    if windows is None:
        return trainer, train_result, {}, {}, tokenizer
    scores, predicted = trainer.evaluate_once(model_inputs)  # the final step's pass, if it ran one
    metrics = {standard_metric_name(k): v for k, v in scores.items()}
    return trainer, train_result, metrics, {"tagging": (sentences, to_tags(predicted))}, tokenizer


def _label_ids(logits, labels):
    """(B, T, num_labels) -> (B, T) ids before Trainer gathers them: 47 POS logits per piece are
    not worth holding for a whole evaluation set."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


def _checkpoint_config(recipe):
    """The checkpoint's config (None from scratch), refused early when transformers has no
    token-classification head for its model type (hfpipe's decoder and seq2seq have none)."""
    if not recipe.model.name_or_path:
        return None
    from .hub import parse_model_reference

    name, revision = parse_model_reference(recipe.model.name_or_path)
    config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=recipe.model.trust_remote_code)
    auto_map = getattr(config, "auto_map", None) or {}
    remote = recipe.model.trust_remote_code and "AutoModelForTokenClassification" in auto_map
    # _model_mapping is the Auto class's own table (registered hfpipe classes included)
    if not remote and type(config) not in AutoModelForTokenClassification._model_mapping:
        raise InputError(f"model.name_or_path {recipe.model.name_or_path}: {config.model_type} has no "
                         f"token-classification head; {recipe.task.name} needs one (an encoder, e.g. bert-base-cased)")
    return config


def _model_labels(recipe, config) -> list[str]:
    """For ``hfpipe evaluate``: the finetuned model's tags, in the order of its logits."""
    names = [config.id2label[i] for i in range(len(config.id2label))] if config is not None else []
    if not names or all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        raise InputError(f"--model {recipe.model.name_or_path}: config.json names no tags (id2label); evaluate a model "
                         f"finetuned on {recipe.task.name} (hfpipe finetune)")
    return names


# ----------------------------------------------------------------------------- instruction tuning
def run_sft(recipe, data: TaskData, do_train: bool, resume_from):
    """Causal-LM loss on the response tokens of each pair; eval loss, perplexity and a few greedy answers."""
    texts = lambda: (t for row in data.train or [] for t in (row["instruction"], row["response"]))  # noqa: E731
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForCausalLM, texts)
    sft.ensure_chat_template(tokenizer, recipe.task.chat_template)  # saved with the tokenizer, for inference
    model = adapt(recipe, model, tokenizer)
    max_length = recipe.task.max_seq_length
    train = sft.tokenize_sft(data.train, tokenizer, max_length, "train") if data.train is not None else None
    validation = data.evaluation.get("validation")
    features = sft.tokenize_sft(validation, tokenizer, max_length, "validation") if validation is not None else None
    # pads input_ids with the pad token and labels with -100: padding never enters the loss
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=sft.IGNORE_INDEX)
    trainer, _ = build_trainer(recipe, model, tokenizer, train, features, collator)
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    metrics = {}
    if features is not None:
        scores, _ = trainer.evaluate_once(features, predictions=False)  # the final step's pass, if it ran one
        metrics = add_perplexity({standard_metric_name(k): v for k, v in scores.items()})
    answers = _answer(trainer, tokenizer, validation if validation is not None else [], max_length)
    return trainer, train_result, metrics, {"sft": answers}, tokenizer


def _answer(trainer, tokenizer, rows, max_length: int) -> list[dict]:
    """Greedy answers to the first SFT_GENERATION_SAMPLES instructions whose prompt leaves room
    for an answer within max_length, prompted with the chat template as in training."""
    import torch

    model = trainer.model.eval()
    out, passed_over = [], 0
    for row in rows:
        if len(out) == SFT_GENERATION_SAMPLES:
            break
        prompt = tokenizer(sft.render(tokenizer, row["instruction"]), add_special_tokens=False, return_tensors="pt")
        room = max_length - prompt["input_ids"].shape[1]
        if room <= 0:
            passed_over += 1
            continue
        with torch.no_grad():
            generated = model.generate(**prompt.to(trainer.args.device), max_new_tokens=min(room, 64), do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(generated[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append({"instruction": row["instruction"], "reference": row["response"], "generated": answer.strip()})
    if passed_over:
        logger.info("eval_generations.jsonl: passed over %d validation instruction(s) whose prompt fills "
                    "task.max_seq_length", passed_over)
    return out


# ------------------------------------------------------------------------------------------ SQuAD
def run_squad(recipe, data: TaskData, do_train: bool, resume_from):
    if _text_to_text(recipe):
        return _run_squad_text_to_text(recipe, data, do_train, resume_from)
    version_2 = recipe.task.name == "squad_v2"
    task = recipe.task
    texts = lambda: (t for row in data.train or [] for t in (row["question"], row["context"]))  # noqa: E731
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForQuestionAnswering, texts)
    model = adapt(recipe, model, tokenizer)
    window = dict(max_seq_length=task.max_seq_length, doc_stride=task.doc_stride)
    train = squad.map_features(data.train, tokenizer, training=True, **window) if data.train is not None else None
    trainer, _ = build_trainer(recipe, model, tokenizer, train, None, DataCollatorWithPadding(tokenizer))
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    examples = data.evaluation.get("validation")
    if examples is None:
        return trainer, train_result, {}, {}, tokenizer
    features = squad.map_features(examples, tokenizer, training=False, **window)
    model_inputs = features.remove_columns(["example_id", "offset_mapping", "cls_index"])
    start_logits, end_logits = trainer.predict(model_inputs).predictions[:2]
    predictions, null_odds = squad.postprocess_qa_predictions(
        examples, features, start_logits, end_logits, version_2_with_negative=version_2,
        n_best_size=task.n_best_size, max_answer_length=task.max_answer_length,
        null_score_diff_threshold=task.null_score_diff_threshold,
    )
    metrics = _squad_score(examples, predictions, null_odds, version_2, task.null_score_diff_threshold)
    return trainer, train_result, metrics, {"squad": predictions}, tokenizer


def _squad_score(examples, predictions: dict, null_odds: dict, version_2: bool, threshold: float) -> dict:
    """The official SQuAD v1.1 / v2.0 scores of ``predictions`` ({id: text}) on ``examples``."""
    metric = load_metric("squad_v2" if version_2 else "squad")
    references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])]
    if version_2:
        # null_odds with the same threshold as the predictions: exact/f1 agree with the
        # predictions file, and best_exact/best_f1 show the threshold worth using.
        formatted = [{"id": k, "prediction_text": v, "no_answer_probability": null_odds[k]} for k, v in predictions.items()]
        return metric.compute(predictions=formatted, references=references, no_answer_threshold=threshold)
    formatted = [{"id": k, "prediction_text": v} for k, v in predictions.items()]
    return metric.compute(predictions=formatted, references=references)


def _run_squad_text_to_text(recipe, data: TaskData, do_train: bool, resume_from):
    """T5's generative SQuAD (:mod:`hfpipe.tasks.generative_qa`), scored like extractive answers."""
    version_2, task = recipe.task.name == "squad_v2", recipe.task
    texts = lambda: (t for row in data.train or [] for t in (row["question"], row["context"]))  # noqa: E731
    tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForSeq2SeqLM, texts)
    model = adapt(recipe, model, tokenizer)
    window = dict(max_seq_length=task.max_seq_length, doc_stride=task.doc_stride)
    train = (generative_qa.map_generative_features(data.train, tokenizer, training=True, version_2=version_2, **window)
             if data.train is not None else None)
    trainer, _ = build_trainer(recipe, model, tokenizer, train, None, DataCollatorForSeq2Seq(tokenizer, model=model),
                               trainer_class=HfpipeSeq2SeqTrainer, args_class=Seq2SeqTrainingArguments)
    train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
    examples = data.evaluation.get("validation")
    if examples is None:
        return trainer, train_result, {}, {}, tokenizer
    predictions, no_answer = generative_qa.generate_answers(
        trainer.model, tokenizer, examples, max_answer_length=task.max_answer_length,
        batch_size=recipe.train.per_device_eval_batch_size, device=trainer.args.device, **window)
    # A generated "unanswerable" is certain (probability 1), so the v2 threshold is 0.5 of it.
    metrics = _squad_score(examples, predictions, no_answer, version_2, 0.5)
    return trainer, train_result, metrics, {"squad": predictions}, tokenizer


# ---------------------------------------------------------------------------------------- driver
def _write_predictions(output_dir, predictions: dict) -> None:
    if "sft" in predictions:
        with open(output_dir / "eval_generations.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions["sft"])
    if "squad" in predictions:
        write_json(output_dir / "eval_predictions.json", predictions["squad"])
    if "tagging" in predictions:
        tagging.write_predictions_jsonl(output_dir / "eval_predictions.jsonl", *predictions["tagging"])
    if "glue" in predictions:
        spec, by_split = predictions["glue"]
        for name, values in by_split.items():
            suffix = "_mm" if name.endswith("mismatched") else ""
            glue.write_predictions_jsonl(output_dir / f"eval_predictions{suffix}.jsonl", values, spec)


def run_finetuning(recipe, do_train: bool = True) -> dict:
    """Finetune (or only evaluate, ``do_train=False``) as the recipe says; returns the metrics."""
    if do_train:
        output_dir, resume_from = prepare_output_dir(recipe)
    else:  # the CLI chose a folder of its own (training.output_dir.prepare_evaluation_dir)
        output_dir, resume_from = Path(recipe.train.output_dir), None
        output_dir.mkdir(parents=True, exist_ok=True)
    set_seed(recipe.train.seed)  # before any weight is initialised: Trainer seeds only once built
    data = load_task_data(recipe, do_train)
    runner = run_sft if recipe.task.name == SFT_TASK else run_squad if recipe.task.name in SQUAD_TASKS else run_glue
    runner = run_tagging if recipe.task.name in TAGGING_TASKS else dpo.run_dpo if recipe.task.name == DPO_TASK else runner
    trainer, train_result, metrics, predictions, tokenizer = runner(recipe, data, do_train, resume_from)
    if trainer.is_world_process_zero():
        _write_predictions(output_dir, predictions)
        if recipe.peft.method != "none" and do_train:
            # The adapter alone does not say how the base was changed (labels, added tokens):
            # keep the base config next to it, for `hfpipe merge` and plain peft loading.
            trainer.model.get_base_model().config.save_pretrained(output_dir)
    if do_train:
        return finish_run(trainer, recipe, output_dir, train_result, metrics, model_name=output_dir.name,
                          task=recipe.task.name, datasets=data.datasets, base_model=recipe.model.name_or_path)
    if trainer.is_world_process_zero():
        write_json(output_dir / "eval_results.json", metrics)
        shown = {k: v for k, v in metrics.items() if not is_bookkeeping(k)}
        print("\n" + results_table(f"Evaluation: {recipe.model.name_or_path} on {recipe.task.name}", shown) + "\n")
    return metrics


__all__ = ["run_finetuning"]
