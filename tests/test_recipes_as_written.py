"""Every shipped recipe runs as written: `--smoke` changes sizes, steps and the data source only.

Each recipe gets local data shaped like its real dataset (C4 as several streamed JSONL shards with
`text`/`timestamp`/`url`, Wikipedia as parquet with `id`/`url`/`title`/`text`, OpenWebText as text
files, Dolly as JSONL with `instruction`/`context`/`response`/`category`, SST-2 as GLUE's TSV, SQuAD
as its JSON), and keeps its streaming, gradient accumulation, optimizer, precision, compilation and
activation checkpointing. The GLUE and SQuAD finetuning recipes run the same way in test_cli.py.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.data.sentences import split_sentences
from hfpipe.recipes import load_recipe

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def hfpipe(*args, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hfpipe", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def _documents(count: int, seed: int = 0) -> list[str]:
    """Real English documents of a few sentences each (the embedded corpus, reshuffled)."""
    sentences = [s for text in embedded_corpus(400_000) for s in split_sentences(text) if len(s) > 20]
    rng = random.Random(seed)
    # one line of single-spaced text per document: docstrings carry newlines and indentation
    return [" ".join(" ".join(rng.sample(sentences, rng.randint(3, 8))).split()) for _ in range(count)]


def c4_shards(folder: Path, shards: int = 3, per_shard: int = 200) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    documents, paths = _documents(shards * per_shard), []
    for shard in range(shards):
        path = folder / f"c4-train.{shard:05d}-of-{shards:05d}.json"  # C4's own shard names
        rows = documents[shard * per_shard:(shard + 1) * per_shard]
        path.write_text("".join(json.dumps({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                            "url": f"https://example.org/{shard}/{i}"}) + "\n"
                                for i, text in enumerate(rows)))
        paths.append(path.with_suffix(".jsonl"))
        path.rename(paths[-1])
    return paths


def wikipedia_parquet(path: Path, count: int = 400) -> Path:
    documents = _documents(count, seed=1)
    table = pa.table({"id": [str(i) for i in range(count)],
                      "url": [f"https://en.wikipedia.org/wiki?curid={i}" for i in range(count)],
                      "title": [f"Article {i}" for i in range(count)], "text": documents})
    pq.write_table(table, path)
    return path


def openwebtext_files(folder: Path, files: int = 2, per_file: int = 150) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    documents, paths = _documents(files * per_file, seed=2), []
    for i in range(files):
        paths.append(folder / f"urlsf_subset00-{i}_data.txt")
        paths[-1].write_text("\n\n".join(documents[i * per_file:(i + 1) * per_file]) + "\n")
    return paths


def dolly_jsonl(path: Path, count: int = 300) -> Path:
    rng = random.Random(3)
    rows = []
    for text in _documents(count, seed=3):
        words = text.split()
        closed = rng.random() < 0.5
        rows.append({"instruction": "What is the first word of the passage?" if closed
                     else f"Repeat the word {words[1]!r}.",
                     "context": text if closed else "", "response": words[0] if closed else words[1],
                     "category": "closed_qa" if closed else "open_qa"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sst2_tsv(path: Path, count: int = 300) -> Path:
    rng = random.Random(4)
    lines = ["sentence\tlabel"] + [f"{s.lower()} \t{rng.randint(0, 1)}" for s in _documents(count, seed=4)]
    path.write_text("\n".join(lines) + "\n")
    return path


def squad_json(path: Path, articles: int = 6, paragraphs: int = 3) -> Path:
    documents, data, qid = _documents(articles * paragraphs, seed=5), [], 0
    for a in range(articles):
        entries = []
        for text in documents[a * paragraphs:(a + 1) * paragraphs]:
            words = text.split()
            context = " ".join(words)  # single spaces: word i starts right after the first i words
            qas = []
            for start in (2, len(words) // 2):
                qas.append({"id": f"q{qid}", "question": f"Which words follow {words[start - 1]!r}?",
                            "answers": [{"text": " ".join(words[start:start + 2]),
                                         "answer_start": len(" ".join(words[:start])) + 1}]})
                qid += 1
            entries.append({"context": context, "qas": qas})
        data.append({"title": f"Article {a}", "paragraphs": entries})
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def _as_written(recipe: Path, smoke: bool = True):
    """The recipe's behaviour-changing settings, which --smoke must leave alone."""
    r = load_recipe(recipe, smoke=smoke)
    return (r.data.streaming, r.train.gradient_accumulation_steps, r.train.optim, r.train.mixed_precision,
            r.train.torch_compile, r.train.gradient_checkpointing, r.train.dataloader_num_workers)


def _run(verb, recipe, tmp_path, *args):
    assert _as_written(recipe) == _as_written(recipe, smoke=False)
    out = tmp_path / "out"
    result = hfpipe(verb, recipe, "--smoke", "--output-dir", out, *args)
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


# Steps are the one thing these tests shrink beyond --smoke: the recipes' accumulation (up to 256
# micro-batches per step) stays as written.
PRETRAINING = {
    "bert-mlm-nsp.yaml": ("wikipedia", 3),
    "roberta-mlm.yaml": ("wikipedia", 1),  # one step is 256 micro-batches
    "spanbert.yaml": ("wikipedia", 1),
    "electra.yaml": ("wikipedia", 3),
    "gpt-clm.yaml": ("openwebtext", 2),  # 2 x 32 micro-batches, compiled, in bf16
    "t5-span-corruption.yaml": ("c4", 6),
    "t5-prefix-lm.yaml": ("c4", 6),
    "t5-ul2.yaml": ("c4", 6),
}


@pytest.mark.parametrize("name", list(PRETRAINING))
def test_pretraining_recipe_runs_as_written_on_look_alike_data(tmp_path, name):
    source, steps = PRETRAINING[name]
    if source == "c4":
        files = c4_shards(tmp_path / "c4")
    elif source == "wikipedia":
        files = [wikipedia_parquet(tmp_path / "wikipedia.parquet")]
    else:
        files = openwebtext_files(tmp_path / "openwebtext")
    recipe = RECIPES / "pretrain" / name
    out, result = _run("pretrain", recipe, tmp_path, "--max-steps", steps, *[a for f in files for a in ("--train-file", f)])
    state = json.loads((out / "trainer_state.json").read_text()) if (out / "trainer_state.json").exists() else None
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] > 0
    if state is not None:
        assert state["global_step"] == steps
    written = load_recipe(out / "recipe.yaml")
    assert written.data.streaming == load_recipe(recipe).data.streaming
    assert written.train.gradient_accumulation_steps == load_recipe(recipe).train.gradient_accumulation_steps
    _assert_a_finished_model(out, result)


def _assert_a_finished_model(out: Path, result) -> None:
    """The artifacts a finished pretraining run promises, and a model that loads in plain transformers."""
    for name in ("config.json", "model.safetensors", "recipe.yaml", "train_results.json", "eval_results.json",
                 "README.md", "loss.png", "tokenizer.json"):
        assert (out / name).is_file(), name
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert evaluation["eval_loss"] > 0 and evaluation["perplexity"] > 1
    assert "Results" in result.stdout
    code = ("import sys, transformers; c = transformers.AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True);"
            "t = transformers.AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True);"
            "print(c.model_type, len(t))")
    loaded = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=out.parent,
                            stdin=subprocess.DEVNULL)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.startswith("hfpipe_")


@pytest.mark.parametrize("recipe", ["finetune/sft.yaml", "peft/sft-lora.yaml"])
def test_instruction_tuning_recipes_run_as_written_on_dolly_shaped_jsonl(tmp_path, recipe):
    pairs = dolly_jsonl(tmp_path / "dolly.jsonl")
    out, _ = _run("finetune", RECIPES / recipe, tmp_path, "--max-steps", 4, "--train-file", pairs)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_loss"] > 0
    assert len((out / "eval_generations.jsonl").read_text().splitlines()) > 0


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "qlora"])
def test_sst2_peft_recipes_run_as_written_on_glue_shaped_tsv(tmp_path, method):
    train, dev = sst2_tsv(tmp_path / "train.tsv"), sst2_tsv(tmp_path / "dev.tsv", 64)
    out, _ = _run("finetune", RECIPES / "peft" / f"glue-sst2-{method}.yaml", tmp_path, "--max-steps", 4,
                  "--train-file", train, "--validation-file", dev)
    assert 0 <= json.loads((out / "eval_results.json").read_text())["accuracy"] <= 1
    assert (out / "adapter_config.json").is_file()


def test_squad_lora_recipe_runs_as_written_on_squad_shaped_json(tmp_path):
    train, dev = squad_json(tmp_path / "train.json"), squad_json(tmp_path / "dev.json", articles=2)
    out, _ = _run("finetune", RECIPES / "peft" / "squad-v1-lora.yaml", tmp_path, "--max-steps", 4,
                  "--train-file", train, "--validation-file", dev)
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert len(predictions) == 12 and all(isinstance(v, str) for v in predictions.values())


def test_generative_squad_recipe_runs_as_written_and_is_scored_officially(tmp_path):
    """T5's text-to-text SQuAD: Adafactor, accumulation 4, bf16 autocast as written; the answers
    file holds one generated answer per question and its official score matches eval_results."""
    from hfpipe.metrics.squad.compute_score import compute_score

    train, dev = squad_json(tmp_path / "train.json"), squad_json(tmp_path / "dev.json", articles=2)
    out, _ = _run("finetune", RECIPES / "finetune" / "squad-v1-t5.yaml", tmp_path, "--max-steps", 3,
                  "--train-file", train, "--validation-file", dev)
    predictions = json.loads((out / "eval_predictions.json").read_text())
    metrics = json.loads((out / "eval_results.json").read_text())
    assert len(predictions) == 12 and all(isinstance(v, str) for v in predictions.values())
    gold = {qa["id"]: [a["text"] for a in qa["answers"]] for article in json.loads(dev.read_text())["data"]
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    official = compute_score(gold, predictions)
    assert metrics["exact_match"] == pytest.approx(official["exact_match"])
    assert metrics["f1"] == pytest.approx(official["f1"])


def test_icl_recipe_runs_as_written_on_glue_shaped_tsv(tmp_path):
    """icl scores label words with a given decoder: a tiny one with a tokenizer trained on the texts."""
    import transformers

    import hfpipe
    from hfpipe.tokenization import train_tokenizer_from_files

    train, dev = sst2_tsv(tmp_path / "train.tsv"), sst2_tsv(tmp_path / "dev.tsv", 40)
    model_dir = tmp_path / "decoder"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(line.split("\t")[0] for line in train.read_text().splitlines()[1:]))
    tokenizer = train_tokenizer_from_files([texts], "decoder", 1000, model_dir)
    config = hfpipe.config_for("decoder", "tiny", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    out, _ = _run("icl", RECIPES / "icl" / "glue-sst2.yaml", tmp_path, "--model", model_dir,
                  "--train-file", train, "--validation-file", dev)
    metrics = json.loads((out / "eval_results.json").read_text())
    accuracies = [v for k, v in metrics.items() if k.startswith("accuracy")]
    assert accuracies and all(0 <= v <= 1 for v in accuracies)


def conll2003_text(path: Path, count: int, seed: int = 0, long_sentence: bool = False) -> Path:
    """CoNLL-2003's text layout ("word POS chunk NER", -DOCSTART- every 10 sentences, blank lines
    between sentences) over hfpipe's synthetic tagged sentences; ``long_sentence`` appends one of
    more than 128 words, which the tagger must split into windows and still predict whole."""
    from hfpipe.tasks.embedded import TAGGING_NER_LABELS, TAGGING_POS_LABELS, embedded_tagging

    rows = embedded_tagging(num_train=count, num_eval=1, seed=seed)["train"]
    sentences = [[(w, TAGGING_POS_LABELS[p], TAGGING_NER_LABELS[n]) for w, p, n in
                  zip(row["tokens"], row["pos_tags"], row["ner_tags"])] for row in rows]
    if long_sentence:
        sentences.append([word for s in sentences[:24] for word in s])
    blocks = []
    for i, sentence in enumerate(sentences):
        if i % 10 == 0:
            blocks.append("-DOCSTART- -X- -X- O")
        blocks.append("\n".join(f"{w} {pos} {'I-NP' if pos.startswith('NN') else 'O'} {ner}"
                                for w, pos, ner in sentence))
    path.write_text("\n\n".join(blocks) + "\n")
    return path


def test_conll2003_ner_recipe_finetunes_and_evaluates_on_conll_text(tmp_path):
    recipe = RECIPES / "finetune" / "conll2003-ner.yaml"
    train, dev = conll2003_text(tmp_path / "eng.train", 200), conll2003_text(tmp_path / "eng.testa", 40, 1, True)
    out, _ = _run("finetune", recipe, tmp_path, "--max-steps", 4, "--train-file", train, "--validation-file", dev)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0 <= metrics["overall_f1"] <= 1 and 0 <= metrics["overall_accuracy"] <= 1 and metrics["PER_number"] > 0
    lines = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 41 and [row["index"] for row in lines] == list(range(41))
    assert all(len(row["predictions"]) == len(row["tokens"]) == len(row["tags"]) for row in lines)
    assert len(lines[-1]["tokens"]) > 128  # the long sentence came back whole from its windows
    # evaluate the finetuned model on the same file: the same predictions, so the same scores
    result = hfpipe("evaluate", recipe, "--model", out, "--validation-file", dev, "--smoke")
    assert result.returncode == 0, result.stderr[-4000:]
    evaluated = json.loads((out / "eval-ner" / "eval_results.json").read_text())
    assert evaluated["overall_f1"] == pytest.approx(metrics["overall_f1"])
    assert (out / "eval-ner" / "eval_predictions.jsonl").read_text() == (out / "eval_predictions.jsonl").read_text()


def test_conll2003_pos_recipe_reads_the_pos_column_of_conll_text(tmp_path):
    from hfpipe.tasks.embedded import TAGGING_POS_LABELS

    train, dev = conll2003_text(tmp_path / "eng.train", 200), conll2003_text(tmp_path / "eng.testa", 30, 1)
    out, _ = _run("finetune", RECIPES / "finetune" / "conll2003-pos.yaml", tmp_path, "--max-steps", 4,
                  "--train-file", train, "--validation-file", dev)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert 0 <= metrics["overall_accuracy"] <= 1 and "overall_f1" not in metrics
    lines = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 30 and lines[0]["tags"][-1] == "."
    assert {tag for row in lines for tag in row["predictions"]} <= set(TAGGING_POS_LABELS)
