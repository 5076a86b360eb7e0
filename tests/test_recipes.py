"""Recipes: every shipped file validates (also under --smoke), and every error class names file, key and fix."""

import dataclasses
import math
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfpipe.errors import InputError
from hfpipe.recipes import (
    CLI_OVERRIDE_KEYS,
    OBJECTIVES,
    Recipe,
    TrainSection,
    check_machine,
    load_recipe,
    smoke_overrides,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ALL_RECIPES = sorted(RECIPES.rglob("*.yaml"))
GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


def write(tmp_path: Path, recipe, name="recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe), encoding="utf-8")
    return path


def merged(base, sections):
    """``base`` with each section's keys updated (a non-mapping value replaces the section)."""
    for section, values in sections.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    return base


def finetune(**sections):
    return merged({"kind": "finetune", "model": {"family": "encoder"}, "task": {"name": "sst2"}}, sections)


def pretrain(name="mlm", family="encoder", **sections):
    return merged({"kind": "pretrain", "model": {"family": family}, "objective": {"name": name}}, sections)


def error_of(tmp_path, recipe, **kwargs) -> str:
    path = write(tmp_path, recipe)
    with pytest.raises(InputError) as info:
        load_recipe(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# ---------------------------------------------------------------------------- the shipped recipes
def test_every_interface_recipe_exists():
    names = {str(p.relative_to(RECIPES)) for p in ALL_RECIPES}
    expected = {f"finetune/glue-{t}.yaml" for t in GLUE} | {"finetune/squad-v1.yaml", "finetune/squad-v2.yaml"}
    expected |= {f"pretrain/{n}.yaml" for n in ("bert-mlm-nsp", "roberta-mlm", "gpt-clm", "t5-span-corruption",
                                                  "t5-prefix-lm", "spanbert", "t5-ul2", "electra")}
    expected |= {f"peft/glue-sst2-{m}.yaml" for m in ("lora", "prefix", "prompt", "qlora")}
    expected |= {"peft/squad-v1-lora.yaml", "icl/glue-sst2.yaml"}
    expected |= {"finetune/sft.yaml", "peft/sft-lora.yaml"}  # instruction tuning, beyond interface.md's list
    expected |= {"finetune/squad-v1-t5.yaml", "finetune/conll2003-ner.yaml", "finetune/conll2003-pos.yaml"}
    expected |= {"pretrain/long-encoder.yaml"}  # 4096 tokens, sliding window + global [CLS]
    expected |= {f"pretrain/cram-cpu-{f}.yaml" for f in ("encoder", "decoder", "seq2seq")}  # 30 min of 2 CPU cores
    expected |= {"pretrain/cram-cpu-encoder-indomain.yaml", "pretrain/cram-cpu-electra-indomain.yaml",
                 "pretrain/cram-cpu-decoder-indomain.yaml", "pretrain/cram-cpu-seq2seq-indomain.yaml",
                 "pretrain/cram-gpu-encoder-wiki.yaml", "pretrain/adapt-sst2.yaml"}  # pretraining that pays off
    expected |= {"post/dpo-lora.yaml", "post/dpo-full.yaml"}  # preference finetuning
    assert expected == names


SEMANTIC_KEYS = ("data.streaming", "data.preprocessing_num_workers", "train.gradient_accumulation_steps",
                 "train.optim", "train.mixed_precision", "train.torch_compile", "train.gradient_checkpointing",
                 "train.dataloader_num_workers", "train.report_to", "train.lr_scheduler_type", "train.max_grad_norm")


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_every_recipe_validates_and_round_trips(path, smoke, tmp_path):
    recipe = load_recipe(path, smoke=smoke)
    assert recipe.kind == path.parent.name.replace("peft", "finetune").replace("post", "finetune")
    assert recipe.description
    assert recipe.train.output_dir == f"runs/{path.stem}" + ("-smoke" if smoke else "")
    # The resolved recipe (what save_yaml writes into the output dir) reads back identically.
    recipe.save_yaml(tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    if smoke:
        # about 30 micro-batches, however many the recipe accumulates per step, over 3 steps at least
        assert recipe.train.max_steps == max(3, -(-30 // recipe.train.gradient_accumulation_steps))
        assert recipe.data.max_train_samples == 256
        assert recipe.model.size == "tiny" and recipe.model.name_or_path is None
        assert recipe.tokenizer.vocab_size == 2000 and recipe.data.dataset is None
        assert not recipe.hub.push
        # Smoke shrinks sizes, never semantics: every other behaviour-changing key is the recipe's own.
        full = load_recipe(path)
        for key in SEMANTIC_KEYS:
            section, name = key.split(".")
            assert getattr(getattr(recipe, section), name) == getattr(getattr(full, section), name), key


def test_recipe_facts():
    bert = load_recipe(RECIPES / "pretrain/bert-mlm-nsp.yaml")
    assert (bert.model.family, bert.model.size, bert.objective.name, bert.objective.max_seq_length) == (
        "encoder", "base", "mlm_nsp", 128)
    assert (bert.objective.mlm_probability, bert.objective.mask_replace_prob, bert.objective.random_replace_prob) == (
        0.15, 0.8, 0.1)
    t5 = load_recipe(RECIPES / "pretrain/t5-span-corruption.yaml")
    assert (t5.objective.max_seq_length, t5.objective.noise_density, t5.objective.mean_noise_span_length) == (
        512, 0.15, 3.0)
    gpt = load_recipe(RECIPES / "pretrain/gpt-clm.yaml")
    assert (gpt.model.size, gpt.objective.max_seq_length, gpt.tokenizer.vocab_size) == ("base", 1024, 50257)
    for task in GLUE:
        r = load_recipe(RECIPES / f"finetune/glue-{task}.yaml")
        t = r.train
        assert (r.task.name, r.task.max_seq_length, r.data.dataset_config) == (task, 128, task)
        assert (t.num_train_epochs, t.learning_rate, t.per_device_train_batch_size) == (3.0, 2e-5, 32)
    for name, task in (("squad-v1", "squad"), ("squad-v2", "squad_v2")):
        r = load_recipe(RECIPES / f"finetune/{name}.yaml")
        assert (r.task.name, r.task.max_seq_length, r.task.doc_stride) == (task, 384, 128)
        assert (r.train.learning_rate, r.train.num_train_epochs, r.train.per_device_train_batch_size) == (3e-5, 2, 12)
    qlora = load_recipe(RECIPES / "peft/glue-sst2-qlora.yaml")
    assert qlora.quantization.load_in_4bit and qlora.quantization.bnb_4bit_quant_type == "nf4"
    assert qlora.peft.method == "lora"
    icl = load_recipe(RECIPES / "icl/glue-sst2.yaml")
    assert icl.icl.shots == [0, 1, 4, 8] and icl.icl.verbalizer == {"negative": "terrible", "positive": "great"}


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_training_arguments_accept_every_recipe(path):
    from transformers import TrainingArguments

    train = load_recipe(path).train
    kwargs = train.to_training_arguments_kwargs()
    kwargs["use_cpu"] = True  # bf16 recipes are for GPUs; TrainingArguments refuses bf16 on a CPU-only machine
    args = TrainingArguments(**kwargs)
    assert args.learning_rate == train.learning_rate
    assert args.bf16 == (train.mixed_precision == "bf16") and args.fp16 == (train.mixed_precision == "fp16")
    assert args.eval_strategy == "steps" and args.save_strategy == "steps"
    assert args.per_device_train_batch_size == train.per_device_train_batch_size
    assert args.max_steps == train.max_steps and args.seed == train.seed


def test_training_arguments_mapping():
    from transformers import TrainingArguments

    train = TrainSection(output_dir="out", warmup_ratio=0.06, mixed_precision="fp16", report_to=[],
                         gradient_checkpointing=True, load_best_model_at_end=True, eval_steps=10, save_steps=20)
    kwargs = train.to_training_arguments_kwargs()
    assert kwargs["fp16"] and not kwargs["bf16"]
    assert kwargs["report_to"] == "none"
    assert "resume" not in kwargs and "overwrite" not in kwargs and "mixed_precision" not in kwargs
    kwargs.pop("fp16")  # fp16 autocast needs a GPU
    args = TrainingArguments(**kwargs)
    # transformers 5.23 folds the ratio into a fractional warmup_steps.
    assert getattr(args, "warmup_ratio", None) == 0.06 or args.warmup_steps == 0.06
    assert args.report_to == [] and args.load_best_model_at_end
    no_eval = TrainingArguments(**{**kwargs, **{k: v for k, v in train.to_training_arguments_kwargs(do_eval=False)
                                                 .items() if k in ("eval_strategy", "load_best_model_at_end")}})
    assert no_eval.eval_strategy == "no" and not no_eval.load_best_model_at_end


# ---------------------------------------------------------------------------- type coercion
def test_yaml_scalars_are_coerced(tmp_path):
    path = write(tmp_path, "kind: finetune\nmodel: {family: encoder}\ntask: {name: rte}\n"
                           "train: {learning_rate: 1e-4, num_train_epochs: 2, mixed_precision: no, max_steps: 1.0e+3}\n")
    t = load_recipe(path).train
    assert isinstance(t.learning_rate, float) and t.learning_rate == 1e-4  # YAML 1.1 reads 1e-4 as a string
    assert isinstance(t.num_train_epochs, float) and t.num_train_epochs == 2.0
    assert t.mixed_precision == "no"  # YAML 1.1 reads a bare `no` as false
    assert isinstance(t.max_steps, int) and t.max_steps == 1000


def test_resolved_defaults_depend_on_family():
    enc = Recipe.from_dict(pretrain("mlm"))
    assert (enc.tokenizer.vocab_size, enc.tokenizer.lowercase) == (30522, True)
    dec = Recipe.from_dict(pretrain("clm", "decoder"))
    assert (dec.tokenizer.vocab_size, dec.tokenizer.lowercase) == (50257, False)
    s2s = Recipe.from_dict(finetune(model={"family": "seq2seq"}))
    assert (s2s.task.text_to_text, s2s.task.pair_format) == (True, "plain")
    gpt = Recipe.from_dict(finetune(model={"family": "decoder"}))
    assert (gpt.task.text_to_text, gpt.task.pair_format) == (False, "gpt")
    ckpt = Recipe.from_dict(finetune(model={"name_or_path": "org/model"}))
    assert ckpt.tokenizer.vocab_size is None  # the checkpoint's own tokenizer


# ---------------------------------------------------------------------------- error classes
def test_unknown_key_names_the_closest(tmp_path):
    message = error_of(tmp_path, finetune(train={"learnig_rate": 1e-4}))
    assert message == f"{tmp_path / 'recipe.yaml'}: train.learnig_rate: unknown key (did you mean 'train.learning_rate'?)"
    assert "did you mean 'train.learning_rate'" in error_of(tmp_path, {**finetune(), "learning_rate": 1e-4})
    assert "did you mean 'model'" in error_of(tmp_path, {**finetune(), "modle": {}})
    assert "valid keys: family, size, name_or_path" in error_of(tmp_path, finetune(model={"zzz": 1}))


def test_wrong_types(tmp_path):
    assert error_of(tmp_path, finetune(train={"learning_rate": "fast"})).endswith(
        "train.learning_rate: expected a float, got 'fast'")
    assert "train.max_steps: expected an integer, got 2.5" in error_of(tmp_path, finetune(train={"max_steps": 2.5}))
    assert "train.overwrite: expected a boolean (true/false), got 'yes please'" in error_of(
        tmp_path, finetune(train={"overwrite": "yes please"}))
    assert "data.train_files: expected a list of strings, got 'a.txt'" in error_of(
        tmp_path, finetune(data={"train_files": "a.txt"}))
    assert "data.validation_files[1]: expected a string, got 1.5" in error_of(
        tmp_path, finetune(data={"validation_files": ["a", 1.5]}))
    assert "train: expected a mapping, got 3" in error_of(tmp_path, finetune(train=3))
    assert "train.learning_rate: expected a float, got nan" in error_of(tmp_path, finetune(train={"learning_rate": float("nan")}))
    assert "train.learning_rate: expected a number > 0, got -0.1" in error_of(
        tmp_path, finetune(train={"learning_rate": -0.1}))
    assert "objective.noise_density: expected a number in (0, 1), got 1.0" in error_of(
        tmp_path, pretrain("span_corruption", "seq2seq", objective={"name": "span_corruption", "noise_density": 1}))


def test_missing_required_keys(tmp_path):
    assert "recipe.yaml: kind: missing required key (one of pretrain, finetune, icl)" in error_of(
        tmp_path, {"model": {"family": "encoder"}})
    assert "model: missing required section" in error_of(tmp_path, {"kind": "finetune"})
    assert "model.family: missing required key (one of encoder, decoder, seq2seq)" in error_of(
        tmp_path, {"kind": "finetune", "model": {}, "task": {"name": "rte"}})
    assert "objective: required for kind: pretrain" in error_of(tmp_path, {"kind": "pretrain", "model": {"family": "decoder"}})
    assert "task: required for kind: finetune" in error_of(tmp_path, {"kind": "finetune", "model": {"family": "encoder"}})
    assert "task.name: missing required key (one of cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli, squad, " \
        "squad_v2, sft, ner, pos, dpo)" in error_of(
        tmp_path, {"kind": "finetune", "model": {"family": "encoder"}, "task": {"max_seq_length": 64}})


def test_missing_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "data.train_files[0]: no such file 'missing.txt'" in error_of(tmp_path, finetune(data={"train_files": ["missing.txt"]}))
    assert "data.train_files[0]: no file matches 'shards/*.txt'" in error_of(
        tmp_path, finetune(data={"train_files": ["shards/*.txt"]}))
    assert "tokenizer.name_or_path: no such directory './tok'" in error_of(tmp_path, finetune(tokenizer={"name_or_path": "./tok"}))
    assert "model.name_or_path: no such directory 'runs/a/b'" in error_of(
        tmp_path, finetune(model={"name_or_path": "runs/a/b@v1"}))
    assert "train.resume: no such checkpoint directory 'runs/x/checkpoint-5'" in error_of(
        tmp_path, finetune(train={"resume": "runs/x/checkpoint-5"}))
    # Existing files and dirs pass; Hub ids ("name", "org/name@revision") are not checked here.
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.txt").write_text("hello\n")
    (tmp_path / "tok").mkdir()
    ok = load_recipe(write(tmp_path, finetune(data={"train_files": ["shards/*.txt", "shards/a.txt"]},
                                              tokenizer={"name_or_path": "./tok"},
                                              model={"name_or_path": "google-bert/bert-base-uncased@main"})))
    assert ok.data.train_files == ["shards/*.txt", "shards/a.txt"]


# Which family each pretraining objective trains (BERT / ALBERT / RoBERTa / SpanBERT / ELECTRA, GPT, T5 / UL2).
OBJECTIVE_FAMILY = {"mlm_nsp": "encoder", "sop": "encoder", "mlm": "encoder", "span_mlm": "encoder",
                    "electra": "encoder", "clm": "decoder", "span_corruption": "seq2seq", "prefix_lm": "seq2seq",
                    "ul2": "seq2seq"}


def test_every_objective_is_registered():
    assert list(OBJECTIVES) == list(OBJECTIVE_FAMILY)


@pytest.mark.parametrize("objective", sorted(OBJECTIVE_FAMILY))
def test_objective_must_fit_family(objective, tmp_path):
    wanted = OBJECTIVE_FAMILY[objective]
    assert Recipe.from_dict(pretrain(objective, wanted)).objective.name == objective
    for family in {"encoder", "decoder", "seq2seq"} - {wanted}:
        message = error_of(tmp_path, pretrain(objective, family))
        assert message.endswith(f"objective.name: {objective} needs model.family: {wanted}, got {family}")


def test_unknown_glue_task_names_the_closest(tmp_path):
    message = error_of(tmp_path, finetune(task={"name": "mnli_m"}))
    assert "task.name: unknown task 'mnli_m' (did you mean 'mnli'?); known: cola, sst2, mrpc" in message
    assert "squad_v2" in message


@pytest.mark.parametrize(
    "recipe, message",
    [
        (finetune(model={"family": "bert"}), "model.family: expected one of encoder, decoder, seq2seq, got 'bert'"),
        (finetune(model={"size": "bse"}), "model.size: expected one of tiny, small, base, large, got 'bse' (did you mean 'base'?)"),
        (pretrain("mlm_sop"), "objective.name: expected one of mlm_nsp, sop, mlm, span_mlm, electra, clm, span_corruption, prefix_lm, ul2, got 'mlm_sop'"),
        (finetune(peft={"method": "qlora"}), "peft.method: expected one of none, lora, prefix_tuning, prompt_tuning, ia3, got 'qlora'"),
        (finetune(train={"mixed_precision": "bf32"}), "train.mixed_precision: expected one of no, bf16, fp16, got 'bf32'"),
        (finetune(train={"optim": "adamw_torch_fusd"}), "train.optim: unknown value 'adamw_torch_fusd' (did you mean 'adamw_torch_fused'?)"),
        (finetune(train={"lr_scheduler_type": "cosin"}), "train.lr_scheduler_type: unknown value 'cosin' (did you mean 'cosine'?)"),
        ({"kind": "train", "model": {"family": "encoder"}}, "kind: expected one of pretrain, finetune, icl, got 'train'"),
    ],
)
def test_enum_values_name_the_allowed_list(recipe, message, tmp_path):
    assert message in error_of(tmp_path, recipe)


@pytest.mark.parametrize(
    "recipe, message",
    [
        (finetune(quantization={"load_in_4bit": True, "load_in_8bit": True}, peft={"method": "lora"}),
         "quantization: load_in_4bit and load_in_8bit are exclusive"),
        (finetune(quantization={"load_in_4bit": True}), "peft.method: a quantized model cannot be trained in full"),
        ({**finetune(), "objective": {"name": "mlm"}}, "objective: only for kind: pretrain, got kind: finetune"),
        ({**pretrain("mlm"), "task": {"name": "rte"}}, "task: not used by kind: pretrain"),
        (finetune(task={"name": "squad", "max_seq_length": 128, "doc_stride": 128}),
         "task.doc_stride: must be smaller than task.max_seq_length (128), got 128"),
        (finetune(task={"pair_format": "gpt"}), "task.pair_format: gpt ([START] a [DELIM] b [EXTRACT], GPT-1) is for decoders"),
        (finetune(task={"text_to_text": True}), "task.text_to_text: text-to-text needs model.family: seq2seq, got encoder"),
        (finetune(data={"dataset": "nyu-mll/glue", "validation_files": ["recipe.yaml"]}),
         "data.dataset: give a Hub dataset or local train/validation files, not both"),
        (finetune(hub={"push": True}), "hub.repo_id: required when hub.push is true"),
        (finetune(hub={"repo_id": "a/b/c"}), "hub.repo_id: expected 'name' or 'org/name', got 'a/b/c'"),
        (finetune(train={"warmup_steps": 100, "warmup_ratio": 0.1}), "give warmup_steps or warmup_ratio, not both"),
        (finetune(train={"max_steps": 0}), "train.max_steps: expected -1 (use num_train_epochs) or a positive integer"),
        (finetune(train={"load_best_model_at_end": True, "eval_steps": 30, "save_steps": 50}),
         "train.save_steps: must be a multiple of train.eval_steps (30)"),
        (pretrain("mlm", objective={"name": "mlm", "mask_replace_prob": 0.8, "random_replace_prob": 0.3}),
         "mask_replace_prob + random_replace_prob must be <= 1"),
        ({**finetune(), "icl": {"shots": [1]}}, "icl: only for kind: icl, got kind: finetune"),
    ],
)
def test_contradictions(recipe, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert message in error_of(tmp_path, recipe)


def icl(**icl_section):
    return {"kind": "icl", "model": {"family": "decoder"}, "task": {"name": "sst2"}, "icl": icl_section}


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({**icl(), "model": {"family": "encoder"}}, "model.family: icl scores label words with a language model"),
        ({**icl(), "task": {"name": "stsb"}}, "expected a GLUE classification task, got stsb"),
        (icl(template="{text} => {answer}"), "icl.template: unknown placeholder {answer}; allowed: {text}, {text_a}"),
        (icl(template="{text}"), "icl.template: must contain {label}"),
        (icl(template="{text_a} {text_b} {label}"), "sst2 has one text: use {text}, not {text_b}"),
        ({**icl(template="{text} {label}"), "task": {"name": "rte"}}, "rte classifies a pair: use {text_a} and {text_b}"),
        (icl(template="{text {label}"), "icl.template: not a valid template"),
        (icl(shots=[0, -1]), "icl.shots: expected a number >= 0, got -1"),
        (icl(verbalizer={"neg": "bad", "positive": "good"}),
         "icl.verbalizer: expected one word for each label of sst2: negative, positive; got neg, positive"),
        ({**icl(), "peft": {"method": "lora"}}, "peft.method: icl trains nothing"),
    ],
)
def test_icl_errors(recipe, message, tmp_path):
    assert message in error_of(tmp_path, recipe)


def test_icl_defaults_are_filled_in():
    r = Recipe.from_dict({k: v for k, v in icl().items() if k != "icl"})
    assert r.icl.shots == [0, 1, 4, 8] and r.icl.balanced and r.icl.verbalizer is None


def test_yaml_problems_name_the_line(tmp_path):
    assert error_of(tmp_path, "kind: finetune\nmodel: [unclosed\n").startswith(f"{tmp_path / 'recipe.yaml'}: line ")
    assert "expected a mapping of sections" in error_of(tmp_path, "- just\n- a list\n")
    with pytest.raises(InputError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- --set and CLI options
def test_set_overrides(tmp_path):
    path = write(tmp_path, finetune())
    r = load_recipe(path, overrides=["train.learning_rate=3e-5", "model.config.num_hidden_layers=6",
                                     "peft={method: lora, r: 4}", "train.report_to=[]", "task.name=rte"])
    assert (r.train.learning_rate, r.model.config, r.peft.method, r.peft.r) == (3e-5, {"num_hidden_layers": 6}, "lora", 4)
    assert r.peft.lora_alpha == 16 and r.train.report_to == [] and r.task.name == "rte"
    for item, message in [
        ("train.learnig_rate=1", "--set train.learnig_rate=1: train.learnig_rate: unknown key (did you mean 'train.learning_rate'?)"),
        ("train.learning_rate=fast", "--set train.learning_rate=fast: train.learning_rate: expected a float, got 'fast'"),
        ("train.learning_rate", "--set train.learning_rate: expected dotted.key=value"),
        ("trian.seed=1", "trian: unknown key (did you mean 'train'?)"),
        ("train.seed.x=1", "train.seed.x: train.seed is a single value, not a section"),
        ("description=[oops", "the value is not valid YAML"),
    ]:
        with pytest.raises(InputError) as info:
            load_recipe(path, overrides=[item])
        assert message in str(info.value)


def test_cli_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.tsv").write_text("x\n")
    (tmp_path / "dev.tsv").write_text("x\n")
    path = write(tmp_path, finetune(data={"dataset": "nyu-mll/glue", "dataset_config": "sst2"}))
    r = load_recipe(path, cli_overrides={"model": "org/ckpt@v2", "train_file": "train.tsv", "validation_file": "dev.tsv",
                                         "output_dir": "out", "max_steps": 7, "seed": 3, "shots": None})
    assert r.model.name_or_path == "org/ckpt@v2"
    assert (r.data.dataset, r.data.dataset_config, r.data.train_files, r.data.validation_files) == (
        None, None, ["train.tsv"], ["dev.tsv"])
    assert (r.train.output_dir, r.train.max_steps, r.train.seed) == ("out", 7, 3)
    with pytest.raises(InputError, match=r"^--train-file: no such file 'nope.tsv'$"):
        load_recipe(path, cli_overrides={"train_file": "nope.tsv"})
    with pytest.raises(InputError, match=r"--max-steps: train.max_steps: expected an integer, got 'many'"):
        load_recipe(path, cli_overrides={"max_steps": "many"})
    icl_path = write(tmp_path, icl(), "icl.yaml")
    assert load_recipe(icl_path, cli_overrides={"shots": 4}).icl.shots == [4]
    assert set(CLI_OVERRIDE_KEYS) >= {"model", "train_file", "validation_file", "output_dir", "max_steps", "seed"}


# ---------------------------------------------------------------------------- --smoke
def test_smoke_defaults_and_precedence(tmp_path):
    recipe = pretrain("span_corruption", "seq2seq",
                      objective={"name": "span_corruption", "max_seq_length": 512},
                      model={"family": "seq2seq", "size": "large", "config": {"num_layers": 24}},
                      data={"dataset": "allenai/c4", "dataset_config": "en", "streaming": True},
                      train={"optim": "adamw_bnb_8bit", "mixed_precision": "bf16", "per_device_train_batch_size": 256},
                      smoke={"train.logging_steps": 2, "train": {"save_steps": 15}})
    path = write(tmp_path, recipe)
    full = load_recipe(path)
    assert full.train.logging_steps == 50 and full.objective.max_seq_length == 512  # smoke section idle
    r = load_recipe(path, smoke=True, overrides=["train.seed=7"], cli_overrides={"max_steps": 12})
    assert (r.model.size, r.model.config, r.tokenizer.vocab_size) == ("tiny", {}, 2000)
    assert r.objective.max_seq_length == 64  # span corruption: raw length follows from this input length
    assert (r.data.dataset, r.data.streaming, r.data.max_train_samples, r.data.max_eval_samples) == (None, True, 256, 64)
    assert (r.train.per_device_train_batch_size, r.train.optim, r.train.mixed_precision) == (8, "adamw_bnb_8bit", "bf16")
    assert (r.train.logging_steps, r.train.save_steps, r.train.eval_steps) == (2, 15, 10)  # the recipe's own smoke
    assert (r.train.max_steps, r.train.seed) == (12, 7)  # explicit user choices beat smoke defaults
    assert r.train.output_dir == "runs/recipe-smoke"
    # The defaults themselves, computed from the full recipe.
    o = smoke_overrides(full)
    assert (o["train.max_steps"], o["objective.max_seq_length"], o["data.max_eval_samples"]) == (30, 64, 64)


def test_smoke_keeps_a_model_given_on_the_command_line(tmp_path):
    path = write(tmp_path, finetune(model={"name_or_path": "org/base"}, task={"name": "squad", "max_seq_length": 384}))
    tiny = load_recipe(path, smoke=True)
    assert (tiny.model.name_or_path, tiny.model.size) == (None, "tiny")
    assert (tiny.task.max_seq_length, tiny.task.doc_stride) == (128, 32)
    kept = load_recipe(path, smoke=True, cli_overrides={"model": "org/other"})
    assert kept.model.name_or_path == "org/other" and kept.tokenizer.name_or_path is None
    assert kept.train.max_steps == 30


def test_smoke_keeps_plain_optimizers_and_local_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("text\n")
    r = load_recipe(write(tmp_path, pretrain("clm", "decoder", train={"optim": "adafactor"},
                                             data={"train_files": ["t.txt"]})), smoke=True)
    assert r.train.optim == "adafactor" and r.data.train_files == ["t.txt"]
    assert r.data.validation_split_percentage == 10.0


def test_duplicate_keys_are_an_error_naming_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("kind: finetune\ntrain:\n  learning_rate: 1.0e-4\n  seed: 1\n  learning_rate: 2.0e-5\n")
    with pytest.raises(InputError) as error:
        load_recipe(path)
    assert str(error.value) == (f"{path}: line 5: key 'learning_rate' appears twice (lines 3 and 5); "
                                "YAML would keep only the last one")


@pytest.mark.parametrize("settings, key", [
    ({"mixed_precision": "fp16"}, "train.mixed_precision"),
    ({"optim": "adamw_torch_npu_fused"}, "train.optim"),
])
def test_settings_this_machine_cannot_run_stop_with_one_line_unless_substitutes_are_asked(tmp_path, settings, key):
    if torch.cuda.is_available():
        pytest.skip("the check is about machines without CUDA")
    path = write(tmp_path, finetune(train=settings))
    recipe = load_recipe(path)
    with pytest.raises(InputError) as error:
        check_machine(recipe, str(path))
    assert str(error.value).startswith(f"{path}: {key}: ") and "train.cpu_substitutes=true" in str(error.value)
    allowed = load_recipe(path, overrides=["train.cpu_substitutes=true"])
    substituted = check_machine(allowed, str(path))
    assert len(substituted) == 1 and substituted[0].startswith(key)
    assert (allowed.train.mixed_precision, allowed.train.optim) != (recipe.train.mixed_precision, recipe.train.optim)


def test_settings_that_run_on_cpu_pass_the_machine_check(tmp_path):
    recipe = load_recipe(write(tmp_path, finetune(train={"mixed_precision": "bf16", "optim": "adamw_torch_fused",
                                                         "torch_compile": True})))
    assert check_machine(recipe) == []
    assert (recipe.train.mixed_precision, recipe.train.optim, recipe.train.torch_compile) == (
        "bf16", "adamw_torch_fused", True)


def test_smoke_section_typos_fail_every_load(tmp_path):
    message = error_of(tmp_path, finetune(smoke={"train.max_stepz": 5}))
    assert "recipe.yaml: smoke: train.max_stepz: unknown key (did you mean 'train.max_steps'?)" in message
    assert "smoke: train.max_steps: expected an integer, got 'five'" in error_of(
        tmp_path, finetune(smoke={"train": {"max_steps": "five"}}))


# ---------------------------------------------------------------------------- fuzzing
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["1e-4", "encoder", "lora", "sst2", "no", "./x", "a/b/c"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.one_of(st.text(max_size=8), st.integers()),
                                                                          inner, max_size=3)), max_leaves=8)


def _schema_keys():
    """(section, key, type) for every key of the schema; (name, None, type) for top-level keys. The
    schema as the engine reads it: the registered objectives' sections in place of the registry."""
    from hfpipe.recipes.engine import hints

    keys = []
    for name, hint in hints(Recipe).items():
        keys.append((name, None, hint))
        for section in getattr(hint, "__args__", (hint,)):
            if dataclasses.is_dataclass(section):
                keys += [(name, key, sub) for key, sub in hints(section).items()]
    return keys


SCHEMA_KEYS = _schema_keys()


def _values_for(hint):
    """Random values, half of them of the key's own type (so that some mutated recipes stay valid)."""
    def free_form(h):  # hypothesis cannot draw "any value"; those keys get _VALUES only
        return h is Any or dataclasses.is_dataclass(h) or any(free_form(a) for a in get_args(h))

    if free_form(hint):
        return _VALUES
    return st.one_of(_VALUES, st.from_type(hint))


@st.composite
def _mutated_recipes(draw):
    base = draw(st.sampled_from([finetune(), pretrain("mlm"), pretrain("span_corruption", "seq2seq"),
                                 {**icl(), "icl": {"shots": [0, 2]}}]))
    recipe = yaml.safe_load(yaml.safe_dump(base))
    for _ in range(draw(st.integers(1, 4))):
        section, key, hint = draw(st.sampled_from(SCHEMA_KEYS + [("train", "bogus", Any), ("bogus", None, Any)]))
        value = draw(_values_for(hint))
        if key is None:
            recipe[section] = value
        elif isinstance(recipe.get(section), dict):
            recipe[section][key] = value
        else:
            recipe[section] = {key: value}
    return recipe


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_from_dict_only_succeeds_or_raises_input_error(data):
    recipe = data.draw(st.one_of(_mutated_recipes(), _VALUES))
    try:
        result = Recipe.from_dict(recipe, source="fuzz")
    except InputError as e:
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
        return
    # A success is a well-formed recipe that survives the YAML round trip.
    assert Recipe.from_dict(yaml.safe_load(yaml.safe_dump(result.to_dict()))) == result
    assert all(math.isfinite(v) for v in (result.train.learning_rate, result.train.num_train_epochs))


def test_smoke_span_corruption_lengths_stay_consistent():
    """objective.max_seq_length is T5's encoder input length: the raw and target lengths follow from it."""
    span_corruption = pytest.importorskip("hfpipe.data.span_corruption")
    full = load_recipe(RECIPES / "pretrain/t5-span-corruption.yaml")
    smoke = load_recipe(RECIPES / "pretrain/t5-span-corruption.yaml", smoke=True)
    lengths = [span_corruption.span_corruption_lengths(r.objective.max_seq_length, r.objective.noise_density,
                                                       r.objective.mean_noise_span_length) for r in (full, smoke)]
    assert lengths == [(568, 114), (70, 14)]


@pytest.mark.parametrize("overrides, key", [
    ({"objective": {"name": "clm", "noise_density": 0.3}}, "objective.noise_density"),
    ({"objective": {"name": "span_corruption", "whole_word_mask": True}}, "objective.whole_word_mask"),
    ({"objective": {"name": "mlm", "nsp_probability": 0.3}}, "objective.nsp_probability"),
])
def test_keys_without_effect_for_the_objective_are_refused(tmp_path, overrides, key):
    family = OBJECTIVE_FAMILY[overrides["objective"]["name"]]
    message = error_of(tmp_path, pretrain(overrides["objective"]["name"], family, objective=overrides["objective"]))
    assert f"{key}: has no effect with objective.name: {overrides['objective']['name']}" in message


def test_keys_without_effect_for_the_adapter_or_task_are_refused(tmp_path):
    assert "peft.r: has no effect with peft.method: prefix_tuning" in error_of(
        tmp_path, finetune(peft={"method": "prefix_tuning", "r": 16}))
    assert "task.doc_stride: has no effect with task.name: sst2" in error_of(
        tmp_path, finetune(task={"name": "sst2", "doc_stride": 64}))
