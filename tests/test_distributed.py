"""One process and two CPU processes (gloo) with the same global batch train the same model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pretrain" / "gpt-clm.yaml"
# One micro-batch per step unless a test says otherwise, eager: the comparisons below are between
# process counts, accumulation and precision, not about gpt-clm's own 32-step accumulation and compile
# (test_recipes_as_written.py runs those).
PLAIN = ["--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
         "--set", "train.mixed_precision=no", "--set", "train.optim=adamw_torch"]
NO_DROPOUT = "model.config={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}"


def run(command, out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads((out / "loss_history.json").read_text())["train"]
    return losses, load_file(out / "model.safetensors")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """One tokenizer for every run, so that only the process layout differs."""
    from hfpipe.data.embedded_corpus import embedded_corpus

    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(embedded_corpus()[:2000]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "hfpipe", "tokenizer", "train", "--family", "decoder", "--vocab-size", "2000",
                    "--out", str(folder / "tokenizer"), str(corpus)], check=True, env=env, capture_output=True)
    return folder / "tokenizer"


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume_in_one(tmp_path, tokenizer_dir):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    common = ["pretrain", str(RECIPE), "--smoke", "--max-steps", "6", "--set", NO_DROPOUT, *PLAIN,
              "--set", "train.logging_steps=1", "--set", "train.save_steps=3",
              "--set", f"tokenizer.name_or_path={tokenizer_dir}"]
    one = tmp_path / "one"
    losses_one, weights_one = run([sys.executable, "-m", "hfpipe", *common, "--output-dir", str(one),
                                   "--set", "train.per_device_train_batch_size=8"], one)
    two = tmp_path / "two"
    losses_two, weights_two = run([accelerate, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu-2proc.yaml"),
                                   "-m", "hfpipe", *common, "--output-dir", str(two),
                                   "--set", "train.per_device_train_batch_size=4"], two)
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 4  # per device: two processes made up the global batch of 8
    assert [s for s, _ in losses_one] == [s for s, _ in losses_two]
    for (_, a), (_, b) in zip(losses_one, losses_two):
        assert a == pytest.approx(b, abs=2e-4)
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_one[name], weights_two[name], atol=2e-5, rtol=1e-4)
    # the two-process checkpoint resumes in one process
    resumed = tmp_path / "resumed"
    shutil.copytree(two / "checkpoint-3", resumed / "checkpoint-3")
    losses_resumed, weights_resumed = run([sys.executable, "-m", "hfpipe", *common, "--output-dir", str(resumed),
                                           "--set", "train.per_device_train_batch_size=8",
                                           "--set", "train.resume=true"], resumed)
    for name in weights_one:
        torch.testing.assert_close(weights_one[name], weights_resumed[name], atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_gradient_accumulation_and_bf16_match_the_plain_run(tmp_path, tokenizer_dir):
    common = [sys.executable, "-m", "hfpipe", "pretrain", str(RECIPE), "--smoke", "--max-steps", "5", *PLAIN, "--set",
              NO_DROPOUT, "--set", "train.logging_steps=1", "--set", f"tokenizer.name_or_path={tokenizer_dir}"]
    plain, accumulated, bf16 = tmp_path / "plain", tmp_path / "accumulated", tmp_path / "bf16"
    losses_plain, weights_plain = run([*common, "--output-dir", str(plain),
                                       "--set", "train.per_device_train_batch_size=8"], plain)
    losses_acc, weights_acc = run([*common, "--output-dir", str(accumulated), "--set",
                                   "train.per_device_train_batch_size=4", "--set",
                                   "train.gradient_accumulation_steps=2"], accumulated)
    losses_bf16, _ = run([*common, "--output-dir", str(bf16), "--set", "train.per_device_train_batch_size=8",
                          "--set", "train.mixed_precision=bf16"], bf16)
    for (_, a), (_, b), (_, c) in zip(losses_plain, losses_acc, losses_bf16):
        assert a == pytest.approx(b, abs=2e-4)  # the same 8 sequences, two micro-batches
        assert a == pytest.approx(c, abs=5e-2)  # bf16 autocast: ~3 significant digits
    for name in weights_plain:
        torch.testing.assert_close(weights_plain[name], weights_acc[name], atol=2e-5, rtol=1e-4)
