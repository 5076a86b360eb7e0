"""Does pretraining pay off? A CPU cram of each family, then pretrained vs random init downstream.

    python experiments/cram.py sizes      # choose size and vocabulary: short runs compared at equal time
    python experiments/cram.py pretrain   # recipes/pretrain/cram-cpu-{encoder,decoder,seq2seq}.yaml as written
    python experiments/cram.py finetune   # crammed vs random init, 3 seeds: SST-2 (+ MRPC, STS-B for the encoder)
    python experiments/cram.py linear-probe  # what each frozen layer of the encoder holds about sentiment
    python experiments/cram.py report     # results.md and the PNGs, from the JSON files
    python experiments/cram.py all        # pretrain, finetune (and the encoder's variants), linear-probe,
                                          # report (about 4 hours on two cores)

Everything lands in runs/cram/ (models) and experiments/results/cram/ (tables, JSON, PNGs). The
random-init twin of a crammed model is the same class built from the same config.json with the same
tokenizer, so the two differ only in their weights; both are finetuned by the same recipe and seed.
Needs ../shared/data (the text corpora, GLUE's SST-2, MRPC and STS-B TSVs, WikiText-2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from hfpipe.build import save_random_twin

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RUNS = ROOT / "runs" / "cram"
RESULTS = ROOT / "experiments" / "results" / "cram"
FAMILIES = ("encoder", "decoder", "seq2seq")
RECIPE = {family: ROOT / "recipes" / "pretrain" / f"cram-cpu-{family}.yaml" for family in FAMILIES}
HFPIPE = [sys.executable, "-m", "hfpipe"]

# Size and vocabulary candidates, run side by side (one thread each) on the same short budget; the
# recipes carry the winner. (hidden, layers, heads, FFN, vocabulary)
CANDIDATES = {
    "h128-l4-v8k": (128, 4, 2, 512, 8192),
    "h256-l4-v8k": (256, 4, 4, 1024, 8192),
    "h256-l4-v4k": (256, 4, 4, 1024, 4096),
}

# Finetuning: one recipe per (family, task), identical for the crammed model and its random twin.
# SST-2: a fixed random subset of the 67k training phrases (finetuning all of them, 3 seeds x 2 inits x 3
# families, would take hours on two cores); the dev set (872 sentences) whole.
SST2_TRAIN = 8000
GLUE = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B"}
TASKS = {"encoder": ("sst2", "mrpc", "stsb"), "decoder": ("sst2",), "seq2seq": ("sst2",)}
METRIC = {"sst2": "accuracy", "mrpc": "f1", "stsb": "pearson"}
EPOCHS = {"sst2": 3, "mrpc": 3, "stsb": 3}
# BERT's and GPT-1's finetuning rate for the encoder and the decoder; T5 finetunes at a higher one (1e-3
# with Adafactor), and at 1e-4 both inits of the tiny encoder-decoder still answered "positive" to every
# sentence after an epoch.
LEARNING_RATE = {"encoder": 1e-4, "decoder": 1e-4, "seq2seq": 3e-4}
OBJECTIVE = {"encoder": "masked LM", "decoder": "causal LM", "seq2seq": "span corruption"}
SEEDS = (0, 1, 2)
# The encoder's SST-2 variants that `all` runs after the recipe's settings (experiments/README.md, "What
# limits it"): [CLS] pooling, the finetuning rate, and which crammed weights are kept.
ENCODER_VARIANTS = ({"pooling": "cls"}, {"learning_rate": 3e-4, "seeds": (0,)},
                    {"learning_rate": 1e-3, "seeds": (0,)},
                    {"keep_layers": 1, "seeds": (0,)}, {"keep_layers": 0, "seeds": (0,)},
                    {"keep_layers": 4, "keep_word_embeddings": False, "seeds": (0,)})


def run(command: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait(processes: dict[str, subprocess.Popen], logs: dict[str, Path]) -> None:
    for name, process in processes.items():
        if process.wait() != 0:
            tail = "\n".join(logs[name].read_text(errors="replace").splitlines()[-15:])
            raise SystemExit(f"{name} failed (exit {process.returncode}); the end of {logs[name]}:\n{tail}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def nats_per_char(run_dir: Path, eval_loss: float) -> float:
    """Held-out loss per character of text, so that runs with different vocabularies compare: the
    loss per predicted token times the held-out set's tokens per character."""
    from transformers import AutoTokenizer

    from hfpipe.data.sources import load_corpus
    from hfpipe.recipes import load_recipe

    recipe = load_recipe(run_dir / "recipe.yaml")
    texts = list(load_corpus(recipe)["validation"][recipe.data.text_column])
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return eval_loss * tokens / sum(len(text) for text in texts)


def sst2_dev_sentences() -> list[str]:
    """SST-2's dev sentences, read by hfpipe's GLUE reader."""
    from hfpipe.tasks.glue import load_glue

    return load_glue("sst2", validation_file=task_files("sst2")[1])["validation"]["sentence"]


def words_split(run_dir: Path) -> dict:
    """How well the cram's tokenizer fits each text: WordPiece pieces per word, and the share of words
    it splits, on SST-2's dev sentences and on the held-out pretraining text."""
    import re

    from transformers import AutoTokenizer

    from hfpipe.data.sources import load_corpus
    from hfpipe.recipes import load_recipe

    recipe, tokenizer = load_recipe(run_dir / "recipe.yaml"), AutoTokenizer.from_pretrained(run_dir)
    texts = {"SST-2 dev": sst2_dev_sentences(), "held-out pretraining text": list(load_corpus(recipe)["validation"][recipe.data.text_column])}
    result = {}
    for name, lines in texts.items():
        pieces = [len(tokenizer.tokenize(word)) for line in lines for word in re.findall(r"\w+", line.lower())]
        result[name] = {"words": len(pieces), "pieces_per_word": sum(pieces) / len(pieces),
                        "split": sum(count > 1 for count in pieces) / len(pieces)}
    return result


def rare_token_embeddings(family: str = "encoder") -> list[dict]:
    """Representation degeneration (Gao et al. 2019): with tied input and output embeddings, each softmax
    step pushes the output embeddings of all the tokens that are not the target the same way, so the
    tokens pretraining rarely shows drift towards one direction. The family's vocabulary grouped by how
    often one pass of the pretraining mixture holds each token: the mean pairwise cosine of the group's
    word embeddings, crammed and random twin, and the group's share of SST-2's dev tokens."""
    from collections import Counter

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from hfpipe.data.sources import load_corpus
    from hfpipe.recipes import load_recipe

    recipe, tokenizer = load_recipe(RUNS / family / "recipe.yaml"), AutoTokenizer.from_pretrained(RUNS / family)
    count = lambda lines: Counter(i for ids in tokenizer(lines, add_special_tokens=False)["input_ids"] for i in ids)
    seen = count(list(load_corpus(recipe)["train"][recipe.data.text_column]))
    dev = count(sst2_dev_sentences())
    embeddings = {init: torch.nn.functional.normalize(load_file(RUNS / folder / "model.safetensors")
                                                      ["model.embeddings.word_embeddings.weight"], dim=-1)
                  for init, folder in (("crammed", family), ("random", f"{family}-random"))}
    groups = []
    for low, high in ((0, 1), (1, 10), (10, 100), (100, 1000), (1000, math.inf)):
        ids = [i for i in range(len(tokenizer)) if low <= seen.get(i, 0) < high]
        if len(ids) < 2:
            continue
        cosines = {init: ((e[ids] @ e[ids].T).sum().item() - len(ids)) / (len(ids) * (len(ids) - 1))
                   for init, e in embeddings.items()}
        groups.append({"seen": f"{low}" if high == low + 1 else f"{low}+" if high == math.inf else f"{low}-{high - 1}",
                       "tokens": len(ids), "dev_share": sum(dev[i] for i in ids) / sum(dev.values()), **cosines})
    return groups


def parameters(run_dir: Path) -> int:
    """Stored parameters (tied matrices once), read from the safetensors header without loading."""
    from safetensors import safe_open

    with safe_open(run_dir / "model.safetensors", "pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


# ---------------------------------------------------------------------------------------------- sizes
def sizes(families: tuple[str, ...], minutes: float) -> dict:
    """Each family's candidates side by side, one thread each, `minutes` of budget each."""
    results = load("sizes")
    for family in families:
        processes, logs = {}, {}
        for name, (hidden, layers, heads, ffn, vocab) in CANDIDATES.items():
            out = RUNS / "sizes" / family / name
            if (out / "eval_results.json").is_file():
                continue  # measured already
            logs[name] = out.with_suffix(".log")
            sets = {"model.config.hidden_size": hidden, "model.config.num_hidden_layers": layers,
                    "model.config.num_attention_heads": heads, "model.config.intermediate_size": ffn,
                    "tokenizer.vocab_size": vocab, "train.time_budget": f"{minutes}m", "train.eval_steps": 100000,
                    "train.save_steps": 100000, "train.overwrite": True}
            if family == "seq2seq":
                sets["model.config.head_dim"] = hidden // heads
            command = [*HFPIPE, "pretrain", str(RECIPE[family]), "--output-dir", str(out)]
            command += [a for key, value in sets.items() for a in ("--set", f"{key}={value}")]
            processes[name] = run(command, logs[name], threads=1)
        wait(processes, logs)
        for name in CANDIDATES:
            out = RUNS / "sizes" / family / name
            metrics, train = read_json(out / "eval_results.json"), read_json(out / "train_results.json")
            results.setdefault(family, {})[name] = {
                "eval_loss": metrics["eval_loss"], "nats_per_char": nats_per_char(out, metrics["eval_loss"]),
                "steps": read_json(out / "trainer_state.json")["global_step"], "parameters": parameters(out),
                "train_seconds": train["train_runtime"]}
        print(table(f"{family}: {minutes} min each, three runs side by side on two cores",
                    ["candidate (hidden, layers, vocabulary)", "parameters", "steps", "held-out loss / token",
                     "held-out loss / character"],
                    [[name, f"{r['parameters'] / 1e6:.2f}M", r["steps"], f"{r['eval_loss']:.3f}",
                      f"{r['nats_per_char']:.3f}"] for name, r in results[family].items()]), flush=True)
    save("sizes", results)
    return results


# ------------------------------------------------------------------------------------------- pretrain
def pretrain(families: tuple[str, ...], side_by_side: bool, budget: str | None = None) -> dict:
    """The cram recipes as written, one after the other on all cores, or side by side (one thread each);
    ``budget`` replaces the recipes' 30 minutes."""
    results = {}
    batches = [families] if side_by_side else [(family,) for family in families]
    sets = ["--set", "train.overwrite=true"] + (["--set", f"train.time_budget={budget}"] if budget else [])
    for batch in batches:
        processes = {f: run([*HFPIPE, "pretrain", str(RECIPE[f]), "--output-dir", str(RUNS / f), *sets],
                            RUNS / f"{f}.log", threads=1 if side_by_side else None)
                     for f in batch}
        wait(processes, {f: RUNS / f"{f}.log" for f in batch})
    for family in families:
        out = RUNS / family
        history = read_json(out / "loss_history.json")
        results[family] = {"eval": read_json(out / "eval_results.json"), "train": read_json(out / "train_results.json"),
                           "steps": read_json(out / "trainer_state.json")["global_step"], "history": history,
                           "side_by_side": side_by_side}
    save("pretrain", {**load("pretrain"), **results})
    return results


def perplexity() -> dict:
    """The crammed decoder's perplexity on WikiText-2's validation text (``hfpipe evaluate`` of its recipe)."""
    out = RESULTS / "wikitext2"
    command = [*HFPIPE, "evaluate", str(RECIPE["decoder"]), "--model", str(RUNS / "decoder"), "--validation-file",
               str(DATA / "text" / "wikitext2-tokenized-valid.txt"), "--output-dir", str(out),
               "--set", "train.overwrite=true"]  # the decoder was crammed again: score it again
    wait({"perplexity": run(command, RUNS / "perplexity.log")}, {"perplexity": RUNS / "perplexity.log"})
    return read_json(out / "eval_results.json")


def draw_curves() -> Path:
    """Training and held-out loss against wall time, one panel per family."""
    runs = load("pretrain")
    fig, axes = panels(len(runs))
    for ax, (family, result) in zip(axes, runs.items()):
        history = result["history"]
        ax.plot([s / 60 for s in history["train_seconds"]], [loss for _, loss in history["train"]], label="training")
        ax.plot([s / 60 for s in history["eval_seconds"]], [loss for _, loss in history["eval"]], marker="o",
                label="held out")
        other = RESULTS / "attempt2-preln-history.json"
        if family == "encoder" and other.is_file():  # Cramming's pre-LN block, stopped after 20 minutes
            other = read_json(other)
            ax.plot([s / 60 for s in other["eval_seconds"]], [loss for _, loss in other["eval"]], marker="x",
                    linestyle="--", label="held out, pre-LN without biases")
        label(ax, f"{family} ({OBJECTIVE[family]})", "minutes of training", "loss (nats/token)")
    return save_figure(fig, "pretraining-loss-vs-time.png")


def draw_finetuning_curves() -> Path:
    """SST-2 finetuning: training loss of the crammed model and of its random twin (every seed), one
    panel per family; where the crammed model fits more slowly, the panel shows it."""
    families = [f for f in FAMILIES if (RUNS / "finetune" / f / "sst2").is_dir()]
    fig, axes = panels(len(families))
    for ax, family in zip(axes, families):
        for init, color in (("crammed", "tab:blue"), ("random", "tab:orange")):
            for seed in SEEDS:
                steps, losses = zip(*read_json(RUNS / "finetune" / family / "sst2" / f"{init}-seed{seed}"
                                               / "loss_history.json")["train"])
                ax.plot(steps, losses, color=color, alpha=0.7, label=init if seed == SEEDS[0] else None)
        label(ax, f"{family}: SST-2 finetuning", "optimizer step", "training loss")
    return save_figure(fig, "sst2-finetuning-loss.png")


def panels(count: int):
    """A figure of ``count`` panels side by side, and the panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, count, figsize=(5 * count, 3.6), dpi=100, squeeze=False)
    return fig, list(axes[0])


def label(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def save_figure(fig, name: str, folder: Path | None = None) -> Path:
    import matplotlib.pyplot as plt

    folder = folder or RESULTS  # looked up when called: the other experiments pass their own
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name)
    plt.close(fig)
    return folder / name


# ------------------------------------------------------------------------------------------- finetune
def task_files(task: str) -> tuple[Path, Path]:
    """GLUE's TSVs; for SST-2 a fixed random subset of SST2_TRAIN training phrases (seed 0)."""
    import random

    folder = DATA / "glue" / GLUE[task]
    if task != "sst2":
        return folder / "train.tsv", folder / "dev.tsv"
    subset = RUNS / "data" / f"sst2-train-{SST2_TRAIN}.tsv"
    if not subset.is_file():
        header, *rows = (folder / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text(header + "".join(random.Random(0).sample(rows, SST2_TRAIN)), encoding="utf-8")
    return subset, folder / "dev.tsv"


def finetune_recipe(family: str, task: str, model: Path, out: Path, seed: int, pooling: str | None = "mean",
                    epochs: float | None = None, learning_rate: float | None = None,
                    files: tuple[Path, Path] | None = None) -> Path:
    """The one finetuning recipe of (family, task); only the model folder and seed vary (``files``: other
    training and dev files than `task_files`, e.g. fewer labels; ``pooling=None``: the checkpoint's own
    classifier, for a BERT that is not hfpipe's)."""
    import yaml

    train, dev = files or task_files(task)
    # pretraining ran without dropout (Cramming); finetuning uses BERT's 0.1 for both inits
    config = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
    if family == "encoder" and pooling is not None:
        config["classifier_pooling"] = pooling  # README: [CLS] of a briefly MLM-trained encoder summarises little
    recipe = {
        "kind": "finetune",
        "description": f"cram experiment: {family} on {task}",
        "model": {"family": family, "name_or_path": str(model), "config": config},
        "task": {"name": task, "max_seq_length": 128},
        "data": {"train_files": [str(train)], "validation_files": [str(dev)]},
        "train": {"output_dir": str(out), "num_train_epochs": epochs or EPOCHS[task], "per_device_train_batch_size": 32,
                  "per_device_eval_batch_size": 128, "learning_rate": learning_rate or LEARNING_RATE[family],
                  "weight_decay": 0.01, "lr_scheduler_type": "linear", "warmup_ratio": 0.1, "seed": seed,
                  "logging_steps": 50, "eval_steps": 100000, "save_steps": 100000, "save_total_limit": 1,
                  "overwrite": True, "report_to": []},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def variant(pooling: str = "mean", epochs: float | None = None, learning_rate: float | None = None) -> str:
    """The suffix naming a finetuning variant's run folders and results file ("" for the defaults)."""
    return ((f"-{pooling}-pooling" if pooling != "mean" else "") + (f"-{epochs:g}epochs" if epochs else "")
            + (f"-lr{learning_rate:g}" if learning_rate else ""))


def finetune(families: tuple[str, ...], parallel: int, pooling: str = "mean", tasks: tuple[str, ...] = tuple(GLUE),
             epochs: float | None = None, learning_rate: float | None = None, seeds: tuple[int, ...] = SEEDS,
             keep_layers: int | None = None, keep_word_embeddings: bool = True) -> dict:
    """Every (family, task, init, seed) run, `parallel` at a time (one thread each when parallel > 1).
    ``pooling``: the encoder's classifier input ("mean" in the results; "cls" for BERT's [CLS]);
    ``epochs``/``learning_rate``: instead of the recipe's; a variant lands in its own folders and file.
    ``keep_layers``: the crammed side keeps only its embeddings and first blocks, the blocks above are
    drawn as the random twin's (``save_random_twin(keep_layers=)``), and with ``keep_word_embeddings=False``
    its word embeddings too; the random side is unchanged."""
    jobs = []
    for family in families:
        suffix = variant(pooling if family == "encoder" else "mean", epochs, learning_rate)
        crammed, kept, twin = RUNS / family, "", RUNS / f"{family}-random"
        if not (twin / "config.json").is_file():
            save_random_twin(RUNS / family, twin)
        if keep_layers is not None:
            kept = f"-bottom{keep_layers}" + ("" if keep_word_embeddings else "-new-word-embeddings")
            crammed = RUNS / f"{family}{kept}"
            if not (crammed / "config.json").is_file():
                save_random_twin(RUNS / family, crammed, keep_layers=keep_layers,
                                 keep_word_embeddings=keep_word_embeddings)
        for task in (t for t in TASKS[family] if t in tasks):
            for init, model in (("crammed", crammed), ("random", twin)):
                for seed in seeds:
                    name = f"{init}{kept if init == 'crammed' else ''}-seed{seed}"
                    out = RUNS / "finetune" / (family + suffix) / task / name
                    jobs.append(((family, task, init, seed, suffix + kept), out,
                                 finetune_recipe(family, task, model, out, seed, pooling, epochs, learning_rate)))
    pending = [job for job in jobs if not (job[1] / "eval_results.json").is_file()]
    while pending:
        batch, pending = pending[:parallel], pending[parallel:]
        logs = {str(key): out.with_suffix(".log") for key, out, _ in batch}
        processes = {str(key): run([*HFPIPE, "finetune", str(recipe)], logs[str(key)],
                                   threads=1 if parallel > 1 else None) for key, out, recipe in batch}
        wait(processes, logs)
    scores: dict = {}  # results file -> family -> task -> scores of each init
    for (family, task, init, seed, suffix), out, _ in jobs:
        metrics = read_json(out / "eval_results.json")
        entry = scores.setdefault("finetune" + suffix, {}).setdefault(family, {}).setdefault(task, {})
        entry.setdefault(init, []).append(100 * metrics[METRIC[task]])
        entry["epochs"], entry["learning_rate"] = epochs or EPOCHS[task], learning_rate or LEARNING_RATE[family]
    for name, results in scores.items():
        merged = load(name)  # a run of some tasks keeps the other tasks' results
        for family, tasks in results.items():
            merged.setdefault(family, {}).update(tasks)
        save(name, merged)
    return scores


# --------------------------------------------------------------------------------------- linear probe
def linear_probe() -> dict:
    """How much sentiment each layer of the crammed encoder and of its random twin holds, frozen: a
    logistic regression on the mean of each layer's token states, trained on the SST-2 training subset
    and scored on dev. Finetuning mixes what pretraining learned with how easily the weights adapt; this
    separates the first."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from transformers import AutoModel, AutoTokenizer

    from hfpipe.tasks.glue import load_glue

    sst2 = load_glue("sst2", *task_files("sst2"))
    train, dev = sst2["train"], sst2["validation"]
    results = {}
    for init, folder in (("crammed", RUNS / "encoder"), ("random", RUNS / "encoder-random")):
        tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

        def features(sentences: list[str]) -> list[torch.Tensor]:
            layers = []
            with torch.no_grad():
                for start in range(0, len(sentences), 256):
                    batch = tokenizer(sentences[start:start + 256], padding=True, truncation=True, max_length=128,
                                      return_tensors="pt")
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    states = model(**batch, output_hidden_states=True).hidden_states
                    layers.append([(h * mask).sum(1) / mask.sum(1) for h in states])
            return [torch.cat(per_layer).numpy() for per_layer in zip(*layers)]

        scores = []
        for x_train, x_dev in zip(features(train["sentence"]), features(dev["sentence"])):
            classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            scores.append(100 * classifier.fit(x_train, train["label"]).score(x_dev, dev["label"]))
        results[init] = scores
    save("linear-probe", results)
    return results


def report() -> str:
    """The results as markdown (experiments/results/cram/results.md), printed too."""
    pretrained, rows = load("pretrain"), []
    # the recipe's settings first, then the variants (other pooling, learning rate or epochs)
    for path in sorted(RESULTS.glob("finetune*.json"), key=lambda path: (path.stem != "finetune", path.stem)):
        kept, new_words, _ = path.stem.partition("-bottom")[2].partition("-new-word-embeddings")
        what = (", [CLS] pooling" if "-cls-pooling" in path.stem else "") + (
            "" if not kept else ", crammed embeddings, all blocks redrawn" if kept == "0" else
            f", crammed first {kept} blocks, word embeddings redrawn" if new_words else
            f", crammed embeddings + first {kept} blocks, the rest redrawn")
        for family, tasks in read_json(path).items():
            for task, inits in tasks.items():
                crammed, random_init = inits["crammed"], inits["random"]
                rows.append([family + what, f"{GLUE[task]} dev {METRIC[task]}", f"{inits.get('epochs', 3):g}",
                             f"{inits.get('learning_rate', 1e-4):g}", len(crammed), spread(crammed),
                             spread(random_init), f"{statistics.mean(crammed) - statistics.mean(random_init):+.1f}"])
    text = table("Finetuned from the cram vs from random init (mean ± standard deviation over seeds "
                 f"{', '.join(map(str, SEEDS))}, or seed 0 alone)",
                 ["family", "task", "epochs", "learning rate", "seeds", "crammed", "random init", "gain"], rows)
    if (probed := load("linear-probe")):
        layers = range(len(probed["crammed"]))
        text += "\n" + table("Linear probe: SST-2 dev accuracy of a logistic regression on each frozen layer's mean "
                             "token state (layer 0: the embeddings)", ["encoder init", *(f"layer {i}" for i in layers)],
                             [[init, *(f"{score:.1f}" for score in scores)] for init, scores in probed.items()])
    if (RUNS / "encoder" / "recipe.yaml").is_file():
        text += "\n" + table("The encoder's WordPiece on the two kinds of text", ["text", "words", "pieces per word",
                                                                                     "words split"],
                             [[name, r["words"], f"{r['pieces_per_word']:.2f}", f"{100 * r['split']:.1f}%"]
                              for name, r in words_split(RUNS / "encoder").items()])
    for family in ("encoder", "decoder"):
        if (RUNS / f"{family}-random" / "model.safetensors").is_file():
            text += "\n" + table(f"The {family}'s word embeddings, by how often one pass of the pretraining text "
                                 "holds the token", ["times seen", "tokens", "share of SST-2 dev tokens",
                                                     "mean cosine, crammed", "mean cosine, random init"],
                                 [[g["seen"], g["tokens"], f"{100 * g['dev_share']:.1f}%", f"{g['crammed']:.2f}",
                                   f"{g['random']:.2f}"] for g in rare_token_embeddings(family)])
    rows = []
    for family, result in pretrained.items():
        rows.append([family, OBJECTIVE[family], f"{result['train']['train_runtime'] / 60:.1f}", result["steps"],
                     f"{result['eval']['eval_loss']:.3f}",
                     f"{100 * result['eval'].get('token_accuracy', math.nan):.1f}%",
                     "side by side, one core each" if result["side_by_side"] else "alone, two cores"])
    text += "\n" + table("The crams", ["family", "objective", "minutes", "steps", "held-out loss / token",
                                        "held-out token accuracy", "ran"], rows)
    if (RESULTS / "wikitext2" / "eval_results.json").is_file():
        ppl = read_json(RESULTS / "wikitext2" / "eval_results.json")
        text += (f"\nWikiText-2 validation perplexity of the crammed decoder: **{ppl['perplexity']:.1f}** per token of "
                 "its own byte-level BPE (8,192 pieces), on the file as distributed (word-tokenized, `<unk>` kept; "
                 f"paragraphs joined by EOS): {ppl['eval_tokens']} tokens scored, windows of {ppl['max_length']} "
                 f"tokens moving by {ppl['stride']}.\n")
    (RESULTS / "results.md").write_text(text)
    print(text)
    return text


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


# ------------------------------------------------------------------------------------------- helpers
def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load(name: str, folder: Path | None = None) -> dict:
    """A results file of ``folder`` (this experiment's by default; the other experiments pass theirs)."""
    path = (folder or RESULTS) / f"{name}.json"
    return read_json(path) if path.is_file() else {}


def save(name: str, results: dict, folder: Path | None = None) -> None:
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["sizes", "pretrain", "finetune", "linear-probe", "report", "all"])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--size-minutes", type=float, default=4.0, help="budget of each size candidate")
    parser.add_argument("--budget", help="pretraining budget instead of the recipes' 30m, e.g. 15m")
    parser.add_argument("--side-by-side", action="store_true",
                        help="pretrain the families at once, one thread each (less time, less compute each)")
    parser.add_argument("--parallel", type=int, default=2, help="finetuning runs at once, one thread each")
    parser.add_argument("--epochs", type=float, help="finetuning epochs instead of 3 (a shorter run; named in the "
                        "run folders and the results)")
    parser.add_argument("--tasks", nargs="+", choices=list(GLUE), default=list(GLUE), help="finetuning tasks")
    parser.add_argument("--learning-rate", type=float, help="finetuning learning rate instead of the family's "
                        "(named in the run folders and the results)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="finetuning seeds")
    parser.add_argument("--keep-layers", type=int, help="finetune the cram's embeddings and first K blocks, the "
                        "blocks above drawn afresh (the random side is unchanged)")
    parser.add_argument("--new-word-embeddings", action="store_true", help="with --keep-layers: draw the cram's "
                        "word embeddings afresh too")
    parser.add_argument("--encoder-pooling", choices=["mean", "cls"], default="mean",
                        help="the encoder classifier's input: mean of the tokens (default) or [CLS]")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"experiments/cram.py: {DATA} is missing; expected the shared data folder", file=sys.stderr)
        return 2
    started, families = time.time(), tuple(args.families)
    if args.step == "sizes":
        sizes(families, args.size_minutes)
    if args.step in ("pretrain", "all"):
        pretrain(families, args.side_by_side, args.budget)
        if "decoder" in families:
            perplexity()
    if args.step in ("finetune", "all"):
        finetune(families, args.parallel, args.encoder_pooling, tuple(args.tasks), args.epochs, args.learning_rate,
                 tuple(args.seeds), args.keep_layers, not args.new_word_embeddings)
    if args.step == "all" and "encoder" in families:
        for options in ENCODER_VARIANTS:
            finetune(("encoder",), args.parallel, tasks=("sst2",), **options)
    if args.step in ("linear-probe", "all") and "encoder" in families:
        linear_probe()
    if args.step in ("report", "all"):
        draw_curves()
        draw_finetuning_curves()
        report()
    print(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
