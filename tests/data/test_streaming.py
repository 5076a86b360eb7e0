"""Streamed corpora: C4-like JSONL shards through every objective, bounded tokenizer samples,
weighted mixtures, and exact resumes of streamed runs (one and two processes)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from hfpipe.data.corpus import load_text_dataset
from hfpipe.data.embedded_corpus import write_c4_like_shards
from hfpipe.data.sampling import interleave_sources, sample_texts
from hfpipe.recipes import Recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return [str(p) for p in write_c4_like_shards(tmp_path_factory.mktemp("c4"), num_shards=4, total_bytes=400_000)]


def _recipe(objective: str, family: str, **objective_keys) -> Recipe:
    return Recipe.from_dict({"kind": "pretrain", "model": {"family": family},
                             "objective": {"name": objective, "max_seq_length": 64, **objective_keys},
                             "train": {"max_steps": 10, "seed": 3}})


@pytest.fixture(scope="module")
def tokenizers(shards):
    from hfpipe.tokenization import train_tokenizer

    texts = list(sample_texts(load_text_dataset(files=shards, streaming=True)["train"], max_texts=400))
    return {family: train_tokenizer(texts, family, 600) for family in ("encoder", "decoder", "seq2seq")}


def _ids(dataset, column="input_ids"):
    return [list(map(int, row[column])) for row in dataset]


@pytest.mark.parametrize("objective, family", [("clm", "decoder"), ("span_corruption", "seq2seq"),
                                               ("prefix_lm", "seq2seq"), ("mlm", "encoder")])
def test_streamed_objectives_cut_the_same_blocks_as_the_map_style_path(shards, tokenizers, objective, family, tmp_path):
    recipe = _recipe(objective, family)
    tokenizer = tokenizers[family]
    mapped = load_text_dataset(files=shards, validation_split_percentage=0, cache_dir=str(tmp_path))
    streamed = load_text_dataset(files=shards, streaming=True)
    assert isinstance(streamed["train"], datasets.IterableDataset) and streamed["train"].n_shards == 4
    examples_map = recipe.objective.examples(recipe, dict(mapped), tokenizer)
    examples_stream = recipe.objective.examples(recipe, dict(streamed), tokenizer)
    blocks_map, blocks_stream = _ids(examples_map.train), _ids(examples_stream.train)
    assert len(blocks_map) > 20
    assert blocks_stream == blocks_map  # same blocks, same order
    counter = examples_stream.counters["packing"]  # counted while the stream was read
    num_documents = len(mapped["train"])
    assert counter.num_documents == num_documents
    assert counter.num_blocks == len(blocks_map)
    tokens = sum(len(ids) for ids in tokenizer(list(mapped["train"]["text"]), add_special_tokens=False)["input_ids"])
    eos = 0 if objective == "span_corruption" else num_documents
    assert counter.num_tokens == tokens + eos
    block = len(blocks_map[0]) - (2 if objective == "mlm" else 0)
    assert counter.num_dropped_tokens == counter.num_tokens - block * counter.num_blocks


@pytest.mark.parametrize("objective", ["mlm_nsp", "sop"])
def test_streamed_bert_pairs_equal_the_pairs_of_the_same_documents_in_order(shards, tokenizers, objective, tmp_path):
    from hfpipe.data.tokenized import sentences_dataset
    from hfpipe.data.nsp import BertPretrainingPairs
    recipe = _recipe(objective, "encoder")
    tokenizer = tokenizers["encoder"]
    streamed = recipe.objective.examples(recipe, dict(load_text_dataset(files=shards, streaming=True)), tokenizer)
    documents = sentences_dataset(load_text_dataset(files=shards, validation_split_percentage=0,
                                                    cache_dir=str(tmp_path))["train"], tokenizer)
    builder = BertPretrainingPairs(tokenizer, max_seq_length=64, sentence_order=objective == "sop", seed=3)
    pairs = documents.map(builder, batched=True, with_indices=True, remove_columns=documents.column_names)
    got = list(streamed.train)
    assert len(got) == len(pairs) > 50
    assert [list(map(int, r["input_ids"])) for r in got] == _ids(pairs)
    assert [r["next_sentence_label"] for r in got] == list(pairs["next_sentence_label"])


def test_tokenizer_sample_reads_only_the_bound():
    read = []

    def rows():
        for i in range(100_000):
            read.append(i)
            yield {"text": f"document {i}"}

    stream = datasets.IterableDataset.from_generator(rows)
    texts = list(sample_texts(stream, max_texts=250, batch_size=64))
    assert texts == [f"document {i}" for i in range(250)]
    assert len(read) <= 251  # never the whole stream (datasets may pull one row past the bound)
    mapped = datasets.Dataset.from_dict({"text": [f"d{i}" for i in range(1000)]})
    assert list(sample_texts(mapped, max_texts=300, batch_size=7)) == [f"d{i}" for i in range(300)]


def test_load_corpus_streamed_takes_holds_out_and_bounds(shards, tmp_path):
    from hfpipe.data.sources import load_corpus

    recipe = Recipe.from_dict({"kind": "pretrain", "model": {"family": "decoder"}, "objective": {"name": "clm"},
                               "data": {"train_files": shards, "streaming": True, "validation_samples": 7,
                                        "max_train_samples": 40}, "train": {"max_steps": 5}})
    corpus = load_corpus(recipe)
    every = list(load_text_dataset(files=shards, streaming=True)["train"])
    assert isinstance(corpus["validation"], datasets.Dataset)
    assert corpus["validation"]["text"] == [r["text"] for r in every[:7]]
    assert [r["text"] for r in corpus["train"]] == [r["text"] for r in every[7:47]]


def test_mixture_proportions_follow_the_weights(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": f"alpha {i}"}) + "\n" for i in range(20_000)))
    b.write_text("".join(json.dumps({"body": f"beta {i}"}) + "\n" for i in range(20_000)))
    recipe = Recipe.from_dict({"kind": "pretrain", "model": {"family": "decoder"}, "objective": {"name": "clm"},
                               "data": {"streaming": True, "validation_split_percentage": 0, "sources": [
                                   {"files": [str(a)], "weight": 0.7, "name": "alpha"},
                                   {"files": [str(b)], "weight": 0.3, "name": "beta", "text_column": "body"}]},
                               "train": {"max_steps": 5, "seed": 11}})
    from hfpipe.data.sources import load_corpus_and_mixture

    corpus, mixture = load_corpus_and_mixture(recipe)
    texts = [row["text"] for row in corpus["train"].take(4000)]
    share = sum(t.startswith("alpha") for t in texts) / len(texts)
    assert share == pytest.approx(0.7, abs=0.03)  # 4000 draws: standard deviation 0.007
    realised = mixture.realised()
    # the counts are those of documents read, a few rows ahead of the 4000 yielded
    assert sum(mixture.counts) == pytest.approx(4000, abs=20)
    assert realised["alpha"] == pytest.approx(share, abs=0.005)
    # the same mixture draws the same documents (seeded)
    again, _ = load_corpus_and_mixture(recipe)
    assert [row["text"] for row in again["train"].take(500)] == texts[:500]
    # map-style mixtures are counted exactly
    mapped, counts = interleave_sources(
        [datasets.Dataset.from_dict({"text": ["x"] * 3000}), datasets.Dataset.from_dict({"text": ["y"] * 3000})],
        [1, 3], ["x", "y"], seed=0)
    assert counts.counts == [list(mapped["text"]).count("x"), list(mapped["text"]).count("y")]
    assert counts.realised()["y"] == pytest.approx(0.75, abs=0.03)


def test_each_process_reads_disjoint_files(shards):
    from datasets.distributed import split_dataset_by_node

    stream = load_text_dataset(files=shards, streaming=True)["train"]
    parts = [[r["text"] + "|" for r in split_dataset_by_node(stream, rank=r, world_size=2)] for r in range(2)]
    whole = [r["text"] + "|" for r in stream]
    assert len(parts[0]) + len(parts[1]) == len(whole)
    assert sorted(parts[0] + parts[1]) == sorted(whole)
    for shard in shards:  # whole files per process: each file's documents all went to one of them
        texts = {r["text"] + "|" for r in load_text_dataset(files=[shard], streaming=True)["train"]}
        assert texts <= set(parts[0]) or texts <= set(parts[1])


def test_resumable_stream_position_continues_exactly(shards, tokenizers):
    from hfpipe.data.streaming import ResumableStream

    def stream():
        documents = load_text_dataset(files=shards, streaming=True)["train"].take(20)  # a short stream: passes
        recipe = _recipe("clm", "decoder")
        examples = recipe.objective.examples(recipe, {"train": documents}, tokenizers["decoder"])
        return ResumableStream(examples.train, batch_size=4, counters=examples.counters)

    straight = stream()
    every = [list(map(int, r["input_ids"])) for _, r in zip(range(400), straight)]  # > one pass: repeats
    assert straight.epoch >= 2  # the stream repeated
    first = stream()
    iterator = iter(first)
    [next(iterator) for _ in range(4 * 30 + 6)]  # 30 batches consumed, some read ahead
    state = json.loads(json.dumps(first.state_after(30)))
    resumed = stream()
    resumed.load_state(state)
    rest = [list(map(int, r["input_ids"])) for _, r in zip(range(400 - 120), resumed)]
    assert rest == every[120:]
    assert resumed.counters["packing"].num_documents >= state["counters"]["packing"]["num_documents"]


# ---------------------------------------------------------------------------------- end to end

def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _args(out, shards, tokenizer, *extra, launcher=(sys.executable,)):
    return [*launcher, "-m", "hfpipe", "pretrain", str(ROOT / "recipes" / "pretrain" / "t5-span-corruption.yaml"),
            "--smoke", "--max-steps", "9", "--output-dir", str(out), "--set", "train.save_steps=3",
            "--set", "train.save_total_limit=5", "--set", "train.mixed_precision=no", "--set", "train.report_to=[]",
            "--set", "train.eval_steps=100", "--set", "data.max_train_samples=400",
            "--set", f"tokenizer.name_or_path={tokenizer}", "--set", "data.dataset=null",
            "--set", f"data.train_files={json.dumps(shards)}", *extra]


@pytest.fixture(scope="module")
def t5_tokenizer_dir(tokenizers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tokenizers["seq2seq"].save_pretrained(folder)
    return folder


def _weights_equal(a_dir, b_dir):
    a, b = load_file(Path(a_dir) / "model.safetensors"), load_file(Path(b_dir) / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_streamed_run_killed_after_checkpoint_3_resumes_bitwise(tmp_path, shards, t5_tokenizer_dir):
    from hfpipe.training.output_dir import COMPLETE_MARKER

    straight = tmp_path / "straight"
    done = subprocess.run(_args(straight, shards, t5_tokenizer_dir), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((straight / "train_results.json").read_text())
    assert results["train_packing_blocks"] > 9 * 8 and results["train_packing_documents"] > 0
    killed = tmp_path / "killed"
    process = subprocess.Popen(_args(killed, shards, t5_tokenizer_dir), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    started = time.time()
    while not (killed / "checkpoint-3" / COMPLETE_MARKER).exists():
        assert process.poll() is None and time.time() - started < 300
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "train_results.json").exists()
    assert json.loads((killed / "checkpoint-3" / "stream-0.json").read_text())["batches"] == 3
    resumed = subprocess.run(_args(killed, shards, t5_tokenizer_dir, "--set", "train.resume=true"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming the stream at the position saved" in resumed.stderr
    _weights_equal(straight, killed)


@pytest.mark.slow
def test_two_processes_read_disjoint_parts_and_resume_bitwise(tmp_path, shards, t5_tokenizer_dir):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    launcher = (accelerate, "launch", "--config_file", str(ROOT / "accelerate_configs" / "cpu-2proc.yaml"))
    straight = tmp_path / "straight"
    done = subprocess.run(_args(straight, shards, t5_tokenizer_dir, launcher=launcher), env=_env(),
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    states = [json.loads((straight / "checkpoint-3" / f"stream-{r}.json").read_text()) for r in range(2)]
    assert [s["batches"] for s in states] == [3, 3]
    for rank in range(2):  # each process reads its own two of the four files (split_dataset_by_node)
        assert f"process {rank} of 2 reads 2 of the 4 shards of the stream" in done.stderr
    resumed = tmp_path / "resumed"
    shutil.copytree(straight / "checkpoint-3", resumed / "checkpoint-3")
    again = subprocess.run(_args(resumed, shards, t5_tokenizer_dir, "--set", "train.resume=true", launcher=launcher),
                           env=_env(), capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("resuming the stream at the position saved") == 2
    _weights_equal(straight, resumed)
