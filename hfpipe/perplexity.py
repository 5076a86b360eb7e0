"""``hfpipe evaluate PRETRAIN_RECIPE --model DIR``: perplexity of a causal LM on held-out text.

Perplexity = exp(mean token NLL). Text longer than the context is scored with a sliding window
(transformers' recipe): windows of ``max_length`` tokens moving by ``stride``; each window
scores only the tokens no earlier window scored, so every token after the first is predicted
exactly once, with up to ``max_length - stride`` tokens of context carried over. With one
window (short text) this equals the direct computation. The model runs on ``--device`` in the recipe's
``train.mixed_precision`` (bf16/fp16 on an accelerator; float32 on CPU), the NLL in float32.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from .checkpoints import load_model
from .device import inference_dtype, model_device, place_model, resolve_device
from .errors import InputError
from .training.results import results_table, write_json


@torch.no_grad()
def sliding_window_nll(model, input_ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """input_ids (T,) -> (sum of token NLLs in nats, number of tokens scored = T - 1)."""
    if not 0 < stride < max_length:
        # stride == max_length would leave each window's first token unscored (no context)
        raise InputError(f"stride must be in 1..max_length-1 ({max_length - 1}), got {stride}")
    device = model_device(model)
    total, count, scored_until = 0.0, 0, 1  # the first token has no context: never scored
    for begin in range(0, len(input_ids), stride):
        end = min(begin + max_length, len(input_ids))
        window = input_ids[begin:end].to(device)
        logits = model(input_ids=window[None]).logits[0, :-1].float()  # predicts window[1:]
        targets = window[1:].clone()
        first_new = max(scored_until - begin - 1, 0)  # positions already scored by an earlier window
        targets[:first_new] = -100
        total += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
        count += int((targets != -100).sum())
        scored_until = end
        if end == len(input_ids):
            break
    return total, count


def run_perplexity(recipe, stride: int | None = None, device: str = "auto", dtype: str = "auto") -> dict:
    """Perplexity of ``recipe.model.name_or_path`` on the recipe's validation text (one stream,
    documents separated by EOS, as the causal LM was trained), computed on ``device``."""
    from pathlib import Path

    from .data.tokenized import tokenize_dataset
    from .hub import parse_model_reference
    from .build import load_tokenizer
    from .data.sources import load_corpus

    if recipe.model.family != "decoder":
        raise InputError(f"model.family: perplexity needs a causal LM (decoder), got {recipe.model.family}")
    target = resolve_device(device)
    name, revision = parse_model_reference(recipe.model.name_or_path)
    model = load_model(AutoModelForCausalLM, name, revision=revision,
                       trust_remote_code=recipe.model.trust_remote_code)
    model = place_model(model, target, inference_dtype(target, dtype, recipe.train.mixed_precision)).eval()
    if not recipe.data.validation_files and not recipe.data.dataset:
        # Scoring files given as training text: all of them, not the slice pretraining holds out.
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(
            recipe.data, validation_split_percentage=0, validation_samples=None))
    corpus = load_corpus(recipe)
    split = "validation" if "validation" in corpus else "train"
    tokenizer = load_tokenizer(recipe, iter(()), Path(recipe.train.output_dir))
    tokens = tokenize_dataset(corpus[split], tokenizer, text_column=recipe.data.text_column)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream = torch.tensor([t for document in tokens for t in (*document, *eos)], dtype=torch.long)
    if len(stream) < 2:
        raise InputError(f"data: the {split} text holds {len(stream)} tokens; perplexity needs at least 2")
    max_length = min(recipe.objective.max_seq_length, getattr(model.config, "max_position_embeddings", 10**9))
    stride = stride or max(max_length // 2, 1)
    nll, count = sliding_window_nll(model, stream, max_length, stride)
    metrics = {"eval_loss": nll / count, "perplexity": math.exp(nll / count), "eval_tokens": count,
               "max_length": max_length, "stride": stride}
    output_dir = Path(recipe.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "eval_results.json", metrics)
    where = f"{model_device(model).type}, {str(next(model.parameters()).dtype).removeprefix('torch.')}"
    print("\n" + results_table(f"Perplexity: {recipe.model.name_or_path} on {split} text ({where})", metrics) + "\n")
    return metrics
