"""The README's "Using it" block runs as printed, as a chain: each command on the stand-ins the block
names (corpus.txt, glue/, pairs.jsonl, facts.jsonl), each step's output feeding the next; the commands
that need the Hub stop offline with one line (issue 27)."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB_MARK = "# These need the Hub"


def readme_commands() -> tuple[list[str], list[str]]:
    """(local commands, Hub commands) of the README's "Using it" block: continuation lines joined,
    comments and the install line dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it"):]
    block = section[section.index("```bash\n") + len("```bash\n"):section.index("```\n", section.index("```bash"))]
    local, hub = [], []
    current = local
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
        if line.startswith(HUB_MARK):
            current = hub
        command = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
        if command and not command.startswith("pip install"):
            current.append(command)
    return local, hub


def write_stand_ins(folder: Path) -> None:
    """The block's placeholders, as a user's files would hold them (hfpipe's embedded text and GLUE rows)."""
    from hfpipe.tasks.embedded import embedded_glue
    from hfpipe.data.embedded_corpus import embedded_corpus

    documents = embedded_corpus()
    (folder / "corpus.txt").write_text("\n\n".join(documents[:1500]) + "\n")
    for task, name in (("mrpc", "MRPC"), ("sst2", "SST-2")):
        data, tsv = embedded_glue(task), folder / "glue" / name
        tsv.mkdir(parents=True)
        for split, file in (("train", "train.tsv"), ("validation", "dev.tsv")):
            rows = data[split]
            if task == "mrpc":  # GLUE's MRPC layout, byte-order mark included
                lines = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
                lines += [f"{r['label']}\t{2 * i}\t{2 * i + 1}\t{r['sentence1']}\t{r['sentence2']}"
                          for i, r in enumerate(rows)]
            else:
                lines = ["sentence\tlabel"] + [f"{r['sentence']}\t{r['label']}" for r in rows]
            (tsv / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    long_documents = [d for d in documents if len(d) > 200][:64]
    pairs = [{"instruction": f"Say what this describes: {d[:80]}", "response": d[80:200]} for d in long_documents]
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    facts = [{"text": "Return the value [MASK] the object.", "answer": "of"},
             {"text": "[MASK] the file is closed, it is an error.", "answer": "if"}]
    (folder / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "hfpipe":
        return [sys.executable, "-m", "hfpipe", *words[1:]]
    if words[:2] == ["accelerate", "launch"]:
        return [sys.executable, "-m", "accelerate.commands.launch", *words[2:]]
    raise AssertionError(f"the README block runs an unexpected program: {command}")


@pytest.mark.slow
def test_the_readme_block_runs_as_a_chain(tmp_path):
    local, hub = readme_commands()
    assert len(local) >= 15 and hub, (local, hub)
    write_stand_ins(tmp_path)
    os.symlink(ROOT / "recipes", tmp_path / "recipes")
    os.symlink(ROOT / "accelerate_configs", tmp_path / "accelerate_configs")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for command in local:
        result = subprocess.run(argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    for command in hub:
        result = subprocess.run(argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                                stdin=subprocess.DEVNULL)
        errors = [line for line in result.stderr.splitlines() if line.startswith("hfpipe: error:")]
        assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, \
            f"{command}\n{result.stderr[-2000:]}"
    # what the chain promised along the way
    assert (tmp_path / "runs" / "glue-mrpc" / "eval-mrpc" / "eval_results.json").is_file()
    assert (tmp_path / "runs" / "sst2-merged" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "bert-again" / "config.json").is_file()


def test_the_readmes_locked_row_names_the_versions_the_lock_installs():
    """The table of CI's jobs quotes the lock; a lock moved without the README would misinform users."""
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| locked |"))
    quoted = dict(re.findall(r"([a-z_]+) (\d+\.\d+\.\d+)", row))
    locked = dict(line.split("==") for line in (ROOT / "ci" / "locked.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    assert quoted and {name: locked.get(name) for name in quoted} == quoted
