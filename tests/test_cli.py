"""The `hfpipe` command end to end: exit codes, error lines, and smoke runs of the recipes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def hfpipe(*args, cwd=None, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_unknown_recipe_key_exits_2_with_one_line_naming_the_closest(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((RECIPES / "pretrain" / "gpt-clm.yaml").read_text().replace("learning_rate:", "learning_rat:"))
    result = hfpipe("pretrain", recipe, "--smoke", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hfpipe: error:")
    assert "learning_rat" in lines[0] and "learning_rate" in lines[0]
    assert not (tmp_path / "out").exists()


def test_objective_that_does_not_fit_the_family_exits_2(tmp_path):
    result = hfpipe("pretrain", RECIPES / "pretrain" / "gpt-clm.yaml", "--smoke",
                    "--set", "objective.name=span_corruption", "--output-dir", tmp_path / "o")
    assert result.returncode == 2
    assert "span_corruption" in result.stderr and "seq2seq" in result.stderr


def test_missing_checkpoint_folder_exits_2(tmp_path):
    result = hfpipe("evaluate", RECIPES / "finetune" / "glue-sst2.yaml", "--model", tmp_path / "nothing")
    assert result.returncode == 2
    assert "model.name_or_path" in result.stderr and "no such directory" in result.stderr


def test_plan_prints_chinchilla_optimum():
    result = hfpipe("plan", "--params", "70e9")
    assert result.returncode == 0, result.stderr
    assert "1.4" in result.stdout  # 1.4T tokens for 70B parameters


def _pretrain(tmp_path, recipe, *extra):
    out = tmp_path / Path(recipe).stem
    # the recipe's own accumulation, compile and bf16 run in test_recipes_as_written.py; here they would only cost time
    result = hfpipe("pretrain", RECIPES / "pretrain" / recipe, "--smoke", "--output-dir", out,
                    "--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
                    "--set", "train.mixed_precision=no", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_finished_run_is_not_overwritten(tmp_path):
    out, _ = _pretrain(tmp_path, "gpt-clm.yaml", "--max-steps", "3")
    before = (out / "train_results.json").read_text()
    again = hfpipe("pretrain", RECIPES / "pretrain" / "gpt-clm.yaml", "--smoke", "--output-dir", out)
    assert again.returncode == 2 and "finished run" in again.stderr
    assert (out / "train_results.json").read_text() == before


@pytest.mark.slow
def test_glue_finetune_on_real_mrpc_then_evaluate_reproduces_metrics(tmp_path, shared_data):
    mrpc = shared_data / "glue" / "MRPC"
    out = tmp_path / "mrpc"
    result = hfpipe("finetune", RECIPES / "finetune" / "glue-mrpc.yaml", "--smoke", "--train-file",
                    mrpc / "train.tsv", "--validation-file", mrpc / "dev.tsv", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["f1"] <= 1
    rows = (out / "eval_predictions.jsonl").read_text().splitlines()
    assert len(rows) == 64 and json.loads(rows[0])["index"] == 0
    again = hfpipe("evaluate", RECIPES / "finetune" / "glue-mrpc.yaml", "--smoke", "--model", out,
                   "--validation-file", mrpc / "dev.tsv", "--output-dir", tmp_path / "eval")
    assert again.returncode == 0, again.stderr[-3000:]
    reevaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert reevaluated["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    assert reevaluated["f1"] == pytest.approx(metrics["f1"], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["encoder", "decoder", "seq2seq"])
def test_glue_smoke_runs_for_every_family_on_embedded_data(tmp_path, family):
    result = hfpipe("finetune", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--set", f"model.family={family}",
                    "--output-dir", tmp_path / family)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / family / "eval_results.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1


def _write_squad(path, articles, version="1.1"):
    path.write_text(json.dumps({"version": version, "data": articles}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("recipe, source", [("squad-v1.yaml", "squad-v1.1-dev-half.json"),
                                            ("squad-v2.yaml", "squad-v2.0-dev-quarter.json")])
def test_squad_finetune_reports_the_official_score_of_its_predictions(tmp_path, shared_data, recipe, source):
    from hfpipe.metrics import load_metric
    from hfpipe.tasks.squad import load_squad

    full = json.loads((shared_data / "squad" / source).read_text())
    version = full.get("version", "1.1")
    train = _write_squad(tmp_path / "train.json", full["data"][:-1], version)  # split by article
    held_out = _write_squad(tmp_path / "eval.json", full["data"][-1:], version)
    out = tmp_path / "out"
    result = hfpipe("finetune", RECIPES / "finetune" / recipe, "--smoke", "--train-file", train,
                    "--validation-file", held_out, "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = json.loads((out / "eval_results.json").read_text())
    predictions = json.loads((out / "eval_predictions.json").read_text())
    examples = load_squad(str(held_out), version)
    examples = examples.select(range(min(64, len(examples))))  # --smoke evaluates the first 64 questions
    assert set(predictions) == set(examples["id"])
    references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])]
    if recipe == "squad-v2.yaml":
        rescored = load_metric("squad_v2").compute(
            predictions=[{"id": k, "prediction_text": v, "no_answer_probability": float(v == "")}
                         for k, v in predictions.items()], references=references, no_answer_threshold=0.5)
        assert reported["exact"] == pytest.approx(rescored["exact"]) and reported["f1"] == pytest.approx(rescored["f1"])
    else:
        rescored = load_metric("squad").compute(
            predictions=[{"id": k, "prediction_text": v} for k, v in predictions.items()], references=references)
        assert reported["exact_match"] == pytest.approx(rescored["exact_match"])
        assert reported["f1"] == pytest.approx(rescored["f1"])


# Every GLUE task and both SQuAD recipes, rotating over the families (rte runs on all three above).
ROTATION = [("cola", "decoder"), ("sst2", "seq2seq"), ("mrpc", "encoder"), ("qqp", "decoder"), ("stsb", "encoder"),
            ("stsb", "seq2seq"), ("mnli", "seq2seq"), ("mnli", "encoder"), ("qnli", "decoder"), ("wnli", "encoder")]


@pytest.mark.slow
@pytest.mark.parametrize("task, family", ROTATION, ids=[f"{t}-{f}" for t, f in ROTATION])
def test_every_glue_recipe_runs_with_smoke(tmp_path, task, family):
    from hfpipe.tasks.glue import GLUE_TASKS

    out = tmp_path / task
    result = hfpipe("finetune", RECIPES / "finetune" / f"glue-{task}.yaml", "--smoke", "--max-steps", "10",
                    "--set", f"model.family={family}", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "eval_results.json").read_text())
    for key in GLUE_TASKS[task].metric_keys:
        value = metrics[key]
        # an untrained text-to-text model may generate no parseable label: counted, and NaN for correlations
        assert -1 <= value <= 1 or (value != value and metrics.get("invalid_predictions") == 64), (key, metrics)
    if task == "mnli":
        assert "accuracy_mm" in metrics and (out / "eval_predictions_mm.jsonl").is_file()
    rows = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(len(rows)))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["squad-v1.yaml", "squad-v2.yaml"])
def test_squad_recipes_run_with_smoke_on_a_decoder(tmp_path, recipe):
    out = tmp_path / "out"
    result = hfpipe("finetune", RECIPES / "finetune" / recipe, "--smoke", "--max-steps", "10",
                    "--set", "model.family=decoder", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert len(predictions) == 64 and all(isinstance(v, str) for v in predictions.values())  # --smoke: 64 questions


@pytest.mark.slow
def test_evaluate_on_a_pretraining_recipe_reports_sliding_window_perplexity(tmp_path):
    model, _ = _pretrain(tmp_path, "gpt-clm.yaml", "--max-steps", "5")
    out = tmp_path / "ppl"
    result = hfpipe("evaluate", RECIPES / "pretrain" / "gpt-clm.yaml", "--smoke", "--model", model, "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["stride"] == metrics["max_length"] // 2 and metrics["eval_tokens"] > 100


def _tree_digest(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_evaluate_writes_its_own_folder_and_never_changes_the_run(tmp_path):
    run = tmp_path / "rte"
    trained = hfpipe("finetune", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--max-steps", "3",
                     "--output-dir", run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    before = _tree_digest(run)
    evaluated = hfpipe("evaluate", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--model", run)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    after = _tree_digest(run)
    new = {name for name in after if name.startswith("eval-rte/")}
    assert {name: after[name] for name in after if name not in new} == before  # nothing of the run changed
    assert {"eval-rte/eval_results.json", "eval-rte/eval_predictions.jsonl"} <= new
    metrics = json.loads((run / "eval-rte" / "eval_results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(json.loads((run / "eval_results.json").read_text())["accuracy"])
    # the run's own folder as the output, or a second evaluation over the first: one line, exit 2
    into_run = hfpipe("evaluate", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--model", run,
                      "--output-dir", run)
    again = hfpipe("evaluate", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--model", run)
    assert into_run.returncode == 2 and "is the model being evaluated" in into_run.stderr
    assert again.returncode == 2 and "earlier evaluation" in again.stderr
    assert _tree_digest(run) == after


def test_checkpoint_folder_without_config_exits_2_before_any_work(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("not a checkpoint")
    result = hfpipe("finetune", RECIPES / "finetune" / "glue-rte.yaml", "--smoke", "--model", tmp_path / "model",
                    "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.name_or_path" in lines[0] and "no config.json" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_model_config_key_the_checkpoints_config_lacks_exits_2_before_loading(tmp_path):
    """classifier_pooling is an hfpipe encoder's; a BERT checkpoint's config has no such field, and
    transformers would pass it to BertForSequenceClassification.__init__ (a TypeError)."""
    from test_hub import build_tokenizer
    from transformers import BertConfig, BertModel

    model, tokenizer = tmp_path / "bert", build_tokenizer()
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    result = hfpipe("finetune", RECIPES / "finetune" / "glue-sst2.yaml", "--smoke", "--model", model,
                    "--set", "model.config={classifier_pooling: mean, hidden_dropout_prob: 0.2}",
                    "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("hfpipe: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"model.config: unknown {model} (BertConfig) config field 'classifier_pooling'" in errors[0]
    assert "Loading weights" not in result.stderr


def test_inputs_longer_than_the_checkpoints_position_table_exit_2_before_training(tmp_path):
    """A 64-position BERT cannot take SST-2's 128 tokens plus 20 soft prompt tokens; the run says so
    instead of failing with an IndexError inside the embedding lookup."""
    from test_hub import build_tokenizer
    from transformers import BertConfig, BertModel

    model, tokenizer = tmp_path / "bert64", build_tokenizer()
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    result = hfpipe("finetune", RECIPES / "peft" / "glue-sst2-prompt.yaml", "--smoke", "--model", model,
                    "--set", "task.max_seq_length=48", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("hfpipe: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "task.max_seq_length 48 + peft.num_virtual_tokens 20 = 68" in errors[0] and "has 64" in errors[0]
    assert "Loading weights" not in result.stderr  # said before the checkpoint's weights are read
