"""Tiny tokenizers built on the fly with the `tokenizers` library (no download).

- ``bert_tokenizer``: WordPiece, [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then 600 words
  ``w0``..``w599`` (ids 5..604) and 400 continuation pieces ``##p0``..``##p399`` (605..1004).
- ``t5_tokenizer``: WordLevel, <pad>=0 </s>=1 <unk>=2, then 197 words ``w0``..``w196``
  (ids 3..199) and 100 sentinels ``<extra_id_99>``..``<extra_id_0>`` (ids 200..299), added
  last so that ``<extra_id_0>`` is the highest id, as in T5.
"""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_WORDS = [f"w{i}" for i in range(600)]
BERT_PIECES = [f"##p{i}" for i in range(400)]

T5_SPECIALS = ["<pad>", "</s>", "<unk>"]
T5_WORDS = [f"w{i}" for i in range(197)]
T5_SENTINELS = [f"<extra_id_{i}>" for i in range(99, -1, -1)]


def _fixed_vocab_tokenizer(model, pre_tokenizer, **special_tokens) -> PreTrainedTokenizerFast:
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)


def make_bert_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(BERT_SPECIALS + BERT_WORDS + BERT_PIECES)}
    roles = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    return _fixed_vocab_tokenizer(
        models.WordPiece(vocab=vocab, unk_token="[UNK]"), pre_tokenizers.BertPreTokenizer(),
        **dict(zip(roles, BERT_SPECIALS)),
    )


def make_t5_tokenizer(sentinels: list[str] = T5_SENTINELS) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(T5_SPECIALS + T5_WORDS + sentinels)}
    roles = ("pad_token", "eos_token", "unk_token")
    return _fixed_vocab_tokenizer(
        models.WordLevel(vocab=vocab, unk_token="<unk>"), pre_tokenizers.WhitespaceSplit(),
        extra_special_tokens=list(reversed(sentinels)), **dict(zip(roles, T5_SPECIALS)),
    )


@pytest.fixture(scope="session")
def bert_tokenizer() -> PreTrainedTokenizerFast:
    return make_bert_tokenizer()


@pytest.fixture(scope="session")
def t5_tokenizer() -> PreTrainedTokenizerFast:
    return make_t5_tokenizer()
