"""``hfpipe prefs``: preference pairs from a policy and a reward model, for DPO (``task.name: dpo``).

    hfpipe prefs --policy runs/sft --reward runs/sentiment --prompts prefixes.txt --output pairs.jsonl \\
        --samples 4 --max-new-tokens 48 --reward-label positive --seed 0

For every prompt the policy samples ``--samples`` completions; the reward model (any sequence
classifier: an hfpipe GLUE finetune, a transformers checkpoint) scores prompt + completion; the best
becomes ``chosen`` and the worst ``rejected`` (best-of-n and worst-of-n, the on-policy pairs of
Rafailov et al. 2023's sentiment experiment and of iterative DPO). The reward of a text is the log-
probability the classifier gives ``--reward-label`` (a regression head's score as it is). Prompts whose
samples all score alike or are all the same text make no pair: they are counted and named in the log,
never silently dropped. The same seed, prompts and models give the same file.

Output: one JSON line per pair, {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward",
"rewards"} (``rewards``: every sample's score, in sampling order).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from .checkpoints import check_checkpoint, holder_of, load_model
from .decoding import check_prompts_fit, generate, generation_kwargs, load_generator
from .device import model_device, resolve_device
from .errors import InputError
from .tasks.jsonl import json_lines

logger = logging.getLogger("hfpipe.prefs")


def read_prompts(path: str | Path, prompt_column: str = "prompt") -> list[str]:
    """Prompts from a .txt file (one per non-blank line) or JSON lines (``prompt_column`` of each object)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--prompts {path}: no such file; expected a .txt (one prompt per line) or .jsonl file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # "\n" only: prompts may hold U+2028 and kin
    except UnicodeDecodeError as e:
        raise InputError(f"--prompts {path}: not UTF-8 text (byte {e.start})") from None
    if path.suffix.lower() not in (".jsonl", ".json"):
        prompts = [line for line in lines if line.strip()]
    else:
        prompts = []
        for where, row in json_lines(path):
            value = row.get(prompt_column) if isinstance(row, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}: {prompt_column!r} must be a non-empty string "
                                 f"({'missing' if not isinstance(row, dict) or prompt_column not in row else repr(value)[:60]})")
            prompts.append(value)
    if not prompts:
        raise InputError(f"--prompts {path}: no prompts in the file")
    return prompts


def reward_label_index(config, label: str | None) -> int | None:
    """The logit whose log-probability is the reward: ``label`` by name or index; None for a regression
    head (one output, its score is the reward). Without ``label`` a two-label classifier's second label
    (GLUE's "positive", "entailment"...) is taken."""
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if config.num_labels == 1:
        if label is not None:
            raise InputError(f"--reward-label {label}: the reward model is a regression head (one score); remove it")
        return None
    if label is None:
        if config.num_labels != 2:
            raise InputError(f"the reward model has {config.num_labels} labels ({', '.join(labels)}); "
                             "say which one is rewarded with --reward-label")
        return 1
    if label in labels:
        return labels.index(label)
    if label.isdigit() and int(label) < config.num_labels:
        return int(label)
    raise InputError(f"--reward-label {label}: the reward model's labels are {', '.join(labels)}")


def load_reward_model(reference: str, device):
    check_checkpoint(reference)
    if Path(reference).is_dir() and not (Path(holder_of(reference, "config.json")) / "config.json").is_file():
        raise InputError(f"--reward {reference}: no config.json in this folder; expected a sequence classifier")
    model = load_model(AutoModelForSequenceClassification, reference)
    tokenizer = AutoTokenizer.from_pretrained(holder_of(reference, "tokenizer_config.json"))
    return model.to(device).eval(), tokenizer


def score(model, tokenizer, texts: list[str], label: int | None, batch_size: int = 32,
          max_length: int = 512) -> list[float]:
    """The reward of each text: log p(label | text), or the regression score."""
    scores = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(model_device(model))
            logits = model(**batch).logits.float()  # (B, labels)
            values = logits[:, 0] if label is None else logits.log_softmax(-1)[:, label]
            scores += values.tolist()
    return scores


def build_pairs(policy, policy_tokenizer, reward_model, reward_tokenizer, prompts: list[str], samples: int,
                label: int | None, seed: int = 0, batch_size: int = 8, **generation) -> tuple[list[dict], list[str]]:
    """(pairs, prompts that made none): best and worst of ``samples`` completions of each prompt."""
    if samples < 2:
        raise InputError(f"--samples {samples}: a pair needs at least 2 completions per prompt")
    pairs, unpaired = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        repeated = [prompt for prompt in chunk for _ in range(samples)]
        # each batch draws from its own seed: the same prompts give the same file, whatever ran before
        completions = generate(policy, policy_tokenizer, repeated, seed=seed + start, **generation)
        rewards = score(reward_model, reward_tokenizer, [p + c for p, c in zip(repeated, completions)], label)
        for i, prompt in enumerate(chunk):
            texts, values = completions[i * samples:(i + 1) * samples], rewards[i * samples:(i + 1) * samples]
            best = max(range(samples), key=values.__getitem__)
            worst = min(range(samples), key=values.__getitem__)
            if values[best] == values[worst] or texts[best].strip() == texts[worst].strip() \
                    or not texts[best].strip() or not texts[worst].strip():
                unpaired.append(prompt)
                continue
            pairs.append({"prompt": prompt, "chosen": texts[best], "rejected": texts[worst],
                          "chosen_reward": values[best], "rejected_reward": values[worst], "rewards": values})
        logger.info("prefs: %d of %d prompts done, %d pairs", min(start + batch_size, len(prompts)), len(prompts),
                    len(pairs))
    return pairs, unpaired


def run_prefs(args) -> list[dict]:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"--output {output} exists; choose another file or pass --overwrite")
    prompts = read_prompts(args.prompts, args.prompt_column)
    generation = generation_kwargs(args.max_new_tokens, args.temperature, args.top_k, args.top_p, do_sample=True)
    if not generation["do_sample"]:
        raise InputError("--temperature 0 is greedy: every sample of a prompt would be the same; expected > 0")
    check_checkpoint(args.reward)
    label = reward_label_index(AutoConfig.from_pretrained(holder_of(args.reward, "config.json")), args.reward_label)
    device = resolve_device(args.device)
    policy, policy_tokenizer = load_generator(args.policy, device=device, dtype=args.dtype)
    check_prompts_fit(policy, policy_tokenizer, prompts, args.max_new_tokens, f"--prompts {args.prompts}")
    reward_model, reward_tokenizer = load_reward_model(args.reward, device)
    pairs, unpaired = build_pairs(policy, policy_tokenizer, reward_model, reward_tokenizer, prompts, args.samples,
                                  label, seed=args.seed, batch_size=args.batch_size, **generation)
    if unpaired:
        logger.warning("prefs: %d of %d prompts made no pair (their samples scored alike or were the same text), "
                       "e.g. %r", len(unpaired), len(prompts), unpaired[0][:80])
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")  # a crash never leaves half a file under the name
    temporary.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")
    temporary.replace(output)
    margins = [pair["chosen_reward"] - pair["rejected_reward"] for pair in pairs]
    mean = lambda values: sum(values) / len(values) if values else math.nan  # noqa: E731
    rows = {"prompts": len(prompts), "pairs": len(pairs), "prompts without a pair": len(unpaired),
            "samples per prompt": args.samples, "mean chosen reward": mean([p["chosen_reward"] for p in pairs]),
            "mean rejected reward": mean([p["rejected_reward"] for p in pairs]), "mean margin": mean(margins)}
    from .training.results import results_table

    print("\n" + results_table(f"Preference pairs: {output}", rows) + "\n")
    return pairs


__all__ = ["build_pairs", "read_prompts", "reward_label_index", "run_prefs", "score"]
