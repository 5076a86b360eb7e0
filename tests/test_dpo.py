"""Preference finetuning: DPO through trl (task dpo) and the pair builder (hfpipe prefs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402

import hfpipe  # noqa: E402
from hfpipe.errors import InputError  # noqa: E402
from hfpipe.prefs import build_pairs, read_prompts, reward_label_index  # noqa: E402
from hfpipe.recipes import Recipe, load_recipe  # noqa: E402
from hfpipe.tasks.dpo import build_dpo_trainer, load_preference_jsonl  # noqa: E402
from hfpipe.tokenization import train_tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the film was good bad great awful fine dull a plot story actor scene ending".split()


def pairs(count=16, seed=0):
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        prompt = " ".join(rng.choices(WORDS, k=5))
        chosen = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        rejected = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        rows.append({"prompt": prompt, "chosen": chosen + " great", "rejected": rejected + " awful"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([" ".join(WORDS)] * 50, family="decoder", vocab_size=300)


def tiny_decoder(tokenizer, seed=0):
    config = hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer), hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return hfpipe.HfpipeDecoderForCausalLM(config)


def dpo_recipe(tmp_path, loss="sigmoid", beta=0.1, peft="none"):
    return Recipe.from_dict({
        "kind": "finetune", "model": {"family": "decoder", "size": "tiny"},
        "task": {"name": "dpo", "beta": beta, "dpo_loss": loss, "max_seq_length": 64},
        "peft": {"method": peft, **({"modules_to_save": []} if peft == "lora" else {})},
        "train": {"output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4, "max_steps": 2,
                  "learning_rate": 1e-3, "report_to": [], "seed": 0},
    }, "test")


def sequence_logps(model, inputs):
    """Sum of each row's completion-token log-probabilities, from the model's own logits."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1].float()
    tokens = inputs["input_ids"][:, 1:]
    mask = inputs["completion_mask"][:, 1:].float()
    per_token = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(1), mask.sum(1)


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_the_dpo_loss_is_the_formula_on_the_policy_and_reference_log_probabilities(tmp_path, tokenizer, loss):
    beta = 0.2
    recipe = dpo_recipe(tmp_path, loss, beta)
    model = tiny_decoder(tokenizer)
    rows = pairs(8)
    trainer = build_dpo_trainer(recipe, model, tokenizer, Dataset.from_list(rows), None)
    with torch.no_grad():  # the policy moves away from its reference (the copy taken at the start)
        for parameter in trainer.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    inputs = next(iter(trainer.get_train_dataloader()))
    # the collator's completion mask covers exactly each completion (and the end-of-sequence token)
    halves = len(inputs["input_ids"]) // 2
    for i in range(len(inputs["input_ids"])):
        completion = inputs["input_ids"][i][inputs["completion_mask"][i].bool()]
        text = tokenizer.decode(completion, skip_special_tokens=True).strip()
        row = rows[[r["prompt"] for r in rows].index(tokenizer.decode(
            inputs["input_ids"][i][(inputs["completion_mask"][i] == 0) & (inputs["attention_mask"][i] == 1)],
            skip_special_tokens=True).strip())]
        assert text == (row["chosen"] if i < halves else row["rejected"])
    trainer.model.eval()
    with torch.no_grad():
        loss_value = trainer.compute_loss(trainer.model, inputs)
        policy, lengths = sequence_logps(trainer.model, inputs)
        reference, _ = sequence_logps(trainer.ref_model, inputs)
    chosen, rejected = (policy - reference).chunk(2)
    if loss == "sigmoid":
        expected = -F.logsigmoid(beta * (chosen - rejected)).mean()
    else:
        chosen_length, rejected_length = lengths.chunk(2)
        expected = ((chosen / chosen_length - rejected / rejected_length - 1 / (2 * beta)) ** 2).mean()
    assert (chosen - rejected).abs().max() > 1e-3  # the check is not vacuous: the two differ
    torch.testing.assert_close(loss_value, expected, rtol=1e-4, atol=1e-5)


def test_lora_dpo_trains_the_adapter_against_the_base_and_leaves_the_base_untouched(tmp_path, tokenizer):
    recipe = dpo_recipe(tmp_path, peft="lora")
    model = tiny_decoder(tokenizer)
    base = {name: weight.clone() for name, weight in model.state_dict().items()}
    trainer = build_dpo_trainer(recipe, model, tokenizer, Dataset.from_list(pairs(16)), None)
    assert trainer.ref_model is None  # the reference is the base with the adapter off: no second copy
    trainer.train()
    trained = trainer.model.get_base_model().state_dict()
    lora = {name: weight for name, weight in trained.items() if "lora_" in name}
    assert lora and any(weight.abs().sum() > 0 for name, weight in lora.items() if "lora_B" in name)
    for name, weight in trained.items():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            torch.testing.assert_close(weight, base[original], rtol=0, atol=0, msg=name)


def test_bad_pairs_are_one_line_naming_the_row(tmp_path):
    good = pairs(3)
    cases = {
        "missing": ([good[0], {"prompt": "p", "chosen": "a"}], r"bad.jsonl:2: 'rejected' must be a non-empty string \(missing\)"),
        "empty": ([{"prompt": "p", "chosen": " ", "rejected": "b"}], r"bad.jsonl:1: 'chosen' must be a non-empty string"),
        "same": ([good[0], good[1], {"prompt": "p", "chosen": "same", "rejected": "same "}],
                 r"bad.jsonl:3: 'chosen' and 'rejected' are the same text"),
        "json": (None, r"bad.jsonl:1: not valid JSON"),
    }
    for name, (rows, message) in cases.items():
        path = tmp_path / "bad.jsonl"
        if rows is None:
            path.write_text("{oops\n")
        else:
            write_jsonl(path, rows)
        with pytest.raises(InputError, match=message):
            load_preference_jsonl(path)
    renamed = write_jsonl(tmp_path / "orca.jsonl", [{"question": r["prompt"], "chosen": r["chosen"],
                                                     "rejected": r["rejected"]} for r in good])
    assert load_preference_jsonl(renamed, prompt_column="question")["prompt"] == [r["prompt"] for r in good]


class ParityReward(PreTrainedModel):
    """A classifier with hand-set outputs: logit 1 minus logit 0 is the number of even token ids in the
    text minus the number of odd ones (a real PreTrainedModel, two labels)."""

    config_class = PretrainedConfig

    def __init__(self, config):
        super().__init__(config)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        sign = 1 - 2 * (input_ids % 2)  # +1 even, -1 odd
        score = (sign * mask).sum(1).float()
        return SequenceClassifierOutput(logits=torch.stack([torch.zeros_like(score), score], 1) + self.anchor)


def test_the_pair_builder_keeps_the_best_and_worst_sample_by_reward_and_is_seeded(tokenizer):
    from hfpipe.prefs import score

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = PretrainedConfig(num_labels=2, id2label={0: "negative", 1: "positive"},
                              label2id={"negative": 0, "positive": 1})
    reward = ParityReward(config).eval()
    policy = tiny_decoder(tokenizer).eval()
    prompts = [" ".join(WORDS[i:i + 4]) for i in range(6)]
    kwargs = dict(do_sample=True, max_new_tokens=12, temperature=1.5)
    built, unpaired = build_pairs(policy, tokenizer, reward, tokenizer, prompts, samples=4, label=1, seed=3,
                                  batch_size=4, **kwargs)
    assert len(built) + len(unpaired) == len(prompts) and built
    for pair in built:
        rescored = score(reward, tokenizer, [pair["prompt"] + pair["chosen"], pair["prompt"] + pair["rejected"]], 1)
        assert rescored == pytest.approx([pair["chosen_reward"], pair["rejected_reward"]])
        assert pair["chosen_reward"] == max(pair["rewards"]) > min(pair["rewards"]) == pair["rejected_reward"]
    again, _ = build_pairs(policy, tokenizer, reward, tokenizer, prompts, samples=4, label=1, seed=3, batch_size=4,
                           **kwargs)
    assert again == built
    other, _ = build_pairs(policy, tokenizer, reward, tokenizer, prompts, samples=4, label=1, seed=4, batch_size=4,
                           **kwargs)
    assert other != built
    assert reward_label_index(config, "positive") == 1 and reward_label_index(config, None) == 1
    with pytest.raises(InputError, match=r"--reward-label joy: the reward model's labels are negative, positive"):
        reward_label_index(config, "joy")
    with pytest.raises(InputError, match=r"--samples 1: a pair needs at least 2"):
        build_pairs(policy, tokenizer, reward, tokenizer, prompts, samples=1, label=1, **kwargs)


def test_prompts_are_read_from_text_or_json_lines(tmp_path):
    (tmp_path / "p.txt").write_text("first prompt\n\nsecond prompt\n")
    assert read_prompts(tmp_path / "p.txt") == ["first prompt", "second prompt"]
    write_jsonl(tmp_path / "p.jsonl", [{"text": "a review starts"}, {"text": ""}])
    with pytest.raises(InputError, match=r"p.jsonl:2: 'text' must be a non-empty string"):
        read_prompts(tmp_path / "p.jsonl", "text")


def hfpipe_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=900)


@pytest.mark.parametrize("name", ["dpo-lora.yaml", "dpo-full.yaml"])
def test_the_dpo_recipes_run_as_written_on_orca_shaped_pairs(tmp_path, name):
    rows = [{"system": "", "question": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
            for r in pairs(48)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    recipe = ROOT / "recipes" / "post" / name
    written = load_recipe(recipe)
    assert written.task.name == "dpo" and written.task.beta == 0.1
    out = tmp_path / "out"
    result = hfpipe_cli("finetune", recipe, "--smoke", "--output-dir", out, "--max-steps", 2, "--train-file", train)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0 <= metrics["rewards/accuracies"] <= 1 and "rewards/margins" in metrics and metrics["eval_loss"] > 0
    for artifact in ("loss.png", "README.md", "recipe.yaml", "train_results.json"):
        assert (out / artifact).is_file(), artifact
    assert (out / "adapter_config.json").is_file() == (name == "dpo-lora.yaml")
    assert "rewards/accuracies" in result.stdout  # the results table


def test_a_bad_pair_stops_the_command_with_one_line_and_exit_2(tmp_path):
    rows = pairs(4)
    rows[2]["rejected"] = rows[2]["chosen"]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    result = hfpipe_cli("finetune", ROOT / "recipes" / "post" / "dpo-lora.yaml", "--smoke", "--output-dir",
                        tmp_path / "out", "--train-file", train, "--set", "task.prompt_column=prompt")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(
        "train.jsonl:3: 'chosen' and 'rejected' are the same text; a pair needs two different completions")


def test_prefs_writes_pairs_from_saved_checkpoints_and_refuses_to_overwrite(tmp_path, tokenizer):
    from transformers import AutoModelForSequenceClassification

    policy = tiny_decoder(tokenizer)
    policy.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    encoder = train_tokenizer([" ".join(WORDS)] * 50, family="encoder", vocab_size=200)
    config = hfpipe.config_for("encoder", "tiny", vocab_size=len(encoder), num_labels=2,
                               id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "reward")
    encoder.save_pretrained(tmp_path / "reward")
    (tmp_path / "prompts.txt").write_text("".join(" ".join(WORDS[i:i + 3]) + "\n" for i in range(5)))
    args = ("prefs", "--policy", tmp_path / "policy", "--reward", tmp_path / "reward", "--prompts",
            tmp_path / "prompts.txt", "--output", tmp_path / "pairs.jsonl", "--samples", 3, "--max-new-tokens", 6,
            "--reward-label", "positive", "--device", "cpu")
    result = hfpipe_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    written = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert written and all(set(COLUMNS) <= set(row) and len(row["rewards"]) == 3 for row in written)
    assert "Preference pairs" in result.stdout
    assert load_preference_jsonl(tmp_path / "pairs.jsonl")["prompt"] == [row["prompt"] for row in written]
    again = hfpipe_cli(*args)
    assert again.returncode == 2 and "pairs.jsonl exists" in again.stderr.strip().splitlines()[-1]


COLUMNS = ("prompt", "chosen", "rejected", "chosen_reward", "rejected_reward")


def test_pairs_and_prompts_with_unicode_line_separators_inside_their_strings_read_back(tmp_path):
    """JSON lines end at "\\n" only: generated text may hold U+0085 (NEL) or U+2028, which json.dumps
    with ensure_ascii=False (the prefs writer's) leaves as they are, and str.splitlines would cut at."""
    rows = [{"prompt": "Great\u0085film", "chosen": " loved it\u2028truly", "rejected": " meh\x1c"},
            {"prompt": "Second", "chosen": " yes", "rejected": " no"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert load_preference_jsonl(path).to_list() == rows
    assert read_prompts(path) == ["Great\u0085film", "Second"]
    text = tmp_path / "prompts.txt"
    text.write_text("one\u2028line\nanother\n", encoding="utf-8")
    assert read_prompts(text) == ["one\u2028line", "another"]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "text" / "imdb").is_dir(), reason="../shared/data is not here")
def test_the_sentiment_experiments_larger_pair_sets_keep_the_first_prompts_and_the_held_out_ones(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # dpo_sentiment imports its sibling cram
    import dpo_sentiment

    first, more = dpo_sentiment.splits(), dpo_sentiment.splits(3000)
    assert len(first["pairs"]) == dpo_sentiment.PAIR_PROMPTS and len(more["pairs"]) == 3000
    assert more["pairs"][:dpo_sentiment.PAIR_PROMPTS] == first["pairs"]
    for name in ("reward_train", "reward_dev", "eval"):
        assert more[name] == first[name]
    drawn = {id(review) for review in more["pairs"]}
    assert not drawn & {id(review) for name in ("reward_train", "reward_dev", "eval") for review in more[name]}
    assert dpo_sentiment.tag(dpo_sentiment.PAIR_PROMPTS) == "" and dpo_sentiment.tag(3000) == "-p3000"
