"""``hfpipe demo``: does pretraining pay off? The whole pipeline on embedded data, no network, minutes on
two CPU cores.

    1. train a WordPiece tokenizer on the pretraining text
    2. pretrain a small encoder with masked LM on a wall-clock budget (the model and optimiser of
       recipes/pretrain/cram-cpu-encoder.yaml, for 4 minutes instead of 30, on the text below)
    3. finetune it on a slice of SST-2 (real movie-review sentiment), and the same architecture from
       random init with the same recipe and seed
    4. evaluate both on SST-2's dev set, and print one results table

The pretraining text is the embedded corpus (the standard library's docstrings) and the SST-2 slice's
sentences without their labels: task-adaptive pretraining (Gururangan et al. 2020, "Don't stop
pretraining"); the dev sentences are never pretrained on. The slice (hfpipe/data/sst2/, see its
SOURCE.md) is 4,000 training phrases drawn at random from GLUE's SST-2 train.tsv and its whole dev.tsv.

The steps are ordinary recipes (built here as dicts, the same schema as recipes/*.yaml), so each can
be rerun alone with ``hfpipe pretrain|finetune runs/demo/<step>/recipe.yaml``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .build import save_random_twin
from .recipes import Recipe
from .training.results import results_table

logger = logging.getLogger("hfpipe.demo")

SST2 = Path(__file__).parent / "data" / "sst2"  # train.tsv (4,000 phrases), dev.tsv (872 sentences)
# The full experiment's table (experiments/pays_off.py report writes it): what the demo shows when its few
# minutes cannot show a gain.
FULL_EXPERIMENT = Path(__file__).parent / "data" / "pays_off.md"
# The crams' measured shape (experiments/README.md): 4 layers of width 128, an 8k vocabulary.
DEMO_MODEL = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 512,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "sparse_prediction": True}


def write_pretraining_text(path: Path) -> Path:
    """The slice's training sentences without their labels, one document each (a blank line between:
    hfpipe's .txt rule for documents)."""
    from .tasks.glue import load_glue

    sentences = load_glue("sst2", train_file=SST2 / "train.tsv")["train"]["sentence"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{sentence.strip()}\n\n" for sentence in sentences), encoding="utf-8")
    return path


def pretrain_recipe(output_dir: Path, task_text: Path, budget: str) -> Recipe:
    return Recipe.from_dict(
        {
            "kind": "pretrain",
            "description": "hfpipe demo: small encoder, masked LM on a wall-clock budget",
            "model": {"family": "encoder", "size": "tiny", "config": DEMO_MODEL},
            "tokenizer": {"vocab_size": 8192, "lowercase": True},
            "objective": {"name": "mlm", "max_seq_length": 128},
            "data": {
                "sources": [{"embedded": True, "weight": 1.0, "name": "stdlib_docstrings"},
                            {"files": [str(task_text)], "weight": 1.0, "name": "sst2_sentences"}],
                "validation_samples": 200,
            },
            "train": {
                "output_dir": str(output_dir),
                "time_budget": budget,
                "max_steps": 1_000_000,
                "per_device_train_batch_size": 64,
                "per_device_eval_batch_size": 128,
                "learning_rate": 1e-3,
                "lr_scheduler_type": "linear",
                "warmup_ratio": 0.1,
                "weight_decay": 0.01,
                "adam_beta2": 0.98,
                "max_grad_norm": 0.5,
                "logging_steps": 20,
                "eval_steps": 100_000,  # once, at the end
                "save_steps": 100_000,
                "save_total_limit": 1,
                "report_to": [],
                "overwrite": True,
                "use_cpu": True,
            },
        },
        source="hfpipe demo (pretrain)",
    )


def finetune_recipe(output_dir: Path, model_dir: Path, epochs: float, seed: int = 0) -> Recipe:
    return Recipe.from_dict(
        {
            "kind": "finetune",
            "description": f"hfpipe demo: SST-2 slice from {model_dir.name}",
            "model": {"family": "encoder", "name_or_path": str(model_dir),
                      "config": {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                                 "classifier_pooling": "mean"}},
            "task": {"name": "sst2", "max_seq_length": 128},
            "data": {"train_files": [str(SST2 / "train.tsv")], "validation_files": [str(SST2 / "dev.tsv")]},
            "train": {
                "output_dir": str(output_dir),
                "num_train_epochs": epochs,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 128,
                "learning_rate": 1e-4,
                "weight_decay": 0.01,
                "warmup_ratio": 0.1,
                "seed": seed,
                "logging_steps": 25,
                "eval_steps": 100_000,
                "save_steps": 100_000,
                "save_total_limit": 1,
                "report_to": [],
                "overwrite": True,
                "use_cpu": True,
            },
        },
        source="hfpipe demo (finetune)",
    )


SEEDS = (0, 1)  # finetuning seeds: one seed's gain is within the noise of a few-minute cram


def verdict(gains: list[float]) -> str:
    """What the per-seed gains (points) say, without dressing up a loss or noise as a success."""
    mean, spread = sum(gains) / len(gains), (max(gains) - min(gains)) / 2
    if min(gains) > 0:
        return f"pretraining ahead on every seed: +{mean:.1f} +/- {spread:.1f} points"
    if max(gains) < 0:
        return (f"pretraining BEHIND on every seed: {mean:.1f} +/- {spread:.1f} points; a few minutes of cramming "
                "does not pay off here (experiments/README.md: what limits it)")
    return (f"no gain beyond the noise: {mean:+.1f} +/- {spread:.1f} points, the seeds disagree in sign "
            "(experiments/README.md: the 30-minute crams)")


def run_demo(output_dir: str = "runs/demo", budget: str = "4m", epochs: float = 3) -> dict:
    """Pretrain for ``budget`` of wall time, then finetune the pretrained and the random-init model,
    each with every seed of ``SEEDS``."""
    from .finetune import run_finetuning
    from .pretrain import run_pretraining

    root = Path(output_dir)
    started = time.time()
    print(f"hfpipe demo: tokenizer -> pretrain (masked LM, {budget}) -> finetune on SST-2, pretrained and from "
          f"random init -> evaluate, in {root}/", flush=True)
    task_text = write_pretraining_text(root / "data" / "sst2-train-sentences.txt")
    pretrain = run_pretraining(pretrain_recipe(root / "pretrain", task_text, budget))
    pretrained_at = time.time()
    save_random_twin(root / "pretrain", root / "random-init")
    accuracy = {"pretrained": [], "random init": []}
    for seed in SEEDS:
        for name, model_dir in (("pretrained", root / "pretrain"), ("random init", root / "random-init")):
            out = root / f"finetune-{model_dir.name}-seed{seed}"
            metrics = run_finetuning(finetune_recipe(out, model_dir, epochs, seed))
            accuracy[name].append(100 * metrics.get("accuracy", float("nan")))
    gains = [a - b for a, b in zip(accuracy["pretrained"], accuracy["random init"])]
    steps = json.loads((root / "pretrain" / "trainer_state.json").read_text())["global_step"]
    seeds = ", ".join(str(seed) for seed in SEEDS)
    rows = {
        f"pretrain: optimizer steps the {budget} budget bought": steps,
        "pretrain: held-out MLM loss": pretrain.get("eval_loss", float("nan")),
        "pretrain: held-out MLM accuracy": pretrain.get("token_accuracy", float("nan")),
        f"SST-2 dev accuracy, pretrained (seeds {seeds})": " / ".join(f"{a:.1f}" for a in accuracy["pretrained"]),
        f"SST-2 dev accuracy, random init (seeds {seeds})": " / ".join(f"{a:.1f}" for a in accuracy["random init"]),
        "gain from pretraining (points, per seed)": " / ".join(f"{g:+.1f}" for g in gains),
        "minutes: pretrain / finetune all":
            f"{(pretrained_at - started) / 60:.1f} / {(time.time() - pretrained_at) / 60:.1f}",
    }
    print("\n" + results_table("hfpipe demo results", rows), flush=True)
    print(f"\nVerdict: {verdict(gains)}.", flush=True)
    if min(gains) <= 0 and FULL_EXPERIMENT.is_file():
        print(f"\n{budget} of pretraining did not show a gain here. The full experiment (experiments/pays_off.py: "
              "30 minutes of two CPU cores, in-domain text, 3 seeds) measured:\n\n" + FULL_EXPERIMENT.read_text(),
              flush=True)
    print(f"\nModels, metrics, loss curves (loss.png) and model cards are in {root}/. The 30-minute crams of all "
          "three families and their downstream gains: experiments/README.md.")
    return rows
