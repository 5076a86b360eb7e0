"""``hfpipe demo``: the whole pipeline on embedded data, no network, minutes on two CPU cores.

    1. train a WordPiece tokenizer on the embedded corpus (Python's standard-library docstrings)
    2. pretrain a small encoder with masked LM (80/10/10) + next-sentence prediction
    3. finetune it on an embedded SST-2-format task: real sentences vs the same words shuffled
    4. evaluate, and print one results table

The steps are ordinary recipes (built here as dicts, the same schema as recipes/*.yaml), so
each can be rerun alone with ``hfpipe pretrain|finetune runs/demo/<step>/recipe.yaml``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from .recipes import Recipe
from .train import results_table

logger = logging.getLogger("hfpipe.demo")

# A 4-layer, 128-wide encoder: large enough to learn from 1.5 MB of text in a few hundred steps.
DEMO_MODEL = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512}


def pretrain_recipe(output_dir: Path) -> Recipe:
    return Recipe.from_dict(
        {
            "kind": "pretrain",
            "description": "hfpipe demo: small encoder, MLM + NSP on the embedded corpus",
            "model": {"family": "encoder", "size": "tiny", "config": DEMO_MODEL},
            "tokenizer": {"vocab_size": 4000},
            "objective": {"name": "mlm_nsp", "max_seq_length": 128},
            "data": {"validation_split_percentage": 5},
            "train": {
                "output_dir": str(output_dir),
                "max_steps": 400,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 64,
                "learning_rate": 5e-4,
                "warmup_ratio": 0.06,
                "weight_decay": 0.01,
                "logging_steps": 25,
                "eval_steps": 100,
                "save_steps": 200,
                "save_total_limit": 1,
                "report_to": [],
                "overwrite": True,
                "use_cpu": True,
            },
        },
        source="hfpipe demo (pretrain)",
    )


def finetune_recipe(output_dir: Path, model_dir: Path) -> Recipe:
    return Recipe.from_dict(
        {
            "kind": "finetune",
            "description": "hfpipe demo: finetune the demo encoder on embedded real-vs-shuffled sentences",
            "model": {"family": "encoder", "name_or_path": str(model_dir)},
            "task": {"name": "sst2", "max_seq_length": 128},
            "data": {"max_train_samples": 2048, "max_eval_samples": 256},
            "train": {
                "output_dir": str(output_dir),
                "num_train_epochs": 4,
                "per_device_train_batch_size": 32,
                "per_device_eval_batch_size": 64,
                "learning_rate": 5e-4,
                "warmup_ratio": 0.1,
                "logging_steps": 10,
                "eval_steps": 50,
                "save_steps": 1000,
                "save_total_limit": 1,
                "report_to": [],
                "overwrite": True,
                "use_cpu": True,
            },
        },
        source="hfpipe demo (finetune)",
    )


def run_demo(output_dir: str = "runs/demo") -> dict:
    from .finetune import run_finetuning
    from .pretrain import run_pretraining

    root = Path(output_dir)
    started = time.time()
    print(f"hfpipe demo: tokenizer -> pretrain (MLM+NSP) -> finetune -> evaluate, in {root}/", flush=True)
    pretrain = run_pretraining(pretrain_recipe(root / "pretrain"))
    pretrained_at = time.time()
    finetune = run_finetuning(finetune_recipe(root / "finetune", root / "pretrain"))
    rows = {
        "pretrain: eval loss (MLM+NSP)": pretrain.get("eval_loss", float("nan")),
        "pretrain: MLM accuracy": pretrain.get("mlm_accuracy", float("nan")),
        "pretrain: NSP accuracy": pretrain.get("nsp_accuracy", float("nan")),
        "finetune: accuracy (real vs word-shuffled sentences)": finetune.get("accuracy", float("nan")),
        "minutes: pretrain / finetune": f"{(pretrained_at - started) / 60:.1f} / {(time.time() - pretrained_at) / 60:.1f}",
    }
    print("\n" + results_table("hfpipe demo results", rows), flush=True)
    print(f"\nModels, metrics, loss curves (loss.png) and model cards are in {root}/pretrain and {root}/finetune.")
    return rows
