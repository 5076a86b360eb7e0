"""Two machines of one process each, simulated on localhost (gloo): two `accelerate launch` with
`--machine_rank 0` and `--machine_rank 1` that share nothing on disk (each its own working directory,
output folder and HF_HOME / datasets cache), against one process with the same global batch."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfpipe.training.output_dir import COMPLETE_MARKER

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "accelerate_configs" / "multi-node-cpu.yaml"
# As tests/test_distributed.py: one micro-batch per step, eager, fp32, no dropout, so that only the
# process layout differs between the runs compared.
PLAIN = ["--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
         "--set", "train.mixed_precision=no", "--set", "train.optim=adamw_torch", "--set", "train.report_to=[]"]
NO_DROPOUT = "model.config={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_env(machine: Path) -> dict:
    """A machine's own Hugging Face caches: nothing prepared on one is visible on the other."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(machine / "hf"),
            "HF_DATASETS_CACHE": str(machine / "hf" / "datasets")}


def run_one(args, machine: Path, batch_size: int) -> Path:
    machine.mkdir(parents=True, exist_ok=True)
    out = machine / "out"
    result = subprocess.run([sys.executable, "-m", "hfpipe", *args, "--output-dir", str(out),
                             "--set", f"train.per_device_train_batch_size={batch_size}"],
                            env=machine_env(machine), cwd=machine, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def run_two_machines(args, machines: list[Path], batch_size: int) -> list[str]:
    """Both machines at once, as two hosts would start them; returns each machine's log."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    port = free_port()
    processes, logs = [], []
    for rank, machine in enumerate(machines):
        machine.mkdir(parents=True, exist_ok=True)
        log = open(machine / "launch.log", "w")
        logs.append(log)
        processes.append(subprocess.Popen(
            [accelerate, "launch", "--config_file", str(CONFIG), "--machine_rank", str(rank),
             "--main_process_port", str(port), "-m", "hfpipe", *args, "--output-dir", str(machine / "out"),
             "--set", f"train.per_device_train_batch_size={batch_size}"],
            env=machine_env(machine), cwd=machine, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))  # its own process group: a failed test stops the launcher's workers too
    try:
        # a machine that fails leaves the other waiting in a collective: stop both at the first failure
        started = time.monotonic()
        while any(p.poll() is None for p in processes) and not any(p.poll() for p in processes):
            assert time.monotonic() - started < 600, "the two machines did not finish in 10 minutes"
            time.sleep(0.2)
        codes = [p.poll() for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
    texts = [(m / "launch.log").read_text() for m in machines]
    for rank, (code, text) in enumerate(zip(codes, texts)):
        assert code == 0, f"machine {rank}:\n{text[-3000:]}"
    return texts


@pytest.mark.parametrize("config,per_machine", [("multi-node-cpu.yaml", 1), ("multi-node-gpu.yaml", 8)])
def test_multi_node_configs_start_their_share_of_processes_on_each_machine(config, per_machine):
    """What `accelerate launch` makes of the config on machine 1: torchrun over 2 nodes, this one rank 1."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(ROOT / "accelerate_configs" / config),
                                               "--machine_rank", "1", "-m", "hfpipe", "pretrain", "x.yaml"])
    args, _, _ = _validate_launch_command(args)  # unknown keys: ClusterConfig raises TypeError
    assert args.multi_gpu and args.num_machines == 2 and args.num_processes == 2 * per_machine
    from accelerate.utils.launch import prepare_multi_gpu_env

    prepare_multi_gpu_env(args)  # sets torchrun's arguments
    assert (args.nnodes, args.nproc_per_node, args.node_rank, args.rdzv_backend) == ("2", str(per_machine), 1, "static")


def losses(out: Path) -> list:
    return json.loads((out / "loss_history.json").read_text())["train"]


def assert_weights_close(a_dir: Path, b_dir: Path, exact: bool = False):
    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:  # 2 processes vs 1: the gradient is summed in another order (tests/test_distributed.py)
            torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4)


def checkpoint_is_whole(checkpoint: Path, rank: int):
    """What resuming on this machine needs, written on this machine (save_on_each_node)."""
    for name in (COMPLETE_MARKER, "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                 "tokenizer.json", f"rng_state_{rank}.pth"):
        assert (checkpoint / name).is_file(), f"{checkpoint}/{name}"


@pytest.mark.slow
@pytest.mark.xdist_group("multi_process")
def test_two_machines_match_one_process_and_each_resumes(tmp_path):
    """gpt-clm trains its own tokenizer and data on each machine; 2 machines x batch 4 == 1 process x batch 8."""
    args = ["pretrain", str(ROOT / "recipes" / "pretrain" / "gpt-clm.yaml"), "--smoke", "--max-steps", "6",
            "--set", NO_DROPOUT, *PLAIN, "--set", "train.logging_steps=1", "--set", "train.save_steps=3",
            "--set", "train.save_total_limit=null"]
    one = run_one(args, tmp_path / "one", batch_size=8)
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    logs = run_two_machines(args, machines, batch_size=4)
    outs = [m / "out" for m in machines]
    assert "is not shared by all 2 processes" in logs[0]  # hfpipe found no shared disk: save_on_each_node

    # the same training as one process with the same global batch of 8
    assert [s for s, _ in losses(one)] == [s for s, _ in losses(outs[0])] == [s for s, _ in losses(outs[1])]
    for (_, a), (_, b) in zip(losses(one), losses(outs[0])):
        assert a == pytest.approx(b, abs=2e-4)
    assert_weights_close(one, outs[0])
    assert_weights_close(outs[0], outs[1], exact=True)  # DDP: both machines hold the very same model
    assert json.loads((outs[1] / "trainer_state.json").read_text())["train_batch_size"] == 4

    for rank, (machine, out) in enumerate(zip(machines, outs)):
        # the tokenizer: trained once (machine 0), the same file on both machines (and as one process trains it)
        tokenizer = out / "tokenizer" / "tokenizer.json"
        assert tokenizer.read_bytes() == (one / "tokenizer" / "tokenizer.json").read_bytes()
        # the data: tokenized on each machine into its own datasets cache
        assert list((machine / "hf" / "datasets" / "hfpipe").glob("tokenize-*.arrow"))
        # the final folder and every checkpoint are whole on each machine
        for name in ("model.safetensors", "tokenizer.json", "recipe.yaml", "train_results.json", "loss.png"):
            assert (out / name).is_file(), f"{out}/{name}"
        for step in (3, 6):
            checkpoint_is_whole(out / f"checkpoint-{step}", rank)
        assert not (out / "checkpoint-3" / f"rng_state_{1 - rank}.pth").exists()  # really nothing shared
    assert not list(outs[0].glob(".hfpipe-shared-probe-*"))

    # stopped after checkpoint 3: each machine resumes from its own copy and ends where the straight run did
    resumed = [tmp_path / "resumed0", tmp_path / "resumed1"]
    for out, machine in zip(outs, resumed):
        shutil.copytree(out / "checkpoint-3", machine / "out" / "checkpoint-3")
    run_two_machines([*args, "--set", "train.resume=true"], resumed, batch_size=4)
    for out, machine in zip(outs, resumed):
        assert_weights_close(out, machine / "out")
        # the curve covers the whole run: steps 1-3 from the checkpoint's log history, 4-6 trained here
        assert [s for s, _ in losses(machine / "out")] == [1, 2, 3, 4, 5, 6]


def write_numbered_shards(folder: Path, num_shards: int, per_shard: int) -> list[str]:
    """JSONL shards whose documents each start with a unique id ("doc-0017"), text from the embedded corpus."""
    from hfpipe.data.embedded_corpus import embedded_corpus

    texts = [t for t in embedded_corpus() if len(t) > 200]
    folder.mkdir(parents=True)
    paths = []
    for shard in range(num_shards):
        path = folder / f"part-{shard:05d}-of-{num_shards:05d}.jsonl"
        with open(path, "w", encoding="utf-8") as file:
            for i in range(shard * per_shard, (shard + 1) * per_shard):
                file.write(json.dumps({"text": f"doc-{i:04d} {texts[i % len(texts)]}"}) + "\n")
        paths.append(str(path))
    return paths


def streamed_args(shards: list[str]) -> list[str]:
    return ["pretrain", str(ROOT / "recipes" / "pretrain" / "t5-span-corruption.yaml"), "--smoke",
            "--max-steps", "6", *PLAIN, "--set", "train.save_steps=3", "--set", "train.save_total_limit=null",
            "--set", "train.eval_steps=100", "--set", "data.dataset=null", "--set", "data.streaming=true",
            "--set", f"data.train_files={json.dumps(shards)}", "--set", "data.validation_samples=8",
            "--set", "tokenizer.vocab_size=400", "--set", "tokenizer.train_samples=200"]


def doc_ids(documents) -> list[str]:
    return [row["text"].split(" ", 1)[0] for row in documents]


def test_each_machine_reads_its_own_shards_once(tmp_path, monkeypatch):
    """The stream each machine's process trains on, as run_pretraining loads it under the launcher's global
    RANK / WORLD_SIZE (the run below checks the launcher sets them so): whole files, no document twice,
    none of the held-out validation documents, the same validation set on every machine."""
    from hfpipe.cli import build_parser, load_recipe_from_args
    from hfpipe.data.sources import load_corpus_and_mixture

    shards = write_numbered_shards(tmp_path / "shards", num_shards=4, per_shard=25)
    recipe = load_recipe_from_args(build_parser().parse_args([*streamed_args(shards), "--output-dir",
                                                              str(tmp_path / "out")]))
    every = [f"doc-{i:04d}" for i in range(100)]
    one = load_corpus_and_mixture(recipe, split=True)[0]  # one process: the first 8 documents held out
    assert doc_ids(one["validation"]) == every[:8] and doc_ids(one["train"]) == every[8:]
    parts, validations = [], []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        corpus = load_corpus_and_mixture(recipe, split=True)[0]
        parts.append(doc_ids(corpus["train"]))
        validations.append(doc_ids(corpus["validation"]))
    assert validations[0] == validations[1] and len(validations[0]) == 8  # 4 from the head of each part
    assert set(parts[0]).isdisjoint(parts[1])
    assert sorted(parts[0] + parts[1] + validations[0]) == every  # every document once: trained on or held out
    for shard in shards:  # each file read whole by one machine
        ids = set(doc_ids(json.loads(line) for line in open(shard)))
        assert ids <= set(parts[0] + validations[0]) or ids <= set(parts[1] + validations[0])


@pytest.mark.slow
@pytest.mark.xdist_group("multi_process")
def test_two_machines_stream_their_own_shards_and_each_resumes(tmp_path):
    """A streamed corpus of 4 JSONL files: each machine reads two of them (split by the global rank), the
    Unigram tokenizer (not reproducible run to run) is the same on both, and a stop after checkpoint 3
    resumes on both machines at their saved stream positions to the very same weights."""
    shards = write_numbered_shards(tmp_path / "shards", num_shards=4, per_shard=60)
    args = streamed_args(shards)
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    logs = run_two_machines(args, machines, batch_size=4)
    outs = [m / "out" for m in machines]
    for rank, log in enumerate(logs):
        assert f"process {rank} of 2 reads 2 of the 4 shards of the stream" in log
    tokenizer = (outs[0] / "tokenizer" / "tokenizer.json").read_bytes()
    assert (outs[1] / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer
    assert_weights_close(outs[0], outs[1], exact=True)
    for rank, out in enumerate(outs):
        checkpoint_is_whole(out / "checkpoint-3", rank)
        state = json.loads((out / "checkpoint-3" / f"stream-{rank}.json").read_text())
        assert state["batches"] == 3 and state["processes"] == 2
        assert not (out / "checkpoint-3" / f"stream-{1 - rank}.json").exists()
        # this machine's own count of the documents it read (its train_results.json, save_on_each_node)
        assert json.loads((out / "train_results.json").read_text())["train_packing_documents"] > 0

    resumed = [tmp_path / "resumed0", tmp_path / "resumed1"]
    for out, machine in zip(outs, resumed):
        shutil.copytree(out / "checkpoint-3", machine / "out" / "checkpoint-3")
    again = run_two_machines([*args, "--set", "train.resume=true"], resumed, batch_size=4)
    for out, machine, log in zip(outs, resumed, again):
        assert "resuming the stream at the position saved" in log
        assert (machine / "out" / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
        assert_weights_close(out, machine / "out", exact=True)
