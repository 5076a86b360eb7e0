"""Instruction tuning: supervised finetuning of a decoder on (instruction, response) pairs, with
the loss on the response tokens only.

    rows = load_sft_jsonl("train.jsonl")                  # {"instruction": ..., "response": ...} per line
    tokenizer = ensure_chat_template(tokenizer)            # the tokenizer's own, else DEFAULT_CHAT_TEMPLATE
    features = sft_features(tokenizer, "Name a colour.", "Blue.", max_length=512)
    # features["labels"]: -100 over the prompt, the token ids over "Blue." + the end-of-turn marker

Each pair is rendered with the tokenizer's chat template as a user turn and an assistant turn. The
prompt -- the user turn followed by the generation prompt, exactly what
``apply_chat_template(messages, add_generation_prompt=True)`` gives at inference -- must be a
prefix of the rendered pair; every token that starts at or after the prompt's end is a response
token and keeps its label, every other label is -100. The template is saved with the tokenizer,
so the finetuned model is prompted exactly as it was trained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets

from ..errors import InputError
from ..recipes.engine import error
from .base import Splits, Task, TaskRun, adapt, register
from .embedded import embedded_sft
from .jsonl import json_lines

logger = logging.getLogger("hfpipe.sft")

IGNORE_INDEX = -100  # labels transformers' cross-entropy skips
# For tokenizers without a template (base models): plain-text markers, so no token is added and no
# embedding resized; the end of the response is the EOS token, so generation learns to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)


def with_context(instruction: str, context: str | None) -> str:
    """Dolly-style rows carry a passage the instruction refers to (closed QA, summarisation): it
    follows the instruction in the prompt, after a blank line, as Dolly's own training script does."""
    return f"{instruction}\n\n{context.strip()}" if context and context.strip() else instruction


def load_sft_jsonl(path: str | Path, instruction_column: str = "instruction",
                   response_column: str = "response", context_column: str | None = "context") -> datasets.Dataset:
    """A JSON-lines file of pairs as a Dataset with ``instruction`` and ``response`` columns.

    Every line must be an object holding both keys as non-empty strings; the first that is not
    raises InputError naming the file and line. Blank lines are skipped. An optional
    ``context_column`` (a string, may be empty) joins the instruction (``with_context``); other keys
    are ignored.
    """
    rows = {"instruction": [], "response": []}
    for where, row in json_lines(path):
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with {instruction_column!r} and {response_column!r}")
        for key, target in ((instruction_column, "instruction"), (response_column, "response")):
            value = row.get(key)
            if not isinstance(value, str) or not value.strip():
                found = "missing" if key not in row else f"got {value!r}"[:80]
                raise InputError(f"{where}: {key!r} must be a non-empty string ({found})")
            rows[target].append(value)
        if context_column is not None and context_column in row:
            context = row[context_column]
            if context is not None and not isinstance(context, str):
                raise InputError(f"{where}: {context_column!r} must be a string (got {context!r})"[:200])
            rows["instruction"][-1] = with_context(rows["instruction"][-1], context)
    if not rows["instruction"]:
        raise InputError(f"{path}: no (instruction, response) pairs in the file")
    return datasets.Dataset.from_dict(rows)


def ensure_chat_template(tokenizer, template: str | None = None):
    """Give ``tokenizer`` the recipe's template, else keep its own, else DEFAULT_CHAT_TEMPLATE."""
    if template is not None:
        tokenizer.chat_template = template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.eos_token is None:
        raise InputError("task: instruction tuning needs a tokenizer with an EOS token (the end of a response)")
    return tokenizer


def render(tokenizer, instruction: str, response: str | None = None) -> str:
    """The chat-template text of one pair; without a response, the prompt that asks for one."""
    messages = [{"role": "user", "content": instruction}]
    if response is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(messages, tokenize=False)


def sft_features(tokenizer, instruction: str, response: str, max_length: int | None = None) -> dict | None:
    """input_ids, attention_mask and labels of one pair (labels -100 outside the response).

    None when the pair is longer than ``max_length`` tokens: the caller counts and reports those,
    rather than training on a response cut off before its end.
    """
    prompt, full = render(tokenizer, instruction), render(tokenizer, instruction, response)
    if not full.startswith(prompt):
        raise InputError("task.chat_template: the generation prompt (add_generation_prompt=True) is not a prefix of "
                         "the rendered (instruction, response) pair, so the response cannot be located")
    # The template writes the special tokens (BOS, EOS) itself: add none a second time.
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    if max_length is not None and len(encoded["input_ids"]) > max_length:
        return None
    boundary = len(prompt)
    labels = [token if start >= boundary else IGNORE_INDEX
              for token, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    if all(label == IGNORE_INDEX for label in labels):
        raise InputError(f"the response {response[:40]!r} gave no tokens after the prompt: check the chat template")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def tokenize_sft(dataset: datasets.Dataset, tokenizer, max_length: int, split: str) -> datasets.Dataset:
    """Features of every pair; pairs longer than ``max_length`` are left out, counted and reported."""
    def encode(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for instruction, response in zip(batch["instruction"], batch["response"]):
            features = sft_features(tokenizer, instruction, response, max_length)
            if features is not None:
                for key in out:
                    out[key].append(features[key])
        return out

    features = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {split}")
    dropped = len(dataset) - len(features)
    if dropped == len(dataset):
        raise InputError(f"{split}: every (instruction, response) pair is longer than task.max_seq_length "
                         f"({max_length} tokens); raise it")
    if dropped:
        logger.warning(
            "%s: left out %d of %d pairs longer than task.max_seq_length (%d tokens); raise it to keep them",
            split, dropped, len(dataset), max_length)
    return features


# ---------------------------------------------------------------------------------- the task plug-in
SFT_GENERATION_SAMPLES = 8  # validation instructions answered greedily after training, for a look


@register
@dataclass
class Sft(Task):
    """Instruction tuning (``task.name: sft``): causal-LM loss on the response tokens of each pair; eval
    loss, perplexity and a few greedy answers (eval_generations.jsonl)."""

    name: Literal["sft"]
    instruction_column: str = "instruction"  # sft: the JSON key / dataset column of the instruction
    response_column: str = "response"  # sft: ... of the response (the only tokens with a loss)
    context_column: str | None = "context"  # sft: an optional passage joined to the instruction (Dolly); None: ignore
    chat_template: str | None = None  # sft: Jinja chat template; None: the tokenizer's own, else hfpipe's plain one

    def check(self, recipe, where: str) -> None:
        if recipe.model.family != "decoder":
            raise error(where, "model.family", f"sft (instruction tuning) trains a decoder, got {recipe.model.family}")

    def embedded_data(self, seed: int, num_train: int, num_eval: int) -> Splits:
        return Splits(embedded_sft(seed=seed, num_train=num_train, num_eval=num_eval), ["hfpipe-embedded"])

    def load_data(self, recipe, train_files, validation_files, do_train) -> Splits:
        return Splits(_load_splits(recipe, train_files, validation_files, do_train),
                      [recipe.data.dataset or "local JSON lines"])

    def run(self, recipe, data, do_train: bool, resume_from) -> TaskRun:
        from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq

        from hfpipe.build import load_tokenizer_and_model
        from hfpipe.training.results import add_perplexity, standard_metric_name
        from hfpipe.training.trainer import build_trainer

        texts = lambda: (t for row in data.train or [] for t in (row["instruction"], row["response"]))  # noqa: E731
        tokenizer, model = load_tokenizer_and_model(recipe, AutoModelForCausalLM, texts)
        ensure_chat_template(tokenizer, self.chat_template)  # saved with the tokenizer, for inference
        model = adapt(recipe, model, tokenizer)
        train = tokenize_sft(data.train, tokenizer, self.max_seq_length, "train") if data.train is not None else None
        validation = data.evaluation.get("validation")
        features = tokenize_sft(validation, tokenizer, self.max_seq_length, "validation") if validation is not None else None
        # pads input_ids with the pad token and labels with -100: padding never enters the loss
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        trainer, _ = build_trainer(recipe, model, tokenizer, train, features, collator)
        train_result = trainer.train(resume_from_checkpoint=resume_from) if do_train else None
        metrics = {}
        if features is not None:
            scores, _ = trainer.evaluate_once(features, predictions=False)  # the final step's pass, if it ran one
            metrics = add_perplexity({standard_metric_name(k): v for k, v in scores.items()})
        answers = _answer(trainer, tokenizer, validation if validation is not None else [], self.max_seq_length)
        return TaskRun(trainer, train_result, metrics, answers)

    def write_predictions(self, output_dir: Path, predictions: list[dict]) -> None:
        with open(output_dir / "eval_generations.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)


def _answer(trainer, tokenizer, rows, max_length: int) -> list[dict]:
    """Greedy answers to the first SFT_GENERATION_SAMPLES instructions whose prompt leaves room
    for an answer within max_length, prompted with the chat template as in training."""
    import torch

    model = trainer.model.eval()
    out, passed_over = [], 0
    for row in rows:
        if len(out) == SFT_GENERATION_SAMPLES:
            break
        prompt = tokenizer(render(tokenizer, row["instruction"]), add_special_tokens=False, return_tensors="pt")
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


def _load_splits(recipe, train_files, validation_files, do_train) -> dict:
    """JSON-lines files or a Hub dataset; no validation set: data.validation_split_percentage held out."""
    task, data = recipe.task, recipe.data
    columns = {"instruction_column": task.instruction_column, "response_column": task.response_column,
               "context_column": task.context_column}
    if train_files or validation_files:
        splits = {"train": load_sft_jsonl(train_files[0], **columns)} if train_files and do_train else {}
        if validation_files:
            splits["validation"] = load_sft_jsonl(validation_files[0], **columns)
    else:
        from hfpipe.hub import load_hub_dataset

        loaded = load_hub_dataset(data.dataset, data.dataset_config, local_hint="give JSONL files of "
                                  "instruction/response pairs instead (--train-file/--validation-file)")
        renames = {task.instruction_column: "instruction", task.response_column: "response"}
        splits = {}
        for name, split in (("train", "train"), ("validation", "validation"), ("validation", "test")):
            if split in loaded and name not in splits:
                missing = [c for c in renames if c not in loaded[split].column_names]
                if missing:
                    raise InputError(f"{data.dataset} [{split}]: no column {missing[0]!r} (task.instruction_column / "
                                     f"task.response_column); it has {loaded[split].column_names}")
                kept = loaded[split]
                if task.context_column in kept.column_names:
                    kept = kept.map(lambda row: {task.instruction_column: with_context(
                        row[task.instruction_column], row[task.context_column])})
                kept = kept.select_columns(list(renames))
                splits[name] = kept.rename_columns({k: v for k, v in renames.items() if k != v})
    if "validation" not in splits and "train" in splits and data.validation_split_percentage > 0:
        held = splits["train"].train_test_split(test_size=data.validation_split_percentage / 100,
                                                seed=recipe.train.seed)
        splits = {"train": held["train"], "validation": held["test"]}
    return splits


__all__ = ["DEFAULT_CHAT_TEMPLATE", "Sft", "load_sft_jsonl", "ensure_chat_template", "render", "sft_features", "tokenize_sft"]
