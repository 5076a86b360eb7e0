"""BERT's segment pairs for next-sentence prediction (and ALBERT's sentence order), as a datasets transform.

transformers 5 removed TextDatasetForNextSentencePrediction and DataCollatorForSOP, so hfpipe
builds the pairs itself, following google-research/bert ``create_pretraining_data.py``
(``create_instances_from_document`` and ``truncate_seq_pair``):

- a document is a list of sentences, each a list of token ids (no special tokens);
- sentences accumulate into a chunk until it reaches the target length (``max_seq_length - 3``,
  or with probability ``short_seq_probability`` a random length in [2, max_seq_length - 3]);
- A = the chunk's first ``a_end`` sentences (``a_end`` uniform in [1, len(chunk) - 1]);
  B = the rest of the chunk (IsNext, label 0), or with probability ``nsp_probability``
  sentences from another document starting at a random sentence (NotNext, label 1), in which
  case the unused sentences of the chunk go back into the stream;
- the pair is trimmed to ``max_seq_length - 3`` tokens by removing tokens from the longer
  segment, from its front or back at random.

One deliberate difference: BERT pairs a chunk holding a single sentence (typically a
document's last) with a random B always, which pushes NotNext above 50% (58% on a corpus of
documents of 5-30 short sentences). Here the NotNext draw comes first; if it says IsNext, the
lone sentence is cut at a random token into A and B, a true continuation, so NotNext occurs
with probability ``nsp_probability``. Only a one-token chunk still gets a random B.

``sentence_order=True`` gives ALBERT's sentence-order prediction: B is always the true
continuation (lone sentences cut as above), and A and B are swapped with probability 0.5
(label 1 = swapped); a one-token chunk falls back to ALBERT's rule (a random B, label 1).

Outputs: ``input_ids`` = [CLS] A [SEP] B [SEP], ``token_type_ids`` (0 for [CLS] A [SEP], 1 for
B [SEP]) and ``next_sentence_label`` (0 = IsNext / in order, as BertForPreTraining).
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hfpipe.errors import InputError

__all__ = ["BertPretrainingPairs", "create_bert_pretraining_pairs", "truncate_seq_pair"]

Document = Sequence[Sequence[int]]
Documents = list[list[list[int]]]  # cleaned: documents of non-empty sentences of ids
_COLUMNS = ("input_ids", "token_type_ids", "next_sentence_label")


def truncate_seq_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the pair in place to ``max_num_tokens`` in all: one token at a time from the longer
    segment, from its front or back at random (BERT: "to add more randomness and avoid biases")."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


@dataclasses.dataclass
class BertPretrainingPairs:
    """Builds [CLS] A [SEP] B [SEP] pairs from tokenized documents; usable with ``Dataset.map``.

    As a datasets transform it maps a batch whose ``column`` holds documents (each a list of
    sentence id lists) to a batch of pairs with a different number of rows, so remove the
    input columns::

        pairs = documents.map(BertPretrainingPairs(tokenizer, max_seq_length=128), batched=True,
                              with_indices=True, remove_columns=documents.column_names)

    Random "other documents" for NotNext come from the same map batch: a map function sees
    only its batch, and drawing from the whole corpus would need random access to all of it
    in every worker. Shuffle the documents first (and keep batches large, e.g. the default
    1000) so that a batch is a fair sample of the corpus. A batch holding a single document
    borrows the previous batch's documents.

    Randomness is a ``random.Random`` seeded from ``seed`` and the batch's first row index
    (``with_indices=True``) or, without indices, its first document's content, so results do
    not depend on ``num_proc`` or on the order batches are processed.
    """

    tokenizer: Any
    max_seq_length: int = 128
    nsp_probability: float = 0.5
    short_seq_probability: float = 0.1
    sentence_order: bool = False
    seed: int = 0
    column: str = "sentences"
    _previous_documents: Documents = dataclasses.field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.cls_token_id, self.sep_token_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        if self.cls_token_id is None or self.sep_token_id is None:
            raise InputError(
                f"tokenizer {type(self.tokenizer).__name__} needs a CLS and a SEP token to build BERT pairs "
                f"(cls_token={self.tokenizer.cls_token!r}, sep_token={self.tokenizer.sep_token!r})"
            )
        if self.max_seq_length < 5:
            raise InputError(f"max_seq_length: expected >= 5 ([CLS] A [SEP] B [SEP]), got {self.max_seq_length}")
        for name in ("nsp_probability", "short_seq_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)!r}")

    # -- datasets.map entry point ---------------------------------------------------------
    def __call__(self, batch: Mapping[str, Sequence[Any]], indices: Sequence[int] | None = None) -> dict[str, list]:
        if self.column not in batch:
            raise InputError(f"BERT pairs: the dataset has no column {self.column!r} (columns: {sorted(batch)})")
        documents = _clean_documents(batch[self.column], where=f"column {self.column!r}")
        if not documents:
            return {key: [] for key in _COLUMNS}
        first = indices[0] if indices is not None and len(indices) else zlib.crc32(repr(documents[0]).encode())
        rng = random.Random(f"{self.seed}-{first}")
        pool = documents if len(documents) > 1 else documents + self._previous_documents
        examples = self.pairs(pool, rng, num_documents=len(documents))
        self._previous_documents = documents
        return {key: [example[key] for example in examples] for key in _COLUMNS}

    # -- the algorithm ----------------------------------------------------------------------
    def pairs(self, documents: Documents, rng: random.Random, num_documents: int | None = None) -> list[dict]:
        """Pairs from the first ``num_documents`` of ``documents`` (default all); random Bs may come from any."""
        if len(documents) < 2 and not self.sentence_order:
            _too_few_documents(len(documents))
        examples = []
        for index in range(len(documents) if num_documents is None else num_documents):
            examples.extend(self._pairs_from_document(documents, index, rng))
        return examples

    def _pairs_from_document(self, documents: Documents, document_index: int, rng: random.Random) -> list[dict]:
        document = documents[document_index]
        max_num_tokens = self.max_seq_length - 3  # room for [CLS], [SEP], [SEP]
        # BERT: usually fill the sequence, sometimes (short_seq_probability) use a shorter one
        # to reduce the mismatch between pretraining and finetuning lengths.
        target_seq_length = max_num_tokens
        if rng.random() < self.short_seq_probability:
            target_seq_length = rng.randint(2, max_num_tokens)

        examples = []
        chunk: list[list[int]] = []
        chunk_length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_seq_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                is_random_next = not self.sentence_order and rng.random() < self.nsp_probability
                if not is_random_next and not tokens_b:
                    # A lone sentence: BERT would force a random B here; cutting it at a random
                    # token keeps B a true continuation and NotNext at nsp_probability.
                    if len(tokens_a) >= 2:
                        cut = rng.randint(1, len(tokens_a) - 1)
                        tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
                    else:
                        is_random_next = True  # one token cannot be cut: BERT's (and ALBERT's) rule
                if is_random_next:
                    tokens_b = self._random_next(documents, document_index, target_seq_length - len(tokens_a), rng)
                    label = 1
                    i -= len(chunk) - a_end  # BERT: put the unused sentences back so they are not wasted
                elif self.sentence_order and rng.random() < 0.5:
                    tokens_a, tokens_b = tokens_b, tokens_a
                    label = 1
                else:
                    label = 0
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                examples.append(self._example(tokens_a, tokens_b, label))
                chunk, chunk_length = [], 0
            i += 1
        return examples

    def _random_next(
        self, documents: Documents, document_index: int, target_b_length: int, rng: random.Random
    ) -> list[int]:
        if len(documents) < 2:
            _too_few_documents(len(documents))
        # BERT retries up to 10 times to avoid the current document and may still land on it;
        # drawing among the others directly makes "another document" exact.
        other = rng.randrange(len(documents) - 1)
        random_document = documents[other + (other >= document_index)]
        tokens_b: list[int] = []
        for sentence in random_document[rng.randrange(len(random_document)) :]:
            tokens_b.extend(sentence)
            if len(tokens_b) >= target_b_length:
                break
        return tokens_b

    def _example(self, tokens_a: list[int], tokens_b: list[int], label: int) -> dict:
        input_ids = [self.cls_token_id, *tokens_a, self.sep_token_id, *tokens_b, self.sep_token_id]
        token_type_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "next_sentence_label": label}


def _too_few_documents(count: int) -> None:
    raise InputError(
        f"BERT pairs: a random next segment must come from another document, but only {count} non-empty "
        "document(s) are available (in Dataset.map: the batch; use a larger batch_size)"
    )


def _require_list(value: Any, where: str, expected: str) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InputError(f"BERT pairs: {where}: expected {expected}, got {type(value).__name__}")


def _clean_documents(documents: Sequence[Any], where: str) -> Documents:
    """Documents as lists of non-empty sentence id lists; empty sentences and documents hold no
    tokens, so leaving them out loses nothing. Anything else than nested id lists is an error."""
    cleaned = []
    for d, document in enumerate(documents):
        _require_list(document, f"{where}, document {d}", "a list of tokenized sentences (lists of ids)")
        sentences = []
        for s, sentence in enumerate(document):
            _require_list(sentence, f"{where}, document {d}, sentence {s}", "a list of token ids")
            if len(sentence):
                sentences.append([int(t) for t in sentence])
        if sentences:
            cleaned.append(sentences)
    return cleaned


def create_bert_pretraining_pairs(
    documents: Sequence[Document],
    tokenizer: Any,
    max_seq_length: int = 128,
    nsp_probability: float = 0.5,
    short_seq_probability: float = 0.1,
    sentence_order: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """BERT (or, with ``sentence_order``, ALBERT) pretraining pairs from an in-memory corpus.

    documents: list of documents, each a list of sentences, each a list of token ids.
    Returns a list of examples ``{"input_ids", "token_type_ids", "next_sentence_label"}``, every
    one at most ``max_seq_length`` long, in document order; random next segments may come from
    any other document. See :class:`BertPretrainingPairs` for the streaming (datasets) form.
    """
    builder = BertPretrainingPairs(
        tokenizer, max_seq_length, nsp_probability, short_seq_probability, sentence_order, seed
    )
    return builder.pairs(_clean_documents(documents, where="documents"), random.Random(seed))
