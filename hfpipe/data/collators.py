"""Every pretraining objective's data collator, importable from one place.

| objective                  | collator                              | examples it takes                     |
|----------------------------|---------------------------------------|---------------------------------------|
| BERT MLM (80/10/10) + NSP  | :class:`DataCollatorForBertPretraining` | pairs from :mod:`hfpipe.data.nsp`     |
| RoBERTa MLM (no NSP)       | :class:`DataCollatorForBertPretraining` | packed blocks (no next_sentence_label) |
| SpanBERT span MLM (no NSP) | :class:`~hfpipe.data.span_masking.DataCollatorForSpanMasking` | packed blocks, as RoBERTa MLM |
| GPT causal LM              | :class:`DataCollatorForCausalLM`      | packed blocks (:mod:`hfpipe.data.packing`) |
| T5 span corruption         | :class:`DataCollatorForSpanCorruption` | blocks of ``span_corruption_lengths(...)[0]`` |
| T5 prefix LM               | :class:`DataCollatorForPrefixLM`      | packed blocks                         |
| UL2 mixture of denoisers   | :class:`DataCollatorForUL2`           | blocks of ``ul2_lengths(...).block_length`` |

All return int64 torch tensors and ``labels`` with -100 where no loss is taken, as
transformers' Trainer and models expect. Masking reuses transformers'
``DataCollatorForLanguageModeling``; span corruption, NSP pairs and prefix LM have no
transformers counterpart and are written here; span masking and whole-word masking with
80/10/10 share one word-level masker in :mod:`hfpipe.data.word_masking`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

from hfpipe.data.packing import document_position_ids, document_separator, input_id_rows
from hfpipe.data.span_corruption import (
    DataCollatorForSpanCorruption,
    shift_right,
    span_corruption_lengths,
    worker_seed,
)
from hfpipe.data.ul2 import DataCollatorForUL2, ul2_lengths
from hfpipe.data.word_masking import WordSpanMasker
from hfpipe.errors import InputError

__all__ = [
    "DataCollatorForBertPretraining",
    "DataCollatorForCausalLM",
    "DataCollatorForPrefixLM",
    "DataCollatorForSpanCorruption",
    "DataCollatorForUL2",
    "span_corruption_lengths",
    "ul2_lengths",
]


def without_full_attention_mask(batch: dict) -> dict:
    """Drop ``attention_mask`` when no row is padded (packed causal-LM blocks): the model then takes the
    unmasked (flash) attention kernel, and the check costs nothing here, on the CPU, while in the
    model it would be a host sync every step."""
    if "attention_mask" in batch and bool(batch["attention_mask"].all()):
        del batch["attention_mask"]
    return batch




@dataclasses.dataclass
class DataCollatorForBertPretraining:
    """BERT masked LM (+ NSP/SOP labels) on [CLS] A [SEP] B [SEP] pairs, or MLM alone on blocks.

    Takes examples with ``input_ids`` and optionally ``token_type_ids`` and
    ``next_sentence_label`` (see :mod:`hfpipe.data.nsp`); returns (B, T) ``input_ids``,
    ``attention_mask``, ``token_type_ids``, ``labels`` (-100 where not predicted) and (B,)
    ``next_sentence_label`` when the examples carry it. T is the longest example, rounded up
    to ``pad_to_multiple_of``.

    Masking is transformers' ``DataCollatorForLanguageModeling.torch_mask_tokens``: each
    maskable token is chosen with ``mlm_probability``; of those, ``mask_replace_prob`` become
    [MASK], ``random_replace_prob`` a random vocabulary id, the rest stay. Special tokens and
    padding are never chosen (their mask is computed here with one vectorised ``isin``, not
    row by row). ``whole_word_mask`` chooses whole words instead, with the word-level masker of
    :mod:`hfpipe.data.word_masking` and spans of exactly one word: words are drawn until
    ``mlm_probability`` of the maskable tokens are chosen, and the 80/10/10 is decided per word
    (transformers' whole-word masking would replace every chosen word by [MASK]).
    ``seed`` as transformers: a private generator, else torch's global RNG.

    ``document_mask`` (packed blocks only, not NSP pairs): also return ``position_ids`` that
    restart at 0 after each [SEP] (``document_separator_id``), so that the model keeps attention
    and positions within each document of a block (see :func:`~hfpipe.data.packing.document_position_ids`).
    """

    tokenizer: Any
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_mask: bool = False
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    document_mask: bool = False
    document_separator_id: int | None = None

    def __post_init__(self) -> None:
        try:
            self._mlm = DataCollatorForLanguageModeling(
                self.tokenizer,
                mlm=True,
                mlm_probability=self.mlm_probability,
                mask_replace_prob=self.mask_replace_prob,
                random_replace_prob=self.random_replace_prob,
                pad_to_multiple_of=self.pad_to_multiple_of,
                seed=self.seed,
            )
        except ValueError as error:
            raise InputError(f"DataCollatorForBertPretraining: {error}") from None
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self._word_masker = self._make_word_masker() if self.whole_word_mask else None
        if self.document_mask and self.document_separator_id is None:
            self.document_separator_id = document_separator(self.tokenizer, "sep_token_id")

    def _make_word_masker(self):
        return WordSpanMasker(self.tokenizer, self.mlm_probability, self.mask_replace_prob,
                              self.random_replace_prob, max_span_length=1, seed=self.seed)

    def __call__(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> dict[str, torch.Tensor]:
        rows = input_id_rows(examples, "DataCollatorForBertPretraining")
        features = [{"input_ids": list(row)} for row in rows]
        for key in ("token_type_ids", "next_sentence_label"):
            if all(isinstance(example, Mapping) and key in example for example in examples):
                for feature, example in zip(features, examples):
                    feature[key] = example[key]
        batch = dict(
            pad_without_fast_tokenizer_warning(
                self.tokenizer, features, return_tensors="pt", return_attention_mask=True,
                pad_to_multiple_of=self.pad_to_multiple_of,
            )
        )
        input_ids = batch["input_ids"].long()
        batch.setdefault("token_type_ids", torch.zeros_like(input_ids))
        if self.document_mask:
            if "next_sentence_label" in batch:
                # A and B of a pair must see each other: the sentence-pair task is about exactly that.
                raise InputError("document_mask is for packed MLM blocks, not NSP/SOP sentence pairs")
            # from the ids before masking: random replacement may write the separator's id elsewhere
            batch["position_ids"] = document_position_ids(input_ids, self.document_separator_id)
        special_tokens_mask = torch.isin(input_ids, self._special_ids) | (batch["attention_mask"] == 0)
        if self._word_masker is not None:
            batch["input_ids"], batch["labels"] = self._word_masker(input_ids, special_tokens_mask)
            return batch
        if self.seed is not None and self._mlm.generator is None:
            self._mlm.create_rng()  # transformers does this in torch_call, which we bypass
        batch["input_ids"], batch["labels"] = self._mlm.torch_mask_tokens(
            input_ids, special_tokens_mask=special_tokens_mask
        )
        return batch


@dataclasses.dataclass
class DataCollatorForCausalLM(DataCollatorForLanguageModeling):
    """transformers' causal-LM collator (``mlm=False``), with labels masked by ``attention_mask``.

    transformers sets labels to -100 wherever ``input_ids == pad_token_id``; with the common
    GPT-2 set-up ``pad_token = eos_token`` that also erases every real EOS, and the model
    never learns to end a document. Here only padding positions get -100. Labels equal
    ``input_ids`` otherwise: the model shifts them by one.
    """

    mlm: bool = False
    document_mask: bool = False
    document_separator_id: int | None = None

    def __post_init__(self) -> None:
        if self.mlm:
            raise InputError("DataCollatorForCausalLM is for causal LM; use DataCollatorForBertPretraining for MLM")
        super().__post_init__()
        if self.document_mask and self.document_separator_id is None:
            self.document_separator_id = document_separator(self.tokenizer, "eos_token_id")

    def torch_call(self, examples: list[Any]) -> dict[str, Any]:
        rows = input_id_rows(examples, "DataCollatorForCausalLM")
        batch = dict(
            pad_without_fast_tokenizer_warning(
                self.tokenizer, [{"input_ids": list(row)} for row in rows],
                return_tensors="pt", return_attention_mask=True, pad_to_multiple_of=self.pad_to_multiple_of,
            )
        )
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        if self.document_mask:
            # Positions restart after each EOS; the model keeps attention within each document.
            # A document's first token is no longer predicted from the previous document's EOS
            # (as transformers' DataCollatorWithFlattening), so the loss is that of the documents
            # run one by one.
            position_ids = document_position_ids(batch["input_ids"], self.document_separator_id)
            batch["position_ids"] = position_ids
            batch["labels"] = batch["labels"].masked_fill(position_ids == 0, -100)
        return without_full_attention_mask(batch)


@dataclasses.dataclass
class DataCollatorForPrefixLM:
    """T5's prefix LM for encoder-decoders: each block is split at a uniformly random point.

    As T5's ``random_prefix_noise_mask``, a block of n tokens is cut after s tokens, s uniform
    in [1, n - 1]; returns

    - ``input_ids`` (B, S), ``attention_mask``: the prefix + EOS, right-padded; S = max s + 1
    - ``labels`` (B, U): the rest + EOS, -100 on padding; U = max (n - s) + 1
    - ``decoder_input_ids`` (B, U): labels shifted right behind ``decoder_start_token_id``
      (default: the pad id, as T5), padding as pad.

    Widths are rounded up to ``pad_to_multiple_of``. Randomness: a private torch generator
    from ``seed`` (offset by the DataLoader worker id), else torch's global RNG.
    """

    tokenizer: Any
    decoder_start_token_id: int | None = None
    pad_to_multiple_of: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise InputError(f"tokenizer {type(self.tokenizer).__name__} has no {name}: prefix LM needs one")
        if self.decoder_start_token_id is None:
            self.decoder_start_token_id = self.tokenizer.pad_token_id
        self._generator: torch.Generator | None = None

    def _round_up(self, width: int) -> int:
        multiple = self.pad_to_multiple_of or 1
        return -(-width // multiple) * multiple

    def __call__(self, examples: Sequence[Mapping[str, Any] | Sequence[int]]) -> dict[str, torch.Tensor]:
        rows = input_id_rows(examples, "DataCollatorForPrefixLM")
        lengths = torch.tensor([len(row) for row in rows])
        if (lengths < 2).any():
            i = int(torch.nonzero(lengths < 2)[0])
            raise InputError(f"prefix LM example {i}: needs at least 2 tokens to split, got {int(lengths[i])}")
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        tokens = torch.full((len(rows), int(lengths.max())), pad, dtype=torch.long)  # (B, T)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        if self.seed is not None and self._generator is None:
            self._generator = torch.Generator().manual_seed(worker_seed(self.seed))
        split = 1 + (torch.rand(len(rows), generator=self._generator) * (lengths - 1)).long()  # (B,) in [1, n-1]

        positions = torch.arange(self._round_up(int(split.max()) + 1))  # (S,)
        input_ids = torch.full((len(rows), len(positions)), pad, dtype=torch.long)
        width = min(len(positions), tokens.shape[1])
        prefix = positions[:width] < split[:, None]
        input_ids[:, :width] = torch.where(prefix, tokens[:, :width], pad)
        input_ids[positions == split[:, None]] = eos
        attention_mask = (positions <= split[:, None]).long()

        target_lengths = lengths - split  # (B,)
        steps = torch.arange(self._round_up(int(target_lengths.max()) + 1))  # (U,)
        source = (split[:, None] + steps).clamp(max=tokens.shape[1] - 1)
        labels = torch.where(steps < target_lengths[:, None], tokens.gather(1, source), -100)
        labels[steps == target_lengths[:, None]] = eos
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "decoder_input_ids": shift_right(labels, self.decoder_start_token_id, pad),
        }


class ReproducibleCollator:
    """Wraps a collator that draws from torch's global RNG so that each batch's draws depend
    only on the batch itself and ``seed``.

    Why: accelerate collates one batch ahead, so the RNG state a checkpoint saves already
    holds the next batch's masking draws, and a resumed run would mask differently from one
    that never stopped. Seeding each batch from its content (a hash of its token ids) makes
    the masks identical after resuming, across DataLoader workers, and in evaluation; with
    shuffling, batches differ from epoch to epoch, so masking stays dynamic (RoBERTa). The
    global RNG stream (dropout, data order) is left untouched (torch.random.fork_rng).
    """

    def __init__(self, collator, seed: int):
        self.collator = collator
        self.seed = seed

    def batch_seed(self, examples) -> int:
        digest = hashlib.blake2b(str(self.seed).encode(), digest_size=8)
        for ids in input_id_rows(examples, type(self.collator).__name__):
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(b"|")
        return int.from_bytes(digest.digest(), "little") & (2**63 - 1)

    def __call__(self, examples):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.batch_seed(examples))
            return self.collator(examples)
