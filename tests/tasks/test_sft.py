"""Instruction tuning: chat-template rendering, response-only labels, the JSONL reader, and
``hfpipe finetune`` on an sft recipe (full and LoRA)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

import hfpipe
from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.errors import InputError
from hfpipe.tasks import sft
from hfpipe.tokenization import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
PAIRS = [
    ("Name a colour.", "Blue."),
    ("Repeat this sentence: the cat sat on the mat.", "the cat sat on the mat."),
    ("How many words does this sentence have? Return a new list.", "4"),
    ("Translate 'bonjour' to English, please!", "Hello — it means hello (a greeting)."),
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(embedded_corpus()[:300], family="decoder", vocab_size=500).save_pretrained(folder)
    return folder


@pytest.fixture
def tokenizer(tokenizer_dir):
    """A fresh copy per test: the tests set chat templates and add tokens."""
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _response_text(tokenizer, features) -> str:
    labelled = [t for t in features["labels"] if t != sft.IGNORE_INDEX]
    return tokenizer.decode(labelled)


@pytest.mark.parametrize("template", [None, CHATML], ids=["default", "chatml"])
def test_labels_cover_exactly_the_response(tokenizer, template):
    tokenizer = sft.ensure_chat_template(tokenizer, template)
    if template is CHATML:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    for instruction, response in PAIRS:
        features = sft.sft_features(tokenizer, instruction, response)
        prompt, full = sft.render(tokenizer, instruction), sft.render(tokenizer, instruction, response)
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels, ids = features["labels"], features["input_ids"]
        # the prompt tokens are exactly the inference prompt's, and none of them has a label
        assert ids[:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert labels[:n_prompt] == [sft.IGNORE_INDEX] * n_prompt
        # every token after the prompt is labelled with itself: the response and the end of the turn
        assert labels[n_prompt:] == ids[n_prompt:]
        assert _response_text(tokenizer, features) == full[len(prompt):]
    if template is None:
        assert full[len(prompt):] == response + tokenizer.eos_token  # the model learns to stop
    else:
        assert full[len(prompt):] == response + "<|im_end|>\n"


def test_model_loss_is_the_cross_entropy_of_the_response_tokens_only(tokenizer):
    tokenizer = sft.ensure_chat_template(tokenizer)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer))).eval()
    rows = [sft.sft_features(tokenizer, i, r) for i, r in PAIRS]
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=sft.IGNORE_INDEX)(rows)
    assert (batch["labels"][batch["attention_mask"] == 0] == sft.IGNORE_INDEX).all()  # padding has no loss
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != sft.IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert keep.sum() == sum(len([t for t in row["labels"] if t != sft.IGNORE_INDEX]) for row in rows)
    torch.testing.assert_close(out.loss, expected)


def test_too_long_pairs_are_left_out_and_counted(tokenizer, caplog):
    import datasets

    tokenizer = sft.ensure_chat_template(tokenizer)
    long = ("Repeat: " + "word " * 200, "word " * 200)
    data = datasets.Dataset.from_dict({"instruction": [PAIRS[0][0], long[0]], "response": [PAIRS[0][1], long[1]]})
    assert sft.sft_features(tokenizer, *long, max_length=64) is None
    features = sft.tokenize_sft(data, tokenizer, 64, "train")
    assert len(features) == 1
    assert "left out 1 of 2 pairs longer than task.max_seq_length (64 tokens)" in caplog.text
    with pytest.raises(InputError, match="every \\(instruction, response\\) pair is longer"):
        sft.tokenize_sft(data.select([1]), tokenizer, 64, "train")


def test_template_whose_prompt_is_not_a_prefix_is_refused(tokenizer):
    odd = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    with pytest.raises(InputError, match="not a prefix"):
        sft.sft_features(sft.ensure_chat_template(tokenizer, odd), "a", "b")


def test_jsonl_reader(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"instruction": "a?", "response": "b", "id": 1}\n\n{"instruction": "c?", "response": "d"}\n')
    data = sft.load_sft_jsonl(path)
    assert data.column_names == ["instruction", "response"] and data["response"] == ["b", "d"]
    path.write_text('{"q": "a?", "a": "b"}\n')
    assert sft.load_sft_jsonl(path, instruction_column="q", response_column="a")["instruction"] == ["a?"]
    for content, message in [
        ('{"instruction": "a", "response": "b"}\n{"instruction": "c"\n', "pairs.jsonl:2: not valid JSON"),
        ('["a", "b"]\n', "pairs.jsonl:1: expected a JSON object"),
        ('{"instruction": "a"}\n', "pairs.jsonl:1: 'response' must be a non-empty string (missing)"),
        ('{"instruction": "a", "response": 3}\n', "pairs.jsonl:1: 'response' must be a non-empty string (got 3)"),
        ('{"instruction": " ", "response": "b"}\n', "pairs.jsonl:1: 'instruction' must be a non-empty string"),
        ("\n\n", "pairs.jsonl: no (instruction, response) pairs"),
    ]:
        path.write_text(content)
        with pytest.raises(InputError) as error:
            sft.load_sft_jsonl(path)
        assert message in str(error.value), (content, str(error.value))


def test_embedded_pairs_are_deterministic_and_answerable():
    from hfpipe.tasks.embedded import embedded_sft

    a, b = embedded_sft(16, 8, seed=3), embedded_sft(16, 8, seed=3)
    assert a["train"].to_dict() == b["train"].to_dict() and len(a["validation"]) == 8
    for row in a["train"]:
        if row["instruction"].startswith("Repeat this sentence: "):
            assert row["instruction"].removeprefix("Repeat this sentence: ") == row["response"]
        if row["instruction"].startswith("How many words"):
            assert int(row["response"]) == len(row["instruction"].split("? ", 1)[1].split())


# --- the CLI --------------------------------------------------------------------------------------
def _hfpipe(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900, cwd=ROOT)


def _write_pairs(path: Path, split: str, n: int) -> Path:
    from hfpipe.tasks.embedded import embedded_sft

    rows = embedded_sft(n, n, seed=1)[split]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_sft_input_exits_2_before_training(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n')
    result = _hfpipe("finetune", ROOT / "recipes/finetune/sft.yaml", "--smoke", "--train-file", bad,
                     "--output-dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"hfpipe: error: {bad}:2: 'instruction' must be a non-empty string (missing)")
    result = _hfpipe("finetune", ROOT / "recipes/finetune/sft.yaml", "--smoke", "--set", "model.family=encoder",
                     "--output-dir", tmp_path / "out2")
    assert result.returncode == 2 and "sft (instruction tuning) trains a decoder, got encoder" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["finetune/sft.yaml", "peft/sft-lora.yaml"])
def test_sft_recipe_trains_on_jsonl_and_learns(tmp_path, recipe):
    train = _write_pairs(tmp_path / "train.jsonl", "train", 256)
    dev = _write_pairs(tmp_path / "dev.jsonl", "validation", 32)
    out = tmp_path / "out"
    base = []
    if "lora" in recipe:  # a saved base checkpoint, so that the adapter can be merged into it afterwards
        base_dir = tmp_path / "base"
        tokenizer = train_tokenizer(embedded_corpus()[:300], family="decoder", vocab_size=500)
        tokenizer.save_pretrained(base_dir)
        torch.manual_seed(0)
        config = hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
        AutoModelForCausalLM.from_config(config).save_pretrained(base_dir)
        base = ["--model", base_dir]
    result = _hfpipe("finetune", ROOT / "recipes" / recipe, "--smoke", "--train-file", train,
                     "--validation-file", dev, "--output-dir", out, "--max-steps", "40", *base,
                     "--set", "train.learning_rate=3.0e-3", "--set", "train.eval_steps=20",
                     # float32: the recipes' bf16 autocast runs in test_recipes_as_written.py, ~10x slower on CPU
                     "--set", "train.mixed_precision=no")
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((out / "loss_history.json").read_text())
    evals = [loss for _, loss in history["eval"]]
    assert len(evals) >= 2 and evals[-1] < evals[0]  # the response loss falls
    results = json.loads((out / "eval_results.json").read_text())
    assert results["perplexity"] == pytest.approx(2.718281828459045 ** results["eval_loss"], rel=1e-6)
    generations = [json.loads(line) for line in (out / "eval_generations.jsonl").read_text().splitlines()]
    assert len(generations) == 8 and {"instruction", "reference", "generated"} <= set(generations[0])
    if "lora" in recipe:
        from peft import PeftConfig

        assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
        assert PeftConfig.from_pretrained(out).task_type == "CAUSAL_LM"
        merged = _hfpipe("merge", out, tmp_path / "merged")
        assert merged.returncode == 0, merged.stderr[-2000:]
        out = tmp_path / "merged"
    # the finetuned model answers through its chat template, in plain transformers code too
    answer = _hfpipe("generate", out, "--chat", "--prompt", "Repeat this sentence: a b c.", "--max-new-tokens", "5")
    assert answer.returncode == 0 and answer.stdout.startswith("Repeat this sentence: a b c.\n"), answer.stderr[-2000:]
    assert AutoTokenizer.from_pretrained(out).chat_template == sft.DEFAULT_CHAT_TEMPLATE


def test_dolly_context_joins_the_instruction_and_is_never_dropped(tmp_path):
    from hfpipe.tasks.sft import load_sft_jsonl

    path = tmp_path / "dolly.jsonl"
    path.write_text(json.dumps({"instruction": "Who wrote it?", "context": " The book was written by Ada. ",
                                "response": "Ada", "category": "closed_qa"}) + "\n"
                    + json.dumps({"instruction": "Name a colour.", "context": "", "response": "Red"}) + "\n")
    rows = load_sft_jsonl(path)
    assert rows["instruction"] == ["Who wrote it?\n\nThe book was written by Ada.", "Name a colour."]
    assert rows["response"] == ["Ada", "Red"]
    assert load_sft_jsonl(path, context_column=None)["instruction"][0] == "Who wrote it?"
