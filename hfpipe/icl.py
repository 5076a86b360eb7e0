"""``hfpipe icl RECIPE --model DIR [--shots K]``: zero- and few-shot in-context classification.

No gradient steps. For each evaluation row, K labelled demonstrations drawn from the training
split (seeded; balanced across labels if asked) are written into the prompt with the recipe's
template, the query follows with its label left out, and every label word of the verbalizer
is scored by the model's log-likelihood as the continuation: the most likely word wins
(Brown et al. 2020; verbalizers as LM-BFF). Decoders score the continuation after the prompt;
encoder-decoders score it as the decoder's output given the prompt. The model runs on
``--device`` in the recipe's ``train.mixed_precision`` (float32 on CPU); scores are summed in float32.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, set_seed

from .device import inference_dtype, model_device, place_model, resolve_device
from .errors import InputError
from .tasks import glue
from .training.results import results_table, write_json

logger = logging.getLogger("hfpipe.icl")


def default_template(spec) -> str:
    if len(spec.text_fields) == 1:
        return "Sentence: {text}\nLabel: {label}"
    return "{text_a}\nQuestion: {text_b}\nAnswer: {label}"


def fill(template: str, row: dict, spec, label: str | None) -> str:
    """One demonstration (label given) or the query (label None: the text before {label}).
    Texts are stripped: GLUE's SST-2 sentences end with a space, which would sit before the newline."""
    a, b = (text.strip() if text else text for text in glue.encoder_inputs(row, spec))
    values = {"text": a, "text_a": a, "text_b": b or ""}
    if label is None:
        return template.split("{label}")[0].format(**values)
    return template.format(label=label, **values)


def rows_by_label(train) -> dict[int, list[int]]:
    """Training row indices of each label, built once per run (the training set can be large)."""
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(train["label"]):
        by_label.setdefault(label, []).append(i)
    return by_label


def draw_demonstrations(train, k: int, balanced: bool, rng: random.Random, label_count: int,
                        by_label: dict[int, list[int]] | None = None) -> list[dict]:
    """k distinct training rows; balanced: labels in turn from a shuffled order, as even as k allows."""
    if k == 0:
        return []
    if not balanced:
        return [train[i] for i in rng.sample(range(len(train)), min(k, len(train)))]
    by_label = by_label if by_label is not None else rows_by_label(train)
    order = [label for label in range(label_count) if label in by_label]
    rng.shuffle(order)
    wanted = [order[j % len(order)] for j in range(k)]
    picks = [i for label in order
             for i in rng.sample(by_label[label], min(wanted.count(label), len(by_label[label])))]
    rng.shuffle(picks)
    return [train[i] for i in picks]


@torch.no_grad()
def score_continuations(model, tokenizer, prompts: list[str], words: list[str], batch_size: int = 16,
                        max_length: int | None = None, desc: str | None = None) -> np.ndarray:
    """Sum of token log-probabilities of each word after each prompt: (len(prompts), len(words)).

    The prompt's trailing space joins the word (" great"), as a BPE tokenizer would see it
    in running text; prompt and word are tokenized separately so the scored tokens are exactly
    the word's. With ``max_length``, a prompt too long for prompt + word loses its oldest tokens
    (the caller counts and reports those).
    """
    decoder = not model.config.is_encoder_decoder
    bos = [tokenizer.bos_token_id] if decoder and tokenizer.bos_token_id is not None else []
    items = []  # (prompt ids, [ids of each word])
    for prompt in prompts:
        stem, space = (prompt[:-1], " ") if prompt.endswith(" ") else (prompt, "")
        stem_ids = tokenizer(stem, add_special_tokens=False)["input_ids"]
        word_ids = [tokenizer(space + word, add_special_tokens=False)["input_ids"] for word in words]
        room = None if max_length is None else max_length - max(map(len, word_ids)) - len(bos) - 1  # -1: an EOS
        kept = stem_ids[-room:] if room is not None and len(stem_ids) > room else stem_ids
        items.append((bos + kept, word_ids))
    device = model_device(model)
    if decoder and all(len(ids) == 1 for _, word_ids in items for ids in word_ids):
        # every word is one token: one forward per prompt scores them all (SST-2's "great"/"terrible")
        scores = []
        for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=desc is None):
            scores += _score_next_token(model, tokenizer, items[start:start + batch_size], device)
        return np.array(scores, dtype=np.float64)
    pairs = [(stem, ids) for stem, word_ids in items for ids in word_ids]
    scores = []
    for start in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", disable=desc is None):
        chunk = pairs[start:start + batch_size]
        scores += _score_chunk(model, tokenizer, chunk, device)
    return np.array(scores, dtype=np.float64).reshape(len(prompts), len(words))


def _score_next_token(model, tokenizer, chunk, device) -> list[list[float]]:
    """Log-probabilities of each one-token word right after each (right-padded) prompt."""
    ids, mask = _right_padded([stem for stem, _ in chunk], tokenizer)
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    last = torch.tensor([len(stem) - 1 for stem, _ in chunk], device=device)
    log_probs = F.log_softmax(logits[torch.arange(len(chunk), device=device), last].float(), dim=-1)
    words = torch.tensor([[ids[0] for ids in word_ids] for _, word_ids in chunk], device=device)
    return log_probs.gather(-1, words).tolist()


def _right_padded(rows: list[list[int]], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask of ``rows``, padded on the right (positions stay 0..n-1)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), max(map(len, rows))), pad)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def _score_chunk(model, tokenizer, chunk, device) -> list[float]:
    if model.config.is_encoder_decoder:
        sources = tokenizer.pad({"input_ids": [s + [tokenizer.eos_token_id] for s, _ in chunk]}, return_tensors="pt")
        width = max(len(w) for _, w in chunk)
        labels = torch.full((len(chunk), width), -100)
        for i, (_, word) in enumerate(chunk):
            labels[i, : len(word)] = torch.tensor(word)
        logits = model(input_ids=sources["input_ids"].to(device), attention_mask=sources["attention_mask"].to(device),
                       labels=labels.to(device)).logits
        targets = labels.to(device)
    else:
        ids, mask = _right_padded([stem + word for stem, word in chunk], tokenizer)
        targets = torch.full_like(ids, -100)
        for i, (stem, word) in enumerate(chunk):
            targets[i, len(stem): len(stem) + len(word)] = torch.tensor(word)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
        targets = targets[:, 1:].to(device)
    # log-softmax over the scored positions only, not every position of the batch
    chosen = targets != -100
    log_probs = F.log_softmax(logits[chosen].float(), dim=-1).gather(-1, targets[chosen].unsqueeze(-1)).squeeze(-1)
    rows = chosen.nonzero()[:, 0]
    return torch.zeros(len(chunk), device=log_probs.device).index_add_(0, rows, log_probs).tolist()


def context_length(model, recipe) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or recipe.task.max_seq_length
    return min(limit, recipe.task.max_seq_length)


def evaluate_shots(model, tokenizer, train, evaluation, spec, k: int, icl, max_length: int):
    """Accuracy with k demonstrations; returns (metrics, predictions)."""
    template = icl.template or default_template(spec)
    verbalizer = icl.verbalizer or {name: name for name in spec.label_names}
    words = [verbalizer[name] for name in spec.label_names]
    rng = random.Random(f"{icl.seed}-{k}")
    by_label = rows_by_label(train) if k and icl.balanced else None
    prompts, lengths, shortened, cut = [], [], 0, 0
    word_tokens = max(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in words)
    budget = max_length - word_tokens - 2  # room for the word, a BOS (decoders) or EOS (encoder-decoders)
    for row in evaluation:
        demos = draw_demonstrations(train, k, icl.balanced, rng, spec.num_labels, by_label)
        parts = [fill(template, d, spec, verbalizer[spec.label_names[d["label"]]]) for d in demos]
        query = fill(template, row, spec, None)
        prompt = icl.separator.join([*parts, query])
        length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        while parts and length > budget:
            parts.pop(0)  # drop the oldest demonstration until the prompt fits the context
            prompt = icl.separator.join([*parts, query])
            length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        shortened += len(parts) < len(demos)
        cut += length > budget  # the query alone is too long: score_continuations keeps its end
        prompts.append(prompt)
        lengths.append(min(length, budget))
    if shortened:
        logger.warning("%d-shot: %d of %d prompts exceeded the context of %d tokens and lost demonstrations",
                       k, shortened, len(prompts), max_length)
    if cut:
        logger.warning("%d-shot: %d of %d queries alone exceed the context of %d tokens; their beginning is cut",
                       k, cut, len(prompts), max_length)
    scores = score_continuations(model, tokenizer, prompts, words, max_length=max_length, desc=f"{k}-shot")
    predictions = scores.argmax(-1)
    labels = np.array(evaluation["label"])
    metrics = {
        f"accuracy_{k}shot": float((predictions == labels).mean()),
        f"prompt_tokens_{k}shot": float(np.mean(lengths)),
        f"shortened_prompts_{k}shot": shortened,
        f"cut_queries_{k}shot": cut,
    }
    return metrics, predictions


def run_icl(recipe, device: str = "auto", dtype: str = "auto") -> dict:
    from .build import load_tokenizer_and_model
    from .tasks.loading import load_task_data

    from .training.output_dir import prepare_output_dir

    target = resolve_device(device)  # before loading anything: a missing GPU is one line
    output_dir, _ = prepare_output_dir(recipe)  # a finished run's results are never overwritten
    set_seed(recipe.train.seed)
    spec = glue.get_glue_task(recipe.task.name)
    if spec.label_names is None:
        raise InputError(f"task.name: {spec.name} has no label words; icl needs a classification task")
    data = load_task_data(recipe, do_train=True)
    evaluation = next(iter(data.evaluation.values()), None)
    if evaluation is None or len(evaluation) == 0:
        raise InputError(f"{spec.name}: no evaluation rows; pass --validation-file")
    if recipe.icl.max_eval_samples:
        evaluation = evaluation.select(range(min(recipe.icl.max_eval_samples, len(evaluation))))
    auto_class = AutoModelForSeq2SeqLM if recipe.model.family == "seq2seq" else AutoModelForCausalLM
    texts = lambda: (t for row in data.train for t in glue.encoder_inputs(row, spec) if t)  # noqa: E731
    tokenizer, model = load_tokenizer_and_model(recipe, auto_class, texts)
    model = place_model(model, target, inference_dtype(target, dtype, recipe.train.mixed_precision)).eval()
    max_length = context_length(model, recipe)
    metrics = {}
    for k in recipe.icl.shots:
        shot_metrics, predictions = evaluate_shots(model, tokenizer, data.train, evaluation, spec, k, recipe.icl,
                                                   max_length)
        metrics.update(shot_metrics)
        glue.write_predictions_jsonl(output_dir / f"eval_predictions_{k}shot.jsonl", predictions, spec)
        logger.info("%d-shot accuracy %.4f", k, shot_metrics[f"accuracy_{k}shot"])
    recipe.save_yaml(output_dir / "recipe.yaml")
    write_json(output_dir / "eval_results.json", metrics)
    print("\n" + results_table(f"In-context {spec.name}: {recipe.model.name_or_path or 'tiny model'}", metrics) + "\n")
    return metrics
