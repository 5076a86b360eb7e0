"""hfpipe.hub against a real HTTP Hub (tests/hub_server.py) with the real huggingface_hub,
transformers and peft client code.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET once, at import, and this
process imported it offline (tests/conftest.py). So every push and every pull runs in a fresh
subprocess started with the server's environment (``HubServer.client_env``), each with its own
HF_HOME: a pull never sees the pusher's cache or a stored login. Checkpoints are built and the
reference logits computed here, from the local folder, with one torch thread on both sides so that
the logits must match exactly.

Hook for hfpipe's own models: add a builder to ``CHECKPOINT_BUILDERS`` that saves a tiny hfpipe
checkpoint (config with the full ``auto_map``, modeling files, safetensors) and set its
``trust_remote_code`` to True; ``test_push_pull_round_trip`` then pushes it and loads it back
through ``AutoModelFor*.from_pretrained(repo, trust_remote_code=True)``. To prove the modeling
code travels with the push, also run that pull with hfpipe made unimportable (e.g. a PYTHONPATH
entry holding an ``hfpipe/__init__.py`` that raises ImportError).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from hfpipe.errors import InputError
from hfpipe.hub import parse_model_reference, push_to_hub, select_upload_files, write_model_card
from hub_server import HubServer  # tests/ is on sys.path (rootdir conftest, no __init__.py)

ALICE_TOKEN = "hf_test_alice_7f1d2c9e4b"  # owns "alice" and is a member of org "hfpipe-org"
BOB_TOKEN = "hf_test_bob_03a8e6d15c"
REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the cat sat on the mat", "a dog barked at the moon tonight", "zebra"]
RESULTS = {"eval_accuracy": 0.8125, "eval_f1": 0.7777777777777778, "eval_loss": 0.4321, "epoch": 3.0}


# --- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
def hub_server(tmp_path):
    """A running test Hub; fails the test if the client called anything the server does not implement."""
    tokens = {ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}
    server = HubServer(tmp_path / "hub", tokens=tokens, orgs={"alice": ["hfpipe-org"]})
    with server:
        yield server
    assert not server.unhandled, f"the client called what hub_server does not implement: {server.unhandled}"
    assert not server.errors, f"hub_server raised: {server.errors}"


def _run_client(server, tmp_path, script: str, payload, token: str | None) -> tuple[dict, str]:
    """Run ``script`` in a fresh interpreter wired to ``server``; (its RESULT json, all its output)."""
    home = tmp_path / f"home-{time.monotonic_ns()}"
    env = server.client_env(token=token, hf_home=home)
    # Everything chatty on, so that the token check below covers debug logs too.
    env.update(HF_HUB_VERBOSITY="debug", TRANSFORMERS_VERBOSITY="debug", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(payload)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    result_line = [line for line in proc.stdout.splitlines() if line.startswith("RESULT:")][-1]
    return json.loads(result_line.removeprefix("RESULT:")), output


PUSH_SCRIPT = """
import json, logging, sys
logging.basicConfig(level=logging.DEBUG)
from hfpipe.errors import InputError
from hfpipe.hub import push_to_hub
results = []
for job in json.loads(sys.argv[1]):
    try:
        results.append({"url": push_to_hub(**job)})
    except InputError as err:
        results.append({"input_error": str(err)})
print("RESULT:" + json.dumps(results))
"""

PULL_SCRIPT = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
import transformers
from huggingface_hub import ModelCard
from hfpipe.errors import InputError
from hfpipe.hub import parse_model_reference, resolve_checkpoint
results = []
for job in json.loads(sys.argv[1]):
    if "snapshot" in job:  # resolve_checkpoint: the folder it returns, listed
        try:
            folder = Path(resolve_checkpoint(job["snapshot"]))
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            results.append({"files": files})
        except InputError as err:
            results.append({"input_error": str(err)})
        continue
    try:
        name, revision = parse_model_reference(job["model"])
        auto = getattr(transformers, job.get("auto_class", "AutoModelForSequenceClassification"))
        extra = {"token": job["token"]} if "token" in job else {}
        remote = {"trust_remote_code": True} if job.get("trust_remote_code") else {}
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, revision=revision, **extra)
        if "base" in job:  # a peft adapter on a base model, both from the Hub
            from peft import PeftModel
            base_name, base_revision = parse_model_reference(job["base"])
            base = auto.from_pretrained(base_name, revision=base_revision, **extra, **remote)
            model = PeftModel.from_pretrained(base, name, revision=revision, **extra)
        else:
            model = auto.from_pretrained(name, revision=revision, **extra, **remote)
        batch = tokenizer(job["texts"], padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model.eval()(**batch).logits
        result = {"logits": logits.tolist(), "input_ids": batch["input_ids"].tolist()}
        if job.get("card"):
            card = ModelCard.load(name, **extra)
            result["card_tags"] = card.data.tags
            result["card_results"] = {r.metric_type: r.metric_value for r in card.data.eval_results}
    except Exception as err:
        result = {"error": type(err).__name__, "message": str(err)}
    results.append(result)
print("RESULT:" + json.dumps(results))
"""


def push(server, tmp_path, *jobs: dict, token: str | None = ALICE_TOKEN) -> tuple[list[dict], str]:
    """push_to_hub(**job) for each job, in order, in one subprocess: [{"url"} or {"input_error"}]."""
    jobs = [{key: str(value) if isinstance(value, Path) else value for key, value in job.items()} for job in jobs]
    return _run_client(server, tmp_path, PUSH_SCRIPT, jobs, token)


def pull(server, tmp_path, *jobs: dict, token: str | None = ALICE_TOKEN) -> tuple[list[dict], str]:
    """Load each job's model from the Hub in one fresh subprocess: [{"logits", ...} or {"error", "message"}]."""
    return _run_client(server, tmp_path, PULL_SCRIPT, [{"texts": TEXTS, **job} for job in jobs], token)


def build_tokenizer():
    """A WordPiece tokenizer trained on the fly with `tokenizers`, wrapped for transformers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(TEXTS[:2] * 4, trainers.WordPieceTrainer(vocab_size=100, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    roles = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


def build_tiny_bert(folder: Path, seed: int = 0, max_shard_size: str | None = None) -> Path:
    """Random-init BertForSequenceClassification (2 layers, hidden 32, 3 labels) + tokenizer + card + junk."""
    from transformers import BertConfig, BertForSequenceClassification

    def make(vocab_size):
        return BertForSequenceClassification(BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, num_labels=3,
        ))  # fmt: skip

    return _build_checkpoint(folder, make, seed, max_shard_size)


def build_tiny_hfpipe(folder: Path, seed: int = 0, max_shard_size: str | None = None) -> Path:
    """The same, as hfpipe's own encoder (modeling code saved next to the weights)."""
    import hfpipe

    def make(vocab_size):
        config = hfpipe.config_for("encoder", "tiny", vocab_size=vocab_size, num_labels=3, max_position_embeddings=64)
        return hfpipe.HfpipeEncoderForSequenceClassification(config)

    return _build_checkpoint(folder, make, seed, max_shard_size)


def _build_checkpoint(folder: Path, make_model, seed: int, max_shard_size: str | None) -> Path:
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = make_model(len(tokenizer))
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tokenizer.save_pretrained(folder)
    (folder / "recipe.yaml").write_text(f"model:\n  family: encoder\n  seed: {seed}\n")
    (folder / "eval_results.json").write_text(json.dumps(RESULTS))
    # What a training run leaves that must not reach the Hub by default.
    torch.save({"step": 2}, folder / "optimizer.pt")
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (folder / "checkpoint-2").mkdir()
    model.save_pretrained(folder / "checkpoint-2")
    torch.save({"step": 2}, folder / "checkpoint-2" / "optimizer.pt")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents.1.host").write_bytes(b"\x00tb")
    write_model_card(
        folder, model_name="tiny-bert", base_model=None, datasets=["nyu-mll/glue"], tags=["test"],
        results=RESULTS, training_summary=f"Random init, seed {seed}.", recipe_path="recipe.yaml",
        dataset_config="mrpc", dataset_split="validation",
    )  # fmt: skip
    return folder


# Hook: hfpipe's model families join here (see the module docstring).
CHECKPOINT_BUILDERS = {
    "bert": {"build": build_tiny_bert, "trust_remote_code": False},
    "hfpipe": {"build": build_tiny_hfpipe, "trust_remote_code": True},
}


def local_logits(folder: Path, model=None) -> torch.Tensor:
    """Logits (len(TEXTS), 3) of ``model`` (default: the checkpoint in ``folder``) on TEXTS."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = model if model is not None else AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        return model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def assert_no_token(folder: Path, *outputs: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            for token in (ALICE_TOKEN, BOB_TOKEN):
                assert token.encode() not in path.read_bytes(), f"token written to {path}"
    for output in outputs:
        assert ALICE_TOKEN not in output and BOB_TOKEN not in output, "token in captured output"


# --- the server itself ---------------------------------------------------------------------------------
def _http(server, method: str, path: str, token: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(server.url + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_server_answers_unknown_endpoints_with_501_and_records_them(hub_server):
    status, _, body = _http(hub_server, "GET", "/api/spaces/alice/demo")
    assert status == 501 and b"GET /api/spaces/alice/demo" in body
    assert hub_server.unhandled == ["GET /api/spaces/alice/demo"]
    hub_server.unhandled.clear()  # seen; the fixture would otherwise fail this test


def test_server_private_repo_access(hub_server):
    hub_server.hub.create_repo("model", "alice/secret", private=True, author="alice")
    path = "/alice/secret/resolve/main/.gitattributes"
    anonymous, bob, alice = (_http(hub_server, "HEAD", path, t) for t in (None, BOB_TOKEN, ALICE_TOKEN))
    assert (anonymous[0], anonymous[1]["X-Error-Code"]) == (401, "RepoNotFound")
    assert (bob[0], bob[1]["X-Error-Code"]) == (404, "RepoNotFound")
    assert alice[0] == 200 and alice[1]["X-Repo-Commit"] == hub_server.history("alice/secret")[0]["oid"]
    assert _http(hub_server, "GET", "/api/models/alice/secret", "hf_wrong")[0] == 401


DATASET_SCRIPT = """
import json, sys
from huggingface_hub import HfApi, hf_hub_download
job = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(job["repo_id"], repo_type="dataset", private=True)
info = api.upload_folder(repo_id=job["repo_id"], repo_type="dataset", folder_path=job["folder"])
path = hf_hub_download(job["repo_id"], "data/train.jsonl", repo_type="dataset", revision=info.oid)
files = api.list_repo_files(job["repo_id"], repo_type="dataset")
print("RESULT:" + json.dumps({"content": open(path).read(), "files": sorted(files)}))
"""


def test_server_dataset_repos(hub_server, tmp_path):
    (tmp_path / "ds" / "data").mkdir(parents=True)
    rows = "".join(json.dumps({"sentence": f"row {i}", "label": i % 2}) + "\n" for i in range(5))
    (tmp_path / "ds" / "data" / "train.jsonl").write_text(rows)
    (tmp_path / "ds" / "README.md").write_text("---\nlicense: mit\n---\n# five rows\n")
    job = {"repo_id": "alice/five-rows", "folder": str(tmp_path / "ds")}
    result, _ = _run_client(hub_server, tmp_path, DATASET_SCRIPT, job, ALICE_TOKEN)
    assert result == {"content": rows, "files": [".gitattributes", "README.md", "data/train.jsonl"]}
    assert hub_server.files("alice/five-rows", repo_type="dataset")["data/train.jsonl"] == rows.encode()
    assert ("POST", "/api/datasets/alice/five-rows/commit/main", 200) in hub_server.requests
    assert _http(hub_server, "HEAD", "/datasets/alice/five-rows/resolve/main/README.md")[0] == 401  # private


# --- pure functions (no server) --------------------------------------------------------------------------
def test_select_upload_files_exact_lists(tmp_path):
    present = [
        "README.md", "config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin",
        "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "tokenizer.json",
        "tokenizer_config.json", "vocab.txt", "spiece.model", "chat_template.jinja", "modeling_hfpipe.py",
        "recipe.yaml", "eval_results.json", "eval_predictions.jsonl", "loss.png", "notes.csv",
        "checkpoint-10/model.safetensors", "checkpoint-10/optimizer.pt", "checkpoint-10/trainer_state.json",
        "runs/Nov22/events.out.tfevents.1.host", "__pycache__/modeling_hfpipe.cpython-311.pyc",
    ]  # fmt: skip
    for name in present:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    default = [
        "README.md", "chat_template.jinja", "config.json", "eval_predictions.jsonl", "eval_results.json",
        "generation_config.json", "loss.png", "model.safetensors", "modeling_hfpipe.py", "recipe.yaml",
        "spiece.model", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
    ]  # fmt: skip
    assert select_upload_files(tmp_path) == default
    assert select_upload_files(tmp_path, include_checkpoints=True) == sorted(
        default + ["checkpoint-10/model.safetensors", "checkpoint-10/trainer_state.json"]
    )
    with_logs = sorted(default + ["runs/Nov22/events.out.tfevents.1.host"])
    assert select_upload_files(tmp_path, include_logs=True) == with_logs


def test_parse_model_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "run@2").mkdir()
    assert parse_model_reference("org/name") == ("org/name", None)  # a local folder wins over the Hub id
    assert parse_model_reference("run@2") == ("run@2", None)  # even with an '@' in its name
    assert parse_model_reference(tmp_path / "run@2") == (str(tmp_path / "run@2"), None)
    for bad, says in [
        ("", "empty model reference"),
        ("org/name@", "nothing after '@'"),
        ("org/name@v1", "org/name is a local folder; '@v1' applies only to Hub ids"),
        ("./missing/deep/path", "not a Hub id"),
        ("other/model@v2", "HF_HUB_OFFLINE=1 forbids downloading it"),  # conftest: offline
    ]:
        start = time.monotonic()
        with pytest.raises(InputError, match=re.escape(says)) as info:
            parse_model_reference(bad)
        assert "\n" not in str(info.value) and time.monotonic() - start < 1.0  # one line, no retries


def test_parse_model_reference_offline_uses_the_cache(tmp_path):
    # The layout huggingface_hub writes: refs/<branch> holds a commit, snapshots/<commit>/ the files.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "models--org--cached"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    (repo_cache / "snapshots" / commit).mkdir(parents=True)
    (repo_cache / "snapshots" / commit / "config.json").write_text("{}")
    assert parse_model_reference("org/cached", cache_dir=tmp_path) == ("org/cached", None)
    assert parse_model_reference(f"org/cached@{commit}", cache_dir=tmp_path) == ("org/cached", commit)
    with pytest.raises(InputError, match="HF_HUB_OFFLINE=1"):
        parse_model_reference("org/cached@exp", cache_dir=tmp_path)


def test_push_refuses_bad_input_before_any_network(tmp_path):
    with pytest.raises(InputError, match="is not a directory"):
        push_to_hub(tmp_path / "missing", "alice/x", token=ALICE_TOKEN)
    (tmp_path / "pickles").mkdir()
    (tmp_path / "pickles" / "config.json").write_text("{}")
    (tmp_path / "pickles" / "pytorch_model.bin").write_bytes(b"\x80")
    with pytest.raises(InputError, match=r"weights only as pickles \(pytorch_model.bin\)"):
        push_to_hub(tmp_path / "pickles", "alice/x", token=ALICE_TOKEN)
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "recipe.yaml").write_text(f"hub:\n  token: {ALICE_TOKEN}\n")
    with pytest.raises(InputError, match="recipe.yaml contains your Hugging Face token") as info:
        push_to_hub(tmp_path / "leaky", "alice/x", token=ALICE_TOKEN)
    assert ALICE_TOKEN not in str(info.value)
    with pytest.raises(InputError, match="not a Hub repo id"):
        push_to_hub(tmp_path / "leaky", "a/b/c", token=ALICE_TOKEN)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE=1 is set"):  # conftest: offline
        push_to_hub(tmp_path / "ok", "alice/x", token=ALICE_TOKEN)


def test_model_card_metadata_table_and_recipe(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (tmp_path / "recipe.yaml").write_text("train:\n  learning_rate: 2.0e-05\n")
    path = write_model_card(
        tmp_path, model_name="bert-mrpc", base_model="bert-base-uncased", datasets=["nyu-mll/glue"],
        tags=["glue"], results=RESULTS, training_summary="3 epochs at lr 2e-5, batch 32.",
        recipe_path="recipe.yaml", dataset_config="mrpc", dataset_split="validation",
    )  # fmt: skip
    card = ModelCard.load(path)
    data = card.data
    assert (data.library_name, data.base_model) == ("transformers", "bert-base-uncased")
    assert data.datasets == ["nyu-mll/glue"]
    assert data.tags == ["hfpipe", "glue"] and data.pipeline_tag == "text-classification"  # task from config.json
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {
        "accuracy": 0.8125, "f1": 0.7777777777777778, "loss": 0.4321,
    }  # "epoch" is bookkeeping, not a result  # fmt: skip
    result = data.eval_results[0]
    assert (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split) == (
        "text-classification", "nyu-mll/glue", "mrpc", "validation",
    )  # fmt: skip
    assert "| accuracy | 0.8125 |\n| f1 | 0.7778 |\n| loss | 0.4321 |" in card.text
    assert "3 epochs at lr 2e-5, batch 32." in card.text
    assert "```yaml\ntrain:\n  learning_rate: 2.0e-05\n```" in card.text
    write_model_card(tmp_path, model_name="again", results={}, training_summary="s")  # its own card: rewritten
    assert ModelCard.load(path).data.model_name == "again"


def test_model_card_refuses_bad_input(tmp_path):
    card = {"model_name": "m", "training_summary": "s"}
    with pytest.raises(InputError, match="'eval_accuracy' is 'x'; expected a number"):
        write_model_card(tmp_path, **card, task="fill-mask", results={"eval_accuracy": "x"})
    with pytest.raises(InputError, match="pass task="):
        write_model_card(tmp_path, **card, results={"accuracy": 1.0})
    (tmp_path / "README.md").write_text("# my own notes\n")
    with pytest.raises(InputError, match="exists and was not generated"):
        write_model_card(tmp_path, **card, task="fill-mask", results={})
    assert (tmp_path / "README.md").read_text() == "# my own notes\n"


# --- over HTTP ------------------------------------------------------------------------------------------
def same_logits(pulled: dict, expected: torch.Tensor) -> bool:
    return "logits" in pulled and torch.equal(torch.tensor(pulled["logits"]), expected)


@pytest.mark.parametrize("family", sorted(CHECKPOINT_BUILDERS))
def test_push_pull_round_trip(hub_server, tmp_path, family):
    builder, repo = CHECKPOINT_BUILDERS[family], f"alice/tiny-{family}"
    folder = builder["build"](tmp_path / "out")
    expected = local_logits(folder)
    (result,), push_log = push(hub_server, tmp_path, {"folder": folder, "repo_id": repo})

    history = hub_server.history(repo)
    assert result["url"] == f"{hub_server.url}/{repo}/commit/{history[0]['oid']}"
    assert [c["title"] for c in history] == ["Upload out with hfpipe", "initial commit"]
    remote = hub_server.files(repo)
    assert sorted(remote) == sorted([".gitattributes", *select_upload_files(folder)])
    assert {"model.safetensors", "README.md", "recipe.yaml", "tokenizer.json"} <= set(remote)
    assert not any(p.endswith((".bin", ".pt")) or p.startswith(("checkpoint-", "runs/")) for p in remote)
    assert all(remote[p] == (folder / p).read_bytes() for p in remote if p != ".gitattributes")
    # Weights went through the LFS batch API and the signed "CDN" URL, the rest inline in the commit.
    lfs_puts = [path for method, path, _ in hub_server.requests if method == "PUT"]
    assert lfs_puts == [f"/lfs-upload/models/{repo}/{history[0]['files']['model.safetensors']['lfs']}"]
    assert history[0]["files"]["config.json"]["lfs"] is None

    job = {"model": repo, "card": True, "trust_remote_code": builder["trust_remote_code"]}
    (pulled,), pull_log = pull(hub_server, tmp_path, job, token=None)  # public: no token needed
    assert same_logits(pulled, expected), pulled
    assert expected.shape == (len(TEXTS), 3)
    assert pulled["card_tags"] == ["hfpipe", "test"]
    assert pulled["card_results"] == {"accuracy": 0.8125, "f1": 0.7777777777777778, "loss": 0.4321}
    assert_no_token(folder, push_log, pull_log)


@pytest.mark.slow
def test_private_repos_and_permissions(hub_server, tmp_path):
    folder = build_tiny_bert(tmp_path / "out")
    expected = local_logits(folder)
    results, push_log = push(
        hub_server, tmp_path,
        {"folder": folder, "repo_id": "alice/secret", "private": True},
        {"folder": folder, "repo_id": "hfpipe-org/shared", "private": True},  # alice's org
        {"folder": folder, "repo_id": "bob/public-one"},  # not alice's namespace
        {"folder": folder, "repo_id": "alice/secret", "token": BOB_TOKEN},  # not bob's either
        {"folder": folder, "repo_id": "bob/public-one", "token": BOB_TOKEN},
        {"folder": folder, "repo_id": "bob/public-one", "token": BOB_TOKEN, "private": True},  # exists, public
    )  # fmt: skip
    assert [sorted(r) for r in results[:2]] == [["url"], ["url"]]
    refused = "push: the Hub refused the token for {} (HTTP 403)"
    assert results[2]["input_error"].startswith(refused.format("bob/public-one"))
    assert results[3]["input_error"].startswith(refused.format("alice/secret"))
    assert "url" in results[4]
    assert results[5]["input_error"] == (
        "push: bob/public-one already exists and is public; refusing to push a private model into it"
    )
    private = {repo: hub_server.hub.repo_meta("model", repo)["private"] for repo in ("alice/secret", "bob/public-one")}
    assert private == {"alice/secret": True, "bob/public-one": False}
    assert len(hub_server.history("bob/public-one")) == 2  # the refused private push made no commit

    pulled, pull_log = pull(
        hub_server, tmp_path,
        {"model": "alice/secret"},  # no token in the environment
        {"model": "alice/secret", "token": BOB_TOKEN},
        {"model": "alice/secret", "token": ALICE_TOKEN},
        {"model": "hfpipe-org/shared", "token": ALICE_TOKEN},
        token=None,
    )  # fmt: skip
    for refused in pulled[:2]:
        assert refused["error"] == "OSError" and "private repository" in refused["message"], refused
    statuses = {status for _, path, status in hub_server.requests if path.startswith("/alice/secret/resolve/")}
    assert {401, 404, 200} <= statuses  # anonymous, bob, alice
    assert same_logits(pulled[2], expected) and same_logits(pulled[3], expected)
    assert_no_token(folder, push_log, pull_log)


@pytest.mark.slow
def test_revisions_and_updates(hub_server, tmp_path):
    v1 = build_tiny_bert(tmp_path / "v1", seed=1)
    v2 = build_tiny_bert(tmp_path / "v2", seed=2)
    v3 = build_tiny_bert(tmp_path / "v3", seed=3, max_shard_size="40KB")  # sharded: replaces model.safetensors
    logits = {"v1": local_logits(v1), "v2": local_logits(v2), "v3": local_logits(v3)}
    assert not torch.allclose(logits["v1"], logits["v2"]) and not torch.allclose(logits["v2"], logits["v3"])
    results, _ = push(
        hub_server, tmp_path,
        {"folder": v1, "repo_id": "alice/m", "commit_message": "v1"},
        {"folder": v2, "repo_id": "alice/m", "revision": "exp", "commit_message": "v2 on exp"},
        {"folder": v3, "repo_id": "alice/m", "commit_message": "v3"},
    )  # fmt: skip
    v1_commit = results[0]["url"].rsplit("/", 1)[1]
    assert [c["title"] for c in hub_server.history("alice/m")] == ["v3", "v1", "initial commit"]
    assert [c["title"] for c in hub_server.history("alice/m", "exp")] == ["v2 on exp", "v1", "initial commit"]
    main_files = hub_server.files("alice/m")
    shards = sorted(p for p in main_files if p.endswith(".safetensors"))
    assert "model.safetensors" not in main_files and len(shards) >= 2  # the stale single file is deleted
    assert shards == sorted(p.name for p in v3.glob("*.safetensors"))
    assert hub_server.files("alice/m", v1_commit)["model.safetensors"] == (v1 / "model.safetensors").read_bytes()

    pulled, _ = pull(
        hub_server, tmp_path,
        {"model": "alice/m"}, {"model": "alice/m@exp"}, {"model": f"alice/m@{v1_commit}"}, {"model": "alice/m@nope"},
        {"snapshot": "alice/m@exp"}, {"snapshot": "alice/m@nope"},
    )  # fmt: skip
    assert same_logits(pulled[0], logits["v3"]) and same_logits(pulled[1], logits["v2"])
    assert same_logits(pulled[2], logits["v1"])
    assert pulled[3]["error"] == "OSError" and "nope is not a valid git identifier" in pulled[3]["message"]
    assert pulled[4]["files"] == sorted(hub_server.files("alice/m", "exp"))
    assert pulled[5]["input_error"] == "--model alice/m@nope: the Hub repo alice/m has no revision 'nope'"


@pytest.mark.slow
def test_peft_adapter_round_trip(hub_server, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base_dir = build_tiny_bert(tmp_path / "base")
    adapter_dir = tmp_path / "adapter"
    base_logits = local_logits(base_dir)
    torch.manual_seed(5)
    lora = LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False
    )  # random B as well as A: the adapter must change the outputs, or the round trip proves nothing
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base_dir), lora)
    model.peft_config["default"].base_model_name_or_path = "alice/tiny-base"  # where users will find it
    # Embeddings are not adapted (save_embedding_layers=False: no look-up of the base on the Hub); peft
    # also writes its template README.md, which write_model_card replaces.
    model.save_pretrained(adapter_dir, save_embedding_layers=False)
    build_tokenizer().save_pretrained(adapter_dir)
    write_model_card(
        adapter_dir, model_name="tiny-lora", base_model="alice/tiny-base", results={"accuracy": 0.5},
        training_summary="LoRA r=4 on query/value.",
    )  # fmt: skip
    expected = local_logits(adapter_dir, model)
    assert not torch.allclose(expected, base_logits)
    card = ModelCard.load(adapter_dir / "README.md").data
    assert (card.library_name, card.base_model, card.pipeline_tag) == ("peft", "alice/tiny-base", "text-classification")

    results, _ = push(
        hub_server, tmp_path,
        {"folder": base_dir, "repo_id": "alice/tiny-base"},
        {"folder": adapter_dir, "repo_id": "alice/tiny-lora"},
    )  # fmt: skip
    assert all("url" in r for r in results), results
    assert sorted(hub_server.files("alice/tiny-lora")) == [
        ".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip

    (pulled,), _ = pull(hub_server, tmp_path, {"model": "alice/tiny-lora", "base": "alice/tiny-base"}, token=None)
    assert same_logits(pulled, expected), pulled


BLOCKED_PULL_SCRIPT = """
import json, sys, torch
class BlockHfpipe:
    def find_spec(self, name, path=None, target=None):
        if name == "hfpipe" or name.startswith("hfpipe."):
            raise ImportError("hfpipe is blocked in this process")
sys.meta_path.insert(0, BlockHfpipe())
import transformers
job = json.loads(sys.argv[1])[0]
tokenizer = transformers.AutoTokenizer.from_pretrained(job["model"], trust_remote_code=True)
model = transformers.AutoModelForSequenceClassification.from_pretrained(job["model"], trust_remote_code=True)
with torch.no_grad():
    logits = model.eval()(**tokenizer(job["texts"], padding=True, return_tensors="pt")).logits
print("RESULT:" + json.dumps({"logits": logits.tolist(), "class": type(model).__name__,
                              "hfpipe_loaded": any(m.startswith("hfpipe") for m in sys.modules)}))
"""


def test_hfpipe_checkpoint_pulls_where_hfpipe_cannot_be_imported(hub_server, tmp_path):
    folder = build_tiny_hfpipe(tmp_path / "out")
    expected = local_logits(folder)
    (result,), _ = push(hub_server, tmp_path, {"folder": folder, "repo_id": "alice/tiny-hfpipe-remote"})
    assert "url" in result
    assert {"encoder.py", "blocks.py", "configuration.py"} <= set(hub_server.files("alice/tiny-hfpipe-remote"))
    pulled, _ = _run_client(hub_server, tmp_path, BLOCKED_PULL_SCRIPT,
                            [{"model": "alice/tiny-hfpipe-remote", "texts": TEXTS}], None)
    assert pulled["class"] == "HfpipeEncoderForSequenceClassification" and not pulled["hfpipe_loaded"]
    assert torch.equal(torch.tensor(pulled["logits"]), expected)


@pytest.mark.slow
def test_recipe_with_hub_push_pushes_at_the_end(hub_server, tmp_path):
    out = tmp_path / "run"
    env = hub_server.client_env(token=ALICE_TOKEN, hf_home=tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-m", "hfpipe", "finetune", str(REPO_ROOT / "recipes" / "finetune" / "glue-rte.yaml"), "--smoke",
         "--max-steps", "3", "--output-dir", str(out), "--set", "hub.push=true", "--set", "hub.repo_id=alice/rte-smoke"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    remote = hub_server.files("alice/rte-smoke")
    assert {"model.safetensors", "config.json", "README.md", "recipe.yaml", "eval_results.json"} <= set(remote)
    assert json.loads(remote["eval_results.json"]) == json.loads((out / "eval_results.json").read_text())
    assert_no_token(out, proc.stdout + proc.stderr)


@pytest.mark.slow
def test_a_run_resumes_exactly_from_checkpoints_pushed_to_the_hub(hub_server, tmp_path):
    """hub_strategy every_save pushes each checkpoint with its optimizer, scheduler and RNG state
    as safetensors (no pickles); a fresh machine (new HF_HOME, empty output folder) resumes from
    ``org/name@commit`` and ends bitwise equal to the uninterrupted run."""
    from hfpipe.data.embedded_corpus import embedded_corpus
    from hfpipe.tokenization import train_tokenizer
    from safetensors.torch import load_file

    # shared: tokenizer training is not bit-reproducible across processes
    train_tokenizer(embedded_corpus()[:400], family="decoder", vocab_size=600).save_pretrained(tmp_path / "tok")

    def pretrain(out, *extra):
        env = hub_server.client_env(token=ALICE_TOKEN, hf_home=tmp_path / f"home-{out.name}")
        return subprocess.run(
            [sys.executable, "-m", "hfpipe", "pretrain", str(REPO_ROOT / "recipes" / "pretrain" / "gpt-clm.yaml"),
             "--smoke", "--max-steps", "6", "--output-dir", str(out), "--set", "train.save_steps=3",
             "--set", f"tokenizer.name_or_path={tmp_path / 'tok'}",
             # accumulation, compile and bf16: test_recipes_as_written.py
             "--set", "train.gradient_accumulation_steps=1", "--set", "train.torch_compile=false",
             "--set", "train.mixed_precision=no", *extra],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    straight = pretrain(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    pushed = pretrain(tmp_path / "pushed", "--set", "hub.push=true", "--set", "hub.repo_id=alice/clm-run",
                      "--set", "hub.hub_strategy=every_save")
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    remote = hub_server.files("alice/clm-run")
    assert {"checkpoint-3/training_state.safetensors", "checkpoint-3/training_state.json",
            "checkpoint-3/hfpipe_checkpoint_complete", "checkpoint-6/model.safetensors"} <= set(remote)
    assert not [path for path in remote if path.endswith((".pt", ".pth", ".bin"))]
    at_step_3 = hub_server.history("alice/clm-run")[-2]["oid"]  # the push made at the first save
    assert not [path for path in hub_server.files("alice/clm-run", at_step_3) if path.startswith("checkpoint-6/")]

    resumed_dir = tmp_path / "resumed"
    resumed = pretrain(resumed_dir, "--set", f"train.resume=alice/clm-run@{at_step_3}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {p.name for p in (resumed_dir / "checkpoint-3").iterdir()}
    assert json.loads((resumed_dir / "trainer_state.json").read_text())["global_step"] == 6
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(resumed_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert_no_token(resumed_dir, resumed.stdout + resumed.stderr)


def test_resume_from_a_hub_repo_without_checkpoints_is_one_clear_error(hub_server, tmp_path):
    folder = build_tiny_bert(tmp_path / "m", seed=1)
    push(hub_server, tmp_path, {"folder": folder, "repo_id": "alice/no-ckpt"})
    env = hub_server.client_env(token=ALICE_TOKEN, hf_home=tmp_path / "home-resume")
    proc = subprocess.run(
        [sys.executable, "-m", "hfpipe", "pretrain", str(REPO_ROOT / "recipes" / "pretrain" / "gpt-clm.yaml"), "--smoke",
         "--output-dir", str(tmp_path / "out"), "--set", "train.resume=alice/no-ckpt"],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "hfpipe: error: train.resume alice/no-ckpt: the Hub repo alice/no-ckpt holds no complete checkpoint-N/ "
        "(push the run with hub.hub_strategy: every_save, or hfpipe push --include-checkpoints)")
