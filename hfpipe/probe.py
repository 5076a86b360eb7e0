"""``hfpipe probe MODEL --file FACTS.jsonl``: cloze probing of what a model knows (LAMA-style).

Each line of the file is ``{"text": "The capital of France is [MASK].", "answer": "Paris"}``: one
``[MASK]`` blank in the text and the word that fills it (Petroni et al. 2019). The model ranks
candidates for the blank and the probe reports precision@1 and precision@10:

- an **encoder** reads the text with its own mask token at the blank and ranks its whole
  vocabulary there (the masked-LM head; a checkpoint saved without one is refused, since a
  freshly initialised head would score noise);
- a **decoder** reads the text up to the blank and ranks its vocabulary as the next token;
- an **encoder-decoder** reads the text with its first sentinel at the blank (T5's span
  corruption) and ranks the vocabulary as the token after that sentinel in the target.

Single-token answers (the answer, with the spacing it has after the text before the blank, is
one token) are ranked over the model's vocabulary, as LAMA does. Multi-token answers are ranked
by their summed log-likelihood among the distinct answers of the file (decoders and
encoder-decoders; a masked LM fills one token per blank, so it reports them as not scored). The
two groups are reported separately and together; ``probe_predictions.jsonl`` holds every
statement's top 10 and the answer's rank.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

from .device import inference_dtype, model_device, place_model, resolve_device, run_precision
from .errors import InputError

logger = logging.getLogger(__name__)

BLANK = "[MASK]"
TOP_K = (1, 10)


@dataclass
class Statement:
    text: str
    answer: str
    line: int

    @property
    def prefix(self) -> str:
        return self.text.split(BLANK)[0]


def read_statements(path: str | Path) -> list[Statement]:
    """The probe file's statements; InputError naming the line for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--file {path}: no such file (expected JSON lines with \"text\" and \"answer\")")
    statements = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("answer"), str):
                raise InputError(f"{path}:{number}: expected an object with string keys \"text\" and \"answer\"")
            if row["text"].count(BLANK) != 1:
                raise InputError(f"{path}:{number}: \"text\" must hold exactly one {BLANK} blank, "
                                 f"found {row['text'].count(BLANK)}")
            if not row["answer"].strip():
                raise InputError(f"{path}:{number}: \"answer\" is empty")
            statements.append(Statement(row["text"], row["answer"].strip(), number))
    if not statements:
        raise InputError(f"{path}: holds no statements")
    return statements


def answer_ids(tokenizer, prefix: str, answer: str) -> list[int]:
    """The answer's tokens as they follow ``prefix`` (BPE marks a word's leading space in its first
    token, so the answer is tokenized in place, not alone)."""
    before = prefix.rstrip()
    separator = prefix[len(before):] or ("" if not before else " ")
    prefix_ids = tokenizer(before, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(before + separator + answer, add_special_tokens=False)["input_ids"]
    if full_ids[:len(prefix_ids)] == prefix_ids and len(full_ids) > len(prefix_ids):
        return full_ids[len(prefix_ids):]
    return tokenizer(answer, add_special_tokens=False)["input_ids"]  # the prefix merged into the answer


def probe_family(config) -> str:
    """encoder (masked LM), decoder (causal LM) or seq2seq, from a checkpoint's config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if config.is_encoder_decoder:
        return "seq2seq"
    if config.model_type == "hfpipe_encoder" or config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "encoder"
    return "decoder"


class ClozeScorer:
    """Log-probabilities at a statement's blank, per family."""

    def __init__(self, model, tokenizer, family: str):
        self.model, self.tokenizer, self.family = model, tokenizer, family

    def _to_device(self, batch):
        return {k: v.to(model_device(self.model)) for k, v in batch.items() if k != "token_type_ids" or
                self.family == "encoder"}

    @torch.no_grad()
    def next_token(self, statement: Statement) -> torch.Tensor:
        """(V,) log-probabilities of the blank's (first) token."""
        tok = self.tokenizer
        if self.family == "encoder":
            batch = tok(statement.text.replace(BLANK, tok.mask_token), return_tensors="pt")
            position = (batch["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0]
            logits = self.model(**self._to_device(batch)).logits[0, position]
        elif self.family == "decoder":
            logits = self._decoder_logits(statement.prefix.rstrip(), [])[-1]
        else:
            logits = self._seq2seq_logits(statement, [])[-1]
        return logits.float().log_softmax(-1)

    def _decoder_logits(self, prefix: str, continuation: list[int]) -> torch.Tensor:
        """(len(continuation) + 1, V): the logits after the prefix and after each continuation token."""
        ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        ids = ([bos] if bos is not None and (not ids or ids[0] != bos) else []) + ids
        input_ids = torch.tensor([ids + continuation], device=model_device(self.model))
        return self.model(input_ids=input_ids).logits[0, len(ids) - 1:]

    def _seq2seq_logits(self, statement: Statement, continuation: list[int]) -> torch.Tensor:
        tok = self.tokenizer
        sentinel = "<extra_id_0>"
        if tok.convert_tokens_to_ids(sentinel) in (None, tok.unk_token_id):
            raise InputError(f"the tokenizer has no {sentinel} sentinel: an encoder-decoder is probed as T5's "
                             "span corruption trained it")
        batch = tok(statement.text.replace(BLANK, sentinel), return_tensors="pt")
        start = self.model.config.decoder_start_token_id
        decoder = torch.tensor([[start, tok.convert_tokens_to_ids(sentinel), *continuation]])
        out = self.model(**self._to_device(batch), decoder_input_ids=decoder.to(model_device(self.model)))
        return out.logits[0, 1:]

    @torch.no_grad()
    def log_likelihood(self, statement: Statement, ids: list[int]) -> float:
        """Summed log-probability of ``ids`` filling the blank (decoders and encoder-decoders)."""
        if self.family == "decoder":
            logits = self._decoder_logits(statement.prefix.rstrip(), ids)
        else:
            logits = self._seq2seq_logits(statement, ids)
        log_probs = logits[:len(ids)].float().log_softmax(-1)
        return float(log_probs[torch.arange(len(ids)), torch.tensor(ids, device=log_probs.device)].sum())


def probe(model, tokenizer, statements: list[Statement]) -> tuple[dict, list[dict]]:
    """(metrics, one prediction row per statement)."""
    scorer = ClozeScorer(model, tokenizer, probe_family(model.config))
    rows = []
    answers = sorted({s.answer for s in statements})
    for statement in statements:
        ids = answer_ids(tokenizer, statement.prefix, statement.answer)
        row = {"line": statement.line, "text": statement.text, "answer": statement.answer}
        if len(ids) == 1:
            log_probs = scorer.next_token(statement)
            rank = int((log_probs > log_probs[ids[0]]).sum()) + 1
            top = log_probs.topk(max(TOP_K)).indices.tolist()
            row.update(kind="single-token", rank=rank, top10=[tokenizer.decode([i]).strip() for i in top])
        elif scorer.family == "encoder":
            row.update(kind="multi-token", rank=None, note=f"{len(ids)} tokens: a masked LM fills one per blank")
        else:
            scores = {a: scorer.log_likelihood(statement, answer_ids(tokenizer, statement.prefix, a)) for a in answers}
            ranked = sorted(answers, key=lambda a: -scores[a])
            rank = 1 + sum(scores[a] > scores[statement.answer] for a in answers)
            row.update(kind="multi-token", rank=rank, top10=ranked[:max(TOP_K)])
        rows.append(row)
    return summarise(rows, len(answers)), rows


def summarise(rows: list[dict], num_answers: int) -> dict:
    """precision@k per group (single-token over the vocabulary, multi-token over the file's answers) and overall."""
    metrics = {}
    groups = {"single_token": [r for r in rows if r["kind"] == "single-token"],
              "multi_token": [r for r in rows if r["kind"] == "multi-token" and r["rank"] is not None],
              "all": [r for r in rows if r["rank"] is not None]}
    for name, group in groups.items():
        metrics[f"{name}_count"] = len(group)
        for k in TOP_K if group else ():  # an empty group has no precision (not a NaN row)
            metrics[f"{name}_precision@{k}"] = sum(r["rank"] <= k for r in group) / len(group)
    metrics["not_scored"] = sum(r["rank"] is None for r in rows)
    metrics["multi_token_candidates"] = num_answers
    return metrics


def load_probe_model(reference: str, device: str = "auto", dtype: str = "auto"):
    from .hub import parse_model_reference

    name, revision = parse_model_reference(reference)
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise InputError(f"{reference}: no config.json in this folder; expected a saved model checkpoint")
    config = AutoConfig.from_pretrained(name, revision=revision)
    family = probe_family(config)
    auto_class = {"seq2seq": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM}.get(family, AutoModelForMaskedLM)
    try:
        model, info = auto_class.from_pretrained(name, revision=revision, output_loading_info=True)
    except ValueError as error:
        raise InputError(f"{reference}: cannot be probed ({config.model_type}: {error})") from None
    # Weights outside the backbone that the checkpoint lacks are a head initialised just now.
    head = [k for k in info.get("missing_keys", []) if not k.startswith(f"{model.base_model_prefix}.")]
    if head:
        raise InputError(f"{reference}: the checkpoint has no trained language-model head ({len(head)} missing "
                         f"weights, e.g. {sorted(head)[0]}); a probe through a fresh head measures noise")
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    device = resolve_device(device) if isinstance(device, str) else device
    model = place_model(model, device, inference_dtype(device, dtype, run_precision(name)))
    return model.eval(), tokenizer


def run_probe(args) -> dict:
    from .training.results import results_table, write_json

    statements = read_statements(args.file)  # bad lines: one message, before the model loads
    stem = Path(args.file).stem
    output_dir = Path(args.output_dir) if args.output_dir else (
        Path(args.model) / f"probe-{stem}" if Path(args.model).is_dir() else Path("runs") / f"probe-{stem}")
    if (output_dir / "probe_results.json").exists():
        raise InputError(f"{output_dir}: holds an earlier probe; pass --output-dir to keep both")
    device = resolve_device(getattr(args, "device", "auto"))
    model, tokenizer = load_probe_model(args.model, device=device, dtype=getattr(args, "dtype", "auto"))
    metrics, rows = probe(model, tokenizer, statements)
    if not metrics["all_count"]:
        raise InputError(f"{args.file}: none of its {len(rows)} statements can be scored by {args.model}: every answer "
                         "is several tokens of its tokenizer, and a masked LM fills one token per blank; give "
                         "answers that are single tokens, or probe a decoder or encoder-decoder")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "probe_results.json", metrics)
    with open(output_dir / "probe_predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print("\n" + results_table(f"Cloze probe: {args.model} on {args.file}", metrics) + "\n")
    logger.info("wrote %s", output_dir)
    return metrics
