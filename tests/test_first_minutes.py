"""What a new user sees: quiet verbs, one-line errors for broken checkpoints, adapter folders that
load wherever a model folder does (issue 27)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hfpipe
from hfpipe.cli import build_parser
from hfpipe.tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
FAST = ("--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
        "--set", "train.mixed_precision=no")


def hfpipe_cli(*args, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, stdin=subprocess.DEVNULL)


def foreign_warnings(stderr: str) -> list[str]:
    """Warning lines that are not hfpipe's own: logging's WARNING records of other loggers, Python
    warnings (``...: FutureWarning: ...``) and transformers' LOAD REPORT table."""
    lines = []
    for line in stderr.splitlines():
        logged = re.search(r"\b(WARNING|ERROR)\s+([\w.]+):", line)
        if logged and not logged.group(2).startswith("hfpipe"):
            lines.append(line)
        elif re.search(r"\w+Warning: ", line) or "LOAD REPORT" in line:
            lines.append(line)
    return lines


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("hfpipe: error:"), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    """A tiny hfpipe decoder with its own tokenizer, saved as a run folder would hold it."""
    folder = tmp_path_factory.mktemp("decoder")
    tokenizer = train_tokenizer(["a review of the film that was good", "a bad film and a long review"] * 40,
                                "decoder", 300, min_frequency=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hfpipe.config_for(
        "decoder", "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_help_names_the_whole_purpose_and_every_verb_help_is_quiet():
    parser = build_parser()
    assert parser.description.endswith(".")  # not cut mid-sentence
    verbs = sorted(parser._subparsers._group_actions[0].choices)
    script = ("import contextlib, io, sys\nfrom hfpipe.cli import main\n"
              f"for verb in {verbs!r}:\n"
              "    out = io.StringIO()\n"
              "    with contextlib.redirect_stdout(out):\n"
              "        try:\n            main([verb, '--help'])\n        except SystemExit as stop:\n"
              "            assert stop.code == 0, (verb, stop.code)\n"
              "    assert 'usage: hfpipe' in out.getvalue(), verb\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert foreign_warnings(result.stderr) == [], result.stderr


def test_importing_hfpipe_never_reaches_for_bitsandbytes_hub_kernels():
    """transformers 5.25 brings `kernels`; bitsandbytes then fetches code from the Hub on import."""
    pytest.importorskip("bitsandbytes")
    script = ("import hfpipe, bitsandbytes, sys\n"
              "k = sys.modules.get('kernels')\n"
              "print('kernels-imported' if k else 'no-kernels')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "kernels-community" not in result.stderr and foreign_warnings(result.stderr) == [], result.stderr


def test_a_file_given_as_the_model_is_one_line(decoder_dir, tmp_path):
    line = one_line_error(hfpipe_cli("generate", decoder_dir / "config.json", "--prompt", "a"))
    assert "config.json" in line and "a file" in line and "folder" in line
    line = one_line_error(hfpipe_cli("evaluate", RECIPES / "finetune" / "glue-sst2.yaml", "--smoke",
                                     "--model", decoder_dir / "model.safetensors", "--output-dir", tmp_path / "e"))
    assert "model.name_or_path" in line and "a file" in line


@pytest.mark.parametrize("verb", ["generate", "evaluate", "finetune"])
def test_a_truncated_safetensors_is_one_line_before_any_work(decoder_dir, tmp_path, verb):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in decoder_dir.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    weights = broken / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    if verb == "generate":
        result = hfpipe_cli("generate", broken, "--prompt", "a")
    else:
        result = hfpipe_cli(verb, RECIPES / "finetune" / "glue-sst2.yaml", "--smoke", "--model", broken,
                            "--output-dir", tmp_path / "out")
    line = one_line_error(result)
    assert str(weights) in line and "truncated" in line
    assert not (tmp_path / "out").exists()


def test_an_adapter_folder_generates_like_its_merged_model(decoder_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from hfpipe.generate import generate, load_generator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(decoder_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")  # adapter_config.json names decoder_dir as its base
    merged = lora.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    for file in decoder_dir.glob("tokenizer*"):
        (tmp_path / "merged" / file.name).write_bytes(file.read_bytes())
    model, tokenizer = load_generator(str(tmp_path / "adapter"), device="cpu")
    reference, _ = load_generator(str(tmp_path / "merged"), device="cpu")
    ids = tokenizer(["a review of the film"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**ids).logits, reference(**ids).logits)
    # and through the command: greedy text from the adapter folder is the merged model's text
    result = hfpipe_cli("generate", tmp_path / "adapter", "--prompt", "a review", "--max-new-tokens", "5",
                        "--no-stream")
    assert result.returncode == 0, result.stderr
    expected = generate(reference, tokenizer, ["a review"], max_new_tokens=5, do_sample=False)[0]
    assert expected in result.stdout
    assert foreign_warnings(result.stderr) == [], result.stderr
    # and icl prompts it like a model folder (peft's own layout: no config.json beside the adapter)
    result = hfpipe_cli("icl", RECIPES / "icl" / "glue-sst2.yaml", "--smoke", "--model", tmp_path / "adapter",
                        "--shots", 0, "--output-dir", tmp_path / "icl")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "accuracy_0shot" in json.loads((tmp_path / "icl" / "eval_results.json").read_text())


@pytest.mark.slow
def test_a_tiny_run_of_each_training_verb_prints_no_foreign_warning(tmp_path):
    """pretrain, finetune from it (a new head on a pretraining checkpoint), LoRA SFT, icl, evaluate:
    stderr holds hfpipe's lines and progress bars only, and the head swap is one line."""
    gpt = tmp_path / "gpt"
    runs = {
        "pretrain": hfpipe_cli("pretrain", RECIPES / "pretrain" / "gpt-clm.yaml", "--smoke", "--max-steps", 2,
                               "--output-dir", gpt, *FAST),
    }
    assert runs["pretrain"].returncode == 0, runs["pretrain"].stderr[-2000:]
    runs["finetune"] = hfpipe_cli("finetune", RECIPES / "finetune" / "glue-sst2.yaml", "--smoke", "--model", gpt,
                                  "--max-steps", 2, "--output-dir", tmp_path / "sst2", *FAST)
    runs["sft-lora"] = hfpipe_cli("finetune", RECIPES / "peft" / "sft-lora.yaml", "--smoke", "--model", gpt,
                                  "--max-steps", 2, "--output-dir", tmp_path / "sft", *FAST)
    runs["icl"] = hfpipe_cli("icl", RECIPES / "icl" / "glue-sst2.yaml", "--smoke", "--model", gpt,
                             "--output-dir", tmp_path / "icl")
    runs["evaluate"] = hfpipe_cli("evaluate", RECIPES / "pretrain" / "gpt-clm.yaml", "--smoke", "--model", gpt,
                                  "--output-dir", tmp_path / "ppl")
    for verb, result in runs.items():
        assert result.returncode == 0, (verb, result.stderr[-3000:])
        assert foreign_warnings(result.stderr) == [], (verb, foreign_warnings(result.stderr))
    swap = [line for line in runs["finetune"].stderr.splitlines() if "hfpipe.checkpoints" in line]
    assert len(swap) == 1 and re.search(r"loaded the backbone; .*initialised (score|classifier)", swap[0]), swap


@pytest.mark.parametrize("recipe, hint", [("finetune/squad-v1.yaml", "SQuAD JSON"), ("finetune/glue-sst2.yaml", "TSV")])
def test_a_hub_dataset_offline_is_one_line_naming_the_local_alternative(decoder_dir, tmp_path, recipe, hint):
    result = hfpipe_cli("finetune", RECIPES / recipe, "--model", decoder_dir, "--output-dir", tmp_path / "out")
    line = one_line_error(result)
    assert "data.dataset" in line and "offline" in line and hint in line


@pytest.mark.slow
@pytest.mark.parametrize("task", ["stsb", "mrpc"])
def test_a_glue_runs_first_step_loss_is_the_same_at_8x1_and_4x2(tmp_path, task):
    """The loss contract as users meet it: the recipe through the command, one tokenizer for both runs.
    (A smoke run trains its own tokenizer, and the tokenizers library's trainers break ties in an order
    that changes from one training to the next: the STS-B loss that differed 7.29 vs 7.50 between 8 x 1
    and 4 x 2 came from two tokenizers, not from the accumulation. tests/models/test_loss_contract.py
    holds every head to the contract directly.)"""
    tokenizer = train_tokenizer([f"sentence number {i} about a film" for i in range(200)], "encoder", 300,
                                min_frequency=1)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    losses = []
    for batch, accumulation in ((8, 1), (4, 2)):
        out = tmp_path / f"{batch}x{accumulation}"
        result = hfpipe_cli("finetune", RECIPES / "finetune" / f"glue-{task}.yaml", "--smoke", "--max-steps", 1,
                            "--output-dir", out, "--set", f"tokenizer.name_or_path={tmp_path / 'tokenizer'}",
                            "--set", f"train.per_device_train_batch_size={batch}",
                            "--set", f"train.gradient_accumulation_steps={accumulation}",
                            "--set", "train.logging_steps=1", "--set", "model.config.hidden_dropout_prob=0",
                            "--set", "model.config.attention_probs_dropout_prob=0",
                            "--set", "model.config.classifier_dropout=0")
        assert result.returncode == 0, result.stderr[-2000:]
        losses.append(json.loads((out / "loss_history.json").read_text())["train"][0][1])
    assert losses[1] == pytest.approx(losses[0], rel=1e-5), losses


def test_perplexity_of_a_file_given_as_training_text_scores_the_whole_file(decoder_dir, tmp_path):
    """The README once scored 195 of 32,705 tokens: --train-file held out the pretraining slice."""
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(f"a review of the film number {i} that was good" for i in range(60)) + "\n")
    counts = []
    for option in ("--train-file", "--validation-file"):
        out = tmp_path / option.strip("-")
        result = hfpipe_cli("evaluate", RECIPES / "pretrain" / "gpt-clm.yaml", "--model", decoder_dir, option, text,
                            "--output-dir", out)
        assert result.returncode == 0, result.stderr[-2000:]
        counts.append(json.loads((out / "eval_results.json").read_text())["eval_tokens"])
    assert counts[0] == counts[1] > 60 * 8  # every token after the first of the one stream
