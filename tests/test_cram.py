"""Pretraining that pays off: the CPU crams as written, the random-init twin they are compared with,
the experiment's finetuning recipes, and the demo that shows the gain on the embedded SST-2 slice."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                          AutoTokenizer)

import hfpipe
from hfpipe.build import load_tokenizer_and_model, save_random_twin
from hfpipe.demo import verdict
from hfpipe.data.sources import load_corpus_and_mixture
from hfpipe.errors import InputError
from hfpipe.recipes import Recipe, load_recipe
from hfpipe.tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CRAMS = {family: ROOT / "recipes" / "pretrain" / f"cram-cpu-{family}.yaml"
         for family in ("encoder", "decoder", "seq2seq")}
INDOMAIN = ROOT / "recipes" / "pretrain" / "cram-cpu-encoder-indomain.yaml"
DECODER_INDOMAIN = ROOT / "recipes" / "pretrain" / "cram-cpu-decoder-indomain.yaml"
SEQ2SEQ_INDOMAIN = ROOT / "recipes" / "pretrain" / "cram-cpu-seq2seq-indomain.yaml"
GPU_CRAM = ROOT / "recipes" / "pretrain" / "cram-gpu-encoder-wiki.yaml"  # bench/gpu_cram.sh's arm
ADAPT = ROOT / "recipes" / "pretrain" / "adapt-sst2.yaml"
needs_shared = pytest.mark.skipif(not (SHARED / "text").is_dir(), reason="../shared/data is not here")


def hfpipe_cli(*args, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # cwd: the crams name their corpora relative to the repository root, where users run them
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("family", list(CRAMS))
def test_a_cram_runs_as_written_on_its_corpora_and_stops_on_its_budget(tmp_path, family):
    from test_recipes_as_written import _assert_a_finished_model

    out = tmp_path / "out"
    result = hfpipe_cli("pretrain", CRAMS[family], "--output-dir", out, "--set", "train.time_budget=10s",
                        "--set", "train.logging_steps=1")  # a curve within 10 s
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_a_finished_model(out, result)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["TimeBudget"]["spent_seconds"] == pytest.approx(10, abs=5)
    assert 0 < state["global_step"] < load_recipe(CRAMS[family]).train.max_steps
    read = next(line for line in result.stderr.splitlines() if "data mixture as read" in line)
    for source in ("war_and_peace", "tinyshakespeare", "wiki_00", "stdlib_docstrings"):
        assert f"{source}: " in read and f"{source}: 0 documents" not in read
    # loss against wall time, for the experiment's curves: one time per logged loss, in order
    history = json.loads((out / "loss_history.json").read_text())
    assert len(history["train_seconds"]) == len(history["train"]) > 1
    assert history["train_seconds"] == sorted(history["train_seconds"])
    assert len(history["eval_seconds"]) == len(history["eval"])  # (10 s hold no evaluation before the final one)


def test_smoke_shrinks_a_time_budget_and_keeps_the_schedule_running_over_it():
    for recipe in [*CRAMS.values(), INDOMAIN, DECODER_INDOMAIN, SEQ2SEQ_INDOMAIN]:
        full, smoke = load_recipe(recipe), load_recipe(recipe, smoke=True)
        assert full.train.time_budget == "30m" and smoke.train.time_budget == "30s"
        assert smoke.train.lr_scheduler_type == full.train.lr_scheduler_type == "linear"


def test_a_mixture_source_is_exactly_one_of_a_dataset_files_or_the_embedded_corpus(tmp_path):
    text = tmp_path / "novel.txt"
    text.write_text("".join(f"Paragraph {i} of a novel, with a few words in it.\n\n" for i in range(40)))

    def recipe(*sources):
        return Recipe.from_dict({"kind": "pretrain", "model": {"family": "encoder", "size": "tiny"},
                                 "objective": {"name": "mlm"}, "data": {"sources": list(sources)}}, "test")

    mixed = recipe({"embedded": True, "weight": 1}, {"files": [str(text)], "weight": 1})
    corpus, mixture = load_corpus_and_mixture(mixed)
    assert mixture.names == ["embedded", "novel"] and all(count > 0 for count in mixture.counts)
    assert any(row.startswith("Paragraph") for row in corpus["train"]["text"])
    for bad in ({"weight": 1}, {"embedded": True, "files": [str(text)], "weight": 1}):
        with pytest.raises(InputError, match=r"data.sources\[0\]: expected exactly one of dataset .*embedded: true"):
            recipe(bad)


def test_a_mixture_reads_a_folder_of_documents_and_columns_of_json_and_tsv_together(tmp_path):
    """Adaptive pretraining's text as users have it: a folder of .txt documents, a GLUE file's sentence
    column, JSON lines (whose text datasets types as large_string, the others as string)."""
    folder = tmp_path / "docs"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text("".join(f"Document {i}.\n\n" for i in range(20)))
    (folder / "more" / "b.txt").write_text("".join(f"Nested document {i}.\n\n" for i in range(20)))
    (folder / ".hidden.txt").write_text("Not a document.\n")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f'a " charming journey {i} \t1\n' for i in range(40)))
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": f"Review {i}."}) + "\n" for i in range(40)))
    recipe = Recipe.from_dict({"kind": "pretrain", "model": {"family": "encoder", "size": "tiny"},
                               "objective": {"name": "mlm"}, "data": {"sources": [
                                   {"files": [str(folder)], "weight": 1, "name": "docs"},
                                   {"files": [str(tsv)], "text_column": "sentence", "weight": 1},
                                   {"files": [str(jsonl)], "weight": 1}]}}, "test")
    corpus, mixture = load_corpus_and_mixture(recipe)
    assert mixture.names == ["docs", "train", "reviews"] and all(count > 0 for count in mixture.counts)
    texts = set(corpus["train"]["text"])
    assert any(t.startswith("Document ") for t in texts) and any(t.startswith("Nested document ") for t in texts)
    assert any(t.startswith('a " charming journey ') for t in texts) and any(t.startswith("Review ") for t in texts)
    assert not any("Not a document" in text for text in texts)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"data folder .*empty holds no file hfpipe reads"):
        load_corpus_and_mixture(Recipe.from_dict({**recipe.to_dict(), "data": {"sources": [
            {"files": [str(empty)], "weight": 1}]}}, "test"))


@needs_shared
@pytest.mark.slow
def test_the_in_domain_cram_and_the_adaptive_pretraining_recipe_run_as_written(tmp_path, tiny_bert_without_head):
    from test_recipes_as_written import _assert_a_finished_model

    out = tmp_path / "cram"
    sample = ("--set", "tokenizer.train_samples=5000", "--set", "data.max_train_samples=3000")  # sizes, not semantics
    result = hfpipe_cli("pretrain", INDOMAIN, "--output-dir", out, "--set", "train.time_budget=10s", *sample)
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_a_finished_model(out, result)
    read = next(line for line in result.stderr.splitlines() if "data mixture as read" in line)
    for source in ("sst2_train_text", "imdb", "enwiki"):
        assert f"{source}: " in read and f"{source}: 0 documents" not in read
    config = AutoConfig.from_pretrained(out)
    assert config.tie_word_embeddings is False
    model = hfpipe.HfpipeEncoderForMaskedLM.from_pretrained(out)
    assert not torch.equal(model.mlm_head.decoder.weight, model.model.embeddings.word_embeddings.weight)

    # the decoder and the encoder-decoder on the same levers
    for recipe, auto in ((DECODER_INDOMAIN, AutoModelForCausalLM), (SEQ2SEQ_INDOMAIN, AutoModelForSeq2SeqLM)):
        out = tmp_path / recipe.stem
        result = hfpipe_cli("pretrain", recipe, "--output-dir", out, "--set", "train.time_budget=10s", *sample)
        assert result.returncode == 0, result.stderr[-4000:]
        _assert_a_finished_model(out, result)
        model = auto.from_pretrained(out)
        assert model.config.tie_word_embeddings is False
        assert not torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)

    out = tmp_path / "adapted"
    result = hfpipe_cli("pretrain", ADAPT, "--output-dir", out, "--set", "train.time_budget=10s", sample[2], sample[3],
                        "--set", f"model.name_or_path={tiny_bert_without_head}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "model.safetensors").is_file() and (out / "eval_results.json").is_file()
    # the checkpoint's own tokenizer, and its encoder continued (not drawn afresh)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_bert_without_head).get_vocab()
    from transformers import AutoModel

    before, after = (AutoModel.from_pretrained(p).embeddings.word_embeddings.weight for p in (tiny_bert_without_head, out))
    assert (after - before).abs().max() < 0.05  # a few steps at 1e-4 move it a little, a fresh draw would not be near


@pytest.mark.slow
@needs_shared
def test_the_gpu_cram_runs_as_written_where_there_is_no_gpu(tmp_path):
    """BERT-small on Wikipedia in bf16, its schedule over the budget: what bench/gpu_cram.sh runs on a lent
    GPU, here on the CPU for a step (batch, held-out documents and tokenizer text shrunk: sizes only)."""
    from test_recipes_as_written import _assert_a_finished_model

    out = tmp_path / "gpu-small"
    result = hfpipe_cli("pretrain", GPU_CRAM, "--output-dir", out, "--set", "train.time_budget=5s",
                        "--set", "train.per_device_train_batch_size=8", "--set", "train.per_device_eval_batch_size=8",
                        "--set", "data.validation_samples=2", "--set", "tokenizer.train_samples=300",
                        "--set", "data.max_train_samples=300")
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_a_finished_model(out, result)
    written = load_recipe(out / "recipe.yaml")
    assert written.train.mixed_precision == "bf16" and written.train.lr_scheduler_type == "linear"
    model = hfpipe.HfpipeEncoderForMaskedLM.from_pretrained(out)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (512, 4)  # BERT-small
    assert not torch.equal(model.mlm_head.decoder.weight, model.model.embeddings.word_embeddings.weight)


@pytest.fixture
def tiny_bert_without_head(tmp_path):
    """A BERT checkpoint shaped as all-MiniLM-L6-v2 is stored (BertModel: no MLM head), tiny."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    wordpiece = train_tokenizer(["a charming journey through the movie", "labored gags and no wit"] * 30,
                                family="encoder", vocab_size=80)
    wordpiece.save_pretrained(tmp_path / "bert")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path / "bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


@pytest.fixture
def tiny_encoder(tmp_path):
    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, family="encoder",
                                vocab_size=60)
    config = hfpipe.config_for("encoder", "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               hidden_dropout_prob=0.0)
    torch.manual_seed(1)
    model = hfpipe.HfpipeEncoderForMaskedLM(config)
    model.save_pretrained(tmp_path / "pretrained")
    tokenizer.save_pretrained(tmp_path / "pretrained")
    return tmp_path / "pretrained"


def test_the_random_twin_is_the_same_model_and_tokenizer_with_fresh_weights(tiny_encoder, tmp_path):
    twin = save_random_twin(tiny_encoder, tmp_path / "twin")
    configs = [AutoConfig.from_pretrained(path).to_dict() for path in (twin, tiny_encoder)]
    assert {k: v for k, v in configs[0].items() if k != "_name_or_path"} == \
        {k: v for k, v in configs[1].items() if k != "_name_or_path"}
    assert AutoTokenizer.from_pretrained(twin).get_vocab() == AutoTokenizer.from_pretrained(tiny_encoder).get_vocab()
    pretrained, fresh = (hfpipe.HfpipeEncoderForMaskedLM.from_pretrained(p) for p in (tiny_encoder, twin))
    differing = [name for name, weight in pretrained.state_dict().items()
                 if not torch.equal(weight, fresh.state_dict()[name])]
    matrices = [name for name, weight in pretrained.state_dict().items() if weight.dim() == 2]
    assert matrices and set(matrices) <= set(differing)  # (LayerNorms start at 1 and 0 in both)
    assert AutoModelForSequenceClassification.from_pretrained(twin, num_labels=2).num_labels == 2
    # the same seed, the same twin: a control run can be repeated
    again = save_random_twin(tiny_encoder, tmp_path / "again")
    assert all(torch.equal(w, hfpipe.HfpipeEncoderForMaskedLM.from_pretrained(again).state_dict()[n])
               for n, w in fresh.state_dict().items())


@pytest.mark.parametrize("family, model_class", [("encoder", "HfpipeEncoderForMaskedLM"),
                                                  ("decoder", "HfpipeDecoderForCausalLM"),
                                                  ("seq2seq", "HfpipeSeq2SeqForConditionalGeneration")])
def test_a_twin_that_keeps_the_bottom_layers_has_the_pretrained_embeddings_and_blocks_below(family, model_class,
                                                                                          tmp_path):
    model_class = getattr(hfpipe, model_class)
    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, family=family,
                                vocab_size=300)
    config = hfpipe.config_for(family, "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               num_hidden_layers=3, **({"num_decoder_layers": 3} if family == "seq2seq" else {}))
    torch.manual_seed(7)
    model_class(config).save_pretrained(tmp_path / "pretrained")
    tokenizer.save_pretrained(tmp_path / "pretrained")
    weights = {name: model_class.from_pretrained(save_random_twin(tmp_path / "pretrained", tmp_path / name,
                                                                  keep_layers=keep)).state_dict()
               for name, keep in (("random", None), ("bottom1", 1))}
    weights["pretrained"] = model_class.from_pretrained(tmp_path / "pretrained").state_dict()
    kept = {name for name, weight in weights["bottom1"].items() if torch.equal(weight, weights["pretrained"][name])}
    drawn = {name for name, weight in weights["bottom1"].items() if torch.equal(weight, weights["random"][name])}
    matrices = {name for name, weight in weights["pretrained"].items() if weight.dim() == 2}
    embeddings = {name for name in matrices if "embeddings" in name or name.endswith("shared.weight")}
    first, upper = ({name for name in matrices if re.search(rf"\.layers\.{i}\.", name)} for i in ("0", "[12]"))
    assert embeddings and first and upper
    assert embeddings | first <= kept and not (embeddings | first) & drawn  # pretrained, not redrawn
    assert upper <= drawn and not upper & kept  # exactly the random twin's (same seed)
    # the cram's blocks under fresh word embeddings: only the word embeddings are the random twin's
    blocks = model_class.from_pretrained(save_random_twin(tmp_path / "pretrained", tmp_path / "blocks", keep_layers=3,
                                                          keep_word_embeddings=False)).state_dict()
    words = {name for name in matrices if name.endswith(("word_embeddings.weight", "shared.weight"))}
    assert len(words) == 1 and all(torch.equal(blocks[name], weights["random"][name]) for name in words)
    assert all(torch.equal(blocks[name], weights["pretrained"][name]) for name in matrices - words - {
        name for name in matrices if not (re.search(r"\.layers\.", name) or "embeddings" in name)})
    with pytest.raises(InputError, match="keep_layers 4: expected 0 to 3"):
        save_random_twin(tmp_path / "pretrained", tmp_path / "bad", keep_layers=4)


def test_a_random_twin_of_a_foreign_checkpoint_is_one_clear_error(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")
    with pytest.raises(InputError, match="BertModel is not one of hfpipe's models"):
        save_random_twin(tmp_path / "bert", tmp_path / "twin")


def test_model_config_overrides_apply_to_a_checkpoint_being_finetuned(tiny_encoder, tmp_path):
    recipe = Recipe.from_dict({"kind": "finetune",
                               "model": {"family": "encoder", "name_or_path": str(tiny_encoder),
                                         "config": {"hidden_dropout_prob": 0.3}},
                               "task": {"name": "sst2"}, "train": {"output_dir": str(tmp_path / "out")}}, "test")
    _, model = load_tokenizer_and_model(recipe, AutoModelForSequenceClassification, lambda: [], num_labels=2)
    assert model.config.hidden_dropout_prob == 0.3
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} >= {0.3}


@pytest.fixture
def cram(tmp_path, monkeypatch):
    """experiments/cram.py as a module, writing its runs and results under tmp_path."""
    spec = importlib.util.spec_from_file_location("cram_experiment", ROOT / "experiments" / "cram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


@needs_shared
def test_the_experiment_finetunes_both_inits_with_one_valid_recipe_per_family_and_task(tiny_encoder, tmp_path, cram):
    models = {"crammed": tiny_encoder, "random": save_random_twin(tiny_encoder, tmp_path / "twin")}
    for family, tasks in cram.TASKS.items():
        for task in tasks:
            recipes = [load_recipe(cram.finetune_recipe(family, task, model, tmp_path / "runs" / init / task, seed=1))
                       for init, model in models.items()]
            crammed, random_init = recipes
            assert crammed.model.family == family and crammed.task.name == task
            # identical but for the model folder and the output folder
            assert crammed.train.learning_rate == random_init.train.learning_rate
            assert crammed.data.train_files == random_init.data.train_files
            assert crammed.model.config == random_init.model.config
    subset = (tmp_path / "data" / f"sst2-train-{cram.SST2_TRAIN}.tsv").read_text().splitlines()
    assert subset[0] == "sentence\tlabel" and len(subset) == cram.SST2_TRAIN + 1
    assert len(set(subset)) > 0.95 * len(subset)  # drawn without replacement (GLUE's file repeats a few phrases)
    seq2seq = load_recipe(cram.finetune_recipe("seq2seq", "sst2", tiny_encoder, tmp_path / "s", seed=0))
    assert seq2seq.train.learning_rate == cram.LEARNING_RATE["seq2seq"] != cram.LEARNING_RATE["encoder"]
    swept = load_recipe(cram.finetune_recipe("encoder", "sst2", tiny_encoder, tmp_path / "e", seed=0, learning_rate=3e-4))
    assert swept.train.learning_rate == 3e-4


def test_a_finetuning_variant_lands_in_its_own_rows_of_the_report(cram):
    assert cram.variant() == ""
    assert cram.variant("cls", None, 3e-4) == "-cls-pooling-lr0.0003" and cram.variant(epochs=1) == "-1epochs"
    cram.save("finetune", {"encoder": {"sst2": {"crammed": [70.0, 72.0, 74.0], "random": [75.0, 75.0, 75.0],
                                                "epochs": 3, "learning_rate": 1e-4}}})
    cram.save("finetune-lr0.0003", {"encoder": {"sst2": {"crammed": [76.0], "random": [77.5], "epochs": 3,
                                                         "learning_rate": 3e-4}}})
    cram.save("linear-probe", {"crammed": [62.8, 61.0], "random": [60.4, 60.2]})
    text = cram.report()
    rows = [line for line in text.splitlines() if line.startswith("| encoder |")]
    assert rows == ["| encoder | SST-2 dev accuracy | 3 | 0.0001 | 3 | 72.0 ± 2.0 | 75.0 ± 0.0 | -3.0 |",
                    "| encoder | SST-2 dev accuracy | 3 | 0.0003 | 1 | 76.0 | 77.5 | -1.5 |"]
    assert "| crammed | 62.8 | 61.0 |" in text and "| layer 0 | layer 1 |" in text
    assert (cram.RESULTS / "results.md").read_text() == text


@needs_shared
def test_finished_runs_are_read_not_repeated_and_one_task_keeps_the_others_results(tiny_encoder, cram):
    shutil.copytree(tiny_encoder, cram.RUNS / "encoder")
    cram.save("finetune", {"encoder": {"sst2": {"crammed": [73.0], "random": [75.0], "epochs": 3}}})
    for init in ("crammed", "random"):
        for seed in cram.SEEDS:
            out = cram.RUNS / "finetune" / "encoder" / "mrpc" / f"{init}-seed{seed}"
            out.mkdir(parents=True)
            (out / "eval_results.json").write_text(json.dumps({"f1": 0.8 + seed / 100}))
    scores = cram.finetune(("encoder",), parallel=2, tasks=("mrpc",))  # every run has finished: none starts
    assert scores["finetune"]["encoder"]["mrpc"]["crammed"] == pytest.approx([80.0, 81.0, 82.0])
    saved = cram.load("finetune")["encoder"]
    assert set(saved) == {"sst2", "mrpc"} and saved["sst2"]["crammed"] == [73.0]


@needs_shared
def test_the_linear_probe_reads_sentiment_from_every_layer_of_both_inits(cram):
    sentences = [line.split("\t")[0] for line in cram.task_files("sst2")[0].read_text().splitlines()[1:2001]]
    tokenizer = train_tokenizer(sentences, family="encoder", vocab_size=1000)
    config = hfpipe.config_for("encoder", "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    hfpipe.HfpipeEncoderForMaskedLM(config).save_pretrained(cram.RUNS / "encoder")
    tokenizer.save_pretrained(cram.RUNS / "encoder")
    save_random_twin(cram.RUNS / "encoder", cram.RUNS / "encoder-random", seed=1)
    probed = cram.linear_probe()
    assert set(probed) == {"crammed", "random"}
    assert all(len(scores) == config.num_hidden_layers + 1 for scores in probed.values())  # and the embeddings
    # even random weights carry the words' identity, which is worth more than SST-2's majority class: by
    # more than the dev set's standard error (872 phrases: 1.7 points), not by a margin tuned to one install
    labels = [line.split("\t")[-1] for line in cram.task_files("sst2")[1].read_text().splitlines()[1:]]
    majority = 100 * max(labels.count(label) for label in set(labels)) / len(labels)
    assert all(majority + 2 < score < 90 for scores in probed.values() for score in scores), (majority, probed)
    assert cram.load("linear-probe") == probed


def test_the_demos_verdict_never_presents_a_loss_or_noise_as_a_gain():
    assert verdict([2.0, 1.0]).startswith("pretraining ahead on every seed: +1.5 +/- 0.5")
    assert verdict([-2.0, -1.0]).startswith("pretraining BEHIND on every seed: -1.5")
    assert verdict([1.0, -0.5]).startswith("no gain beyond the noise: +0.2 +/- 0.8")


@pytest.mark.slow
def test_the_demo_finetunes_the_pretrained_and_the_random_model_on_the_embedded_sst2_slice(tmp_path):
    out = tmp_path / "demo"
    result = hfpipe_cli("demo", "--output-dir", out, "--budget", "20s", "--epochs", "0.25")
    assert result.returncode == 0, result.stderr[-4000:]
    table = result.stdout[result.stdout.index("hfpipe demo results"):]
    for row in ("SST-2 dev accuracy, pretrained", "SST-2 dev accuracy, random init", "gain from pretraining",
                "optimizer steps the 20s budget bought"):
        assert row in table
    steps = json.loads((out / "pretrain" / "trainer_state.json").read_text())["global_step"]
    assert re.search(rf"optimizer steps the 20s budget bought\s*\|\s*{steps} \|", table)
    gains = []
    for seed in (0, 1):  # every seed finetunes both, and the verdict reads their gains
        pretrained, random_init = (json.loads((out / f"finetune-{run}-seed{seed}" / "eval_results.json").read_text())
                                   ["accuracy"] for run in ("pretrain", "random-init"))
        assert 0 <= pretrained <= 1 and 0 <= random_init <= 1
        gains.append(100 * (pretrained - random_init))
    assert "Verdict: " + verdict(gains) in result.stdout
    # without a gain on every seed it says so and shows the full experiment's measured table instead
    full = (Path(hfpipe.__file__).parent / "data" / "pays_off.md").read_text()
    assert ("did not show a gain here" in result.stdout and full in result.stdout) == (min(gains) <= 0)
    # never pretrained on the sentences it is scored on
    pretrained_text = {line for line in (out / "data" / "sst2-train-sentences.txt").read_text().splitlines() if line}
    dev = (Path(hfpipe.__file__).parent / "data" / "sst2" / "dev.tsv").read_text().splitlines()[1:]
    assert len(pretrained_text) > 3000 and not pretrained_text & {line.split("\t")[0].strip() for line in dev}
    mixture = next(line for line in result.stderr.splitlines() if "data mixture as read" in line)
    assert "sst2_sentences: 0 documents" not in mixture and "stdlib_docstrings: 0 documents" not in mixture
