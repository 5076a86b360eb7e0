"""Decoding with transformers' ``generate``, shared by ``hfpipe generate`` and ``hfpipe prefs``.

    model, tokenizer = load_generator("runs/gpt")        # eval mode, left padding, on the best device
    texts = generate(model, tokenizer, ["Once"], **generation_kwargs(max_new_tokens=20, temperature=0.8))

Decoders and encoder-decoders, hfpipe or transformers checkpoints, adapter folders (LoRA merged).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, TextStreamer

from .checkpoints import check_checkpoint, holder_of, is_adapter_folder, load_model, merged
from .device import inference_dtype, model_device, place_model, resolve_device, run_precision
from .errors import InputError


def generation_kwargs(max_new_tokens=50, temperature=1.0, top_k=0, top_p=1.0, num_beams=1,
                      repetition_penalty=1.0, do_sample=False) -> dict:
    """CLI options -> ``generate`` keyword arguments. Temperature 0 means greedy; any of
    temperature != 1, top_k > 0 or top_p < 1 turns sampling on."""
    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens: expected a positive integer, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or num_beams < 1 or repetition_penalty <= 0:
        raise InputError("--temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, --num-beams >= 1 and "
                         "--repetition-penalty > 0 are expected")
    sample = temperature > 0 and (do_sample or temperature != 1.0 or top_k > 0 or top_p < 1.0)
    kwargs = dict(max_new_tokens=max_new_tokens, num_beams=num_beams, repetition_penalty=repetition_penalty,
                  do_sample=sample)
    if sample:
        kwargs.update(temperature=temperature, top_k=top_k or None, top_p=top_p)
    return kwargs


def load_generator(reference: str, trust_remote_code: bool = False, device: str | torch.device = "auto",
                   dtype: str = "auto"):
    """(model in eval mode on ``device``, left-padding tokenizer) of a decoder or encoder-decoder."""
    from .hub import parse_model_reference

    name, revision = parse_model_reference(reference)
    check_checkpoint(name)
    adapter = is_adapter_folder(name)
    if Path(name).is_dir() and not adapter and not (Path(name) / "config.json").is_file():
        raise InputError(f"{reference}: no config.json in this folder; expected a saved model checkpoint")
    config = AutoConfig.from_pretrained(holder_of(name, "config.json"), revision=revision,
                                        trust_remote_code=trust_remote_code)
    auto_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    try:
        model = load_model(auto_class, name, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as error:
        raise InputError(f"{reference}: not a decoder or encoder-decoder checkpoint ({config.model_type})") from error
    if adapter:
        model = merged(model, name) if model.peft_config["default"].peft_type == "LORA" else model
    tokenizer = AutoTokenizer.from_pretrained(holder_of(name, "tokenizer_config.json"), revision=revision)
    tokenizer.padding_side = "left"  # decoders continue from the right end of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = resolve_device(device) if isinstance(device, str) else device
    model = place_model(model, device, inference_dtype(device, dtype, run_precision(name)))
    return model.eval(), tokenizer


def position_limit(config) -> int | None:
    """The longest sequence a decoder's learned position table holds (hfpipe's absolute positions,
    GPT-2's n_positions), or None where positions are computed (RoPE, relative) or not known."""
    if config.is_encoder_decoder:
        return None  # the prompt is the encoder's input; the decoder starts afresh
    if config.model_type.startswith("hfpipe"):
        return config.max_position_embeddings if config.position_embedding_type == "absolute" else None
    return getattr(config, "n_positions", None) if config.model_type == "gpt2" else None


def check_prompts_fit(model, tokenizer, prompts: list[str], max_new_tokens: int, source: str, chat: bool = False):
    """One line naming the first prompt whose tokens plus ``max_new_tokens`` overrun the model's
    position table (generate would fail deep inside with an index error, or truncate), before any
    decoding."""
    limit = position_limit(model.config)
    if limit is None:
        return
    if chat and getattr(tokenizer, "chat_template", None):
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=not chat)["input_ids"]]
    over = [i for i, length in enumerate(lengths) if length + max_new_tokens > limit]
    if over:
        first = over[0]
        raise InputError(
            f"{source}: prompt {first + 1} ({prompts[first][:40]!r}...) is {lengths[first]} tokens; with "
            f"--max-new-tokens {max_new_tokens} it needs {lengths[first] + max_new_tokens} positions, the model "
            f"has {limit}" + (f" ({len(over) - 1} more prompts too long)" if len(over) > 1 else "")
            + "; shorten the prompts or lower --max-new-tokens")


def generate(model, tokenizer, prompts: list[str], seed: int = 0, stream: bool = False, chat: bool = False,
             **kwargs) -> list[str]:
    """Continuations of ``prompts`` (without the prompt for decoders); ``chat``: answers to them as
    user turns of the tokenizer's chat template."""
    torch.manual_seed(seed)
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("--chat: the model's tokenizer has no chat template (instruction-tune it with task sft)")
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    # a chat template writes its special tokens itself
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    batch.pop("token_type_ids", None)
    batch = batch.to(model_device(model))
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    with torch.no_grad():
        output = model.generate(**batch, pad_token_id=tokenizer.pad_token_id, streamer=streamer, **kwargs)
    if not model.config.is_encoder_decoder:
        output = output[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(output, skip_special_tokens=True)
