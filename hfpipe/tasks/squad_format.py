"""SQuAD's format, shared by extractive QA (hfpipe.tasks.squad), generative QA (hfpipe.tasks.generative_qa)
and the embedded examples: the Hub's features, the version names, and the sliding windows a long
context is cut into (transformers' run_qa approach).
"""

from __future__ import annotations

import datasets

from hfpipe.errors import InputError

# Per version: the Hub dataset recipes default to, and the hfpipe.metrics name that scores it.
SQUAD_HUB_IDS = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
SQUAD_METRICS = {"1.1": "squad", "2.0": "squad_v2"}

# The features of the Hub's rajpurkar/squad and rajpurkar/squad_v2.
SQUAD_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
    }
)


def squad_version(version: str | int | float) -> str:
    """The canonical "1.1" or "2.0" for any of 1, 2, 1.1, 2.0, "v1", "v2", "v1.1", "v2.0"."""
    key = str(version).strip().lower().removeprefix("v")
    if key in ("1", "1.1"):
        return "1.1"
    if key in ("2", "2.0"):
        return "2.0"
    raise InputError(f"SQuAD version {version!r}: expected 1.1 (v1) or 2.0 (v2)")


def tokenize_windows(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    """Tokenize question/context pairs into overlapping windows of at most max_seq_length tokens.

    Returns the BatchEncoding (with offset_mapping and overflow_to_sample_mapping) and the
    sequence id (0 or 1) the context has in each pair.
    """
    # With left padding (e.g. XLNet) the context goes first, so that truncation cuts its end, as run_qa does.
    pad_on_right = tokenizer.padding_side == "right"
    # Some SQuAD questions start with long runs of spaces; they cost window room for nothing.
    questions = [question.lstrip() for question in examples["question"]]
    contexts = examples["context"]
    if not 0 <= doc_stride < max_seq_length:
        raise InputError(f"doc_stride {doc_stride}: expected 0 <= doc_stride < max_seq_length ({max_seq_length})")
    try:
        tokenized = tokenizer(
            questions if pad_on_right else contexts,
            contexts if pad_on_right else questions,
            truncation="only_second" if pad_on_right else "only_first",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length" if pad_to_max_length else False,
        )
    except BaseException as error:
        # A question too long for the window fails in tokenizers with a bare "Truncation error" or
        # a Rust panic (pyo3's PanicException, a BaseException) that names no example. Checking
        # every batch beforehand would cost ~15% of the tokenization time, so diagnose only here.
        if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
            raise
        _check_window_room(examples["id"], questions, tokenizer, max_seq_length, doc_stride)
        raise
    return tokenized, 1 if pad_on_right else 0


def _check_window_room(ids, questions, tokenizer, max_seq_length: int, doc_stride: int) -> None:
    """Raise InputError naming the first question that leaves no more than doc_stride tokens of context room."""
    num_special = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids_) for ids_ in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    for qid, length in zip(ids, lengths):
        context_room = max_seq_length - num_special - length
        if context_room <= doc_stride:
            raise InputError(
                f"question {qid!r}: {length} question tokens leave {max(context_room, 0)} of max_seq_length "
                f"{max_seq_length} for the context, not more than doc_stride {doc_stride}; "
                "raise max_seq_length or lower doc_stride"
            )
