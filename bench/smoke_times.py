"""How long `--smoke` takes for every shipped recipe, as a new user meets it: a fresh process, a cold
torch.compile cache, the recipe as written (accumulation, precision, compile), embedded data.

    python bench/smoke_times.py [--only NAME ...] [--out bench/results/smoke-times.md]

The promise (README, interface.md): each finishes in under 3 minutes on two cores. Wall-clock seconds
on this machine; run it alone on the cores. Prints a table and writes it as Markdown.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERB = {"pretrain": "pretrain", "finetune": "finetune", "peft": "finetune", "icl": "icl"}
LIMIT_S = 180


def recipes(only: list[str]) -> list[Path]:
    """Pretraining first: icl prompts the smoke gpt-clm run's model (icl takes --model by contract)."""
    found = [p for folder in VERB for p in sorted((ROOT / "recipes" / folder).glob("*.yaml"))]
    return [p for p in found if not only or p.stem in only]


def run(recipe: Path, work: Path) -> tuple[float, int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor-cache")}  # cold: what a first run compiles
    command = [sys.executable, "-m", "hfpipe", VERB[recipe.parent.name], str(recipe), "--smoke",
               "--output-dir", str(work / recipe.parent.name / recipe.stem)]
    if recipe.parent.name == "icl":
        command += ["--model", str(work / "pretrain" / "gpt-clm")]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    compiled = re.search(r"first step with compilation: (\d+) s", result.stderr)
    note = f"compiled, first step {compiled.group(1)} s" if compiled else ""
    if result.returncode != 0:
        note = (result.stderr.strip().splitlines() or ["?"])[-1][:120]
    return seconds, result.returncode, note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="recipe stems to run (default: all)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "smoke-times.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes(args.only):
            seconds, code, note = run(recipe, Path(tmp))
            verdict = "ok" if code == 0 and seconds < LIMIT_S else ("FAILED" if code else "SLOW")
            rows.append((f"{recipe.parent.name}/{recipe.name}", f"{seconds:.0f}", verdict, note))
            print(f"{rows[-1][0]:<40} {rows[-1][1]:>5} s  {verdict}  {note}", flush=True)
    table = ["| recipe | --smoke wall time (s) | under 3 min | note |", "|---|---:|---|---|"]
    table += [f"| {name} | {seconds} | {verdict} | {note} |" for name, seconds, verdict, note in rows]
    Path(args.out).write_text("\n".join(table) + "\n")
    print("\n" + "\n".join(table))
    return 0 if all(verdict == "ok" for _, _, verdict, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
