"""Train the tokenizer of each model family with the `tokenizers` library.

    encoder  -> BERT:  WordPiece, BERT normaliser, [PAD] [UNK] [CLS] [SEP] [MASK] = ids 0..4,
                       "[CLS] A [SEP]" / "[CLS] A [SEP] B [SEP]" with token_type_ids
    decoder  -> GPT-2: byte-level BPE, <|endoftext|> = bos/eos/unk (id 0), <|pad|> (id 1)
    seq2seq  -> T5:    Unigram + Metaspace, <pad>=0 </s>=1 <unk>=2, then <extra_id_99>..<extra_id_0>
                       at the top of the vocabulary (<extra_id_0> is the highest id); "A </s>"

`vocab_size` is the size of the whole vocabulary, ``len(tokenizer)``, special tokens and T5's 100
sentinels included (T5's 32,100 = 32,000 Unigram pieces + 100 sentinels). A corpus too small to
yield that many pieces gives fewer (``len(tokenizer) <= vocab_size``); never more.

Texts are fed to ``Tokenizer.train_from_iterator`` in batches pulled lazily from any iterable of
strings (a generator, a datasets column, a streaming dataset), so corpora larger than memory work.

    python -c "from hfpipe.tokenization import train_tokenizer; print(train_tokenizer(['a b'] * 9, 'decoder', 300))"
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from hfpipe.errors import InputError

logger = logging.getLogger(__name__)

FAMILIES = ("encoder", "decoder", "seq2seq")

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, in this order
GPT2_EOS_TOKEN = "<|endoftext|>"
GPT2_PAD_TOKEN = "<|pad|>"  # GPT-2 has no pad token; batching needs one distinct from EOS
T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5's sentencepiece model
T5_NUM_SENTINELS = 100
BYTE_LEVEL_ALPHABET_SIZE = len(pre_tokenizers.ByteLevel.alphabet())  # 256
BERT_LIMIT_ALPHABET = 1000  # as the BertWordPieceTokenizer recipe of `tokenizers`


def sentinel_tokens(num_sentinels: int = T5_NUM_SENTINELS) -> list[str]:
    """T5's sentinels ``<extra_id_0>`` .. ``<extra_id_{n-1}>``, in id order once added (see `_train_unigram`)."""
    return [f"<extra_id_{i}>" for i in range(num_sentinels)]


def iter_text_batches(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    """Lists of at most `batch_size` strings pulled lazily from `texts` (never the whole iterable at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    iterator = iter(texts)
    seen = 0
    while batch := list(islice(iterator, batch_size)):
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"texts[{seen + i}] is {type(text).__name__}; expected str")
        seen += len(batch)
        yield batch


def train_tokenizer(
    texts: Iterable[str],
    family: str,
    vocab_size: int,
    min_frequency: int = 2,
    batch_size: int = 1000,
    lowercase: bool | None = None,
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """Train the `family`'s tokenizer on `texts` and wrap it for transformers.

    Args:
        texts: any iterable of strings (documents or lines); consumed once, `batch_size` at a time.
        family: "encoder" (WordPiece), "decoder" (byte-level BPE) or "seq2seq" (Unigram).
        vocab_size: total vocabulary size, ``len(tokenizer)``, specials and sentinels included.
        min_frequency: pairs seen fewer times are not merged (WordPiece, BPE; Unigram ignores it).
        lowercase: None = the family's convention (uncased BERT; cased GPT-2 and T5).
        model_max_length: stored in tokenizer_config.json (None = unbounded, as transformers' default).
    """
    if family not in FAMILIES:
        raise InputError(f"tokenizer family {family!r} is unknown; expected one of {', '.join(FAMILIES)}")
    if lowercase is None:
        lowercase = family == "encoder"
    train = {"encoder": _train_wordpiece, "decoder": _train_byte_level_bpe, "seq2seq": _train_unigram}[family]
    tokenizer = train(iter_text_batches(texts, batch_size), vocab_size, min_frequency, lowercase)
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    if len(tokenizer) > vocab_size:  # the trainers promise this never happens; a silent overflow would break models
        raise RuntimeError(f"trained {family} vocabulary: {len(tokenizer)} tokens > vocab_size={vocab_size}")
    if len(tokenizer) < vocab_size:
        logger.warning("the corpus yielded a %s vocabulary of %d tokens, fewer than vocab_size=%d",
                       family, len(tokenizer), vocab_size)
    return tokenizer


def _require_vocab_size(family: str, vocab_size: int, minimum: int, why: str) -> None:
    if vocab_size < minimum:
        raise InputError(
            f"vocab_size {vocab_size} is too small for the {family} tokenizer; expected >= {minimum} ({why})"
        )


def _train_wordpiece(
    batches: Iterator[list[str]], vocab_size: int, min_frequency: int, lowercase: bool
) -> PreTrainedTokenizerFast:
    """BERT: WordPiece with "##" continuations, [CLS] A [SEP] B [SEP] and segment ids 0/1."""
    _require_vocab_size("encoder", vocab_size, len(BERT_SPECIAL_TOKENS) + 2, "5 special tokens and an alphabet")
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BERT_SPECIAL_TOKENS),
        # Each kept character may also enter as "##c": cap the alphabet so the two never exceed vocab_size.
        limit_alphabet=min(BERT_LIMIT_ALPHABET, (vocab_size - len(BERT_SPECIAL_TOKENS)) // 2),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    backend.train_from_iterator(batches, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
        clean_up_tokenization_spaces=True,  # as BertTokenizer: "a , b" -> "a, b" on decode
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _train_byte_level_bpe(
    batches: Iterator[list[str]], vocab_size: int, min_frequency: int, lowercase: bool
) -> PreTrainedTokenizerFast:
    """GPT-2: byte-level BPE, so any Unicode string encodes without <unk> and decodes back exactly.

    The post-processor adds no EOS (as GPT-2): `hfpipe.data.packing.pack_sequences` puts EOS between
    documents when it concatenates them, and generation prompts must not end in EOS.
    """
    num_special = 2
    _require_vocab_size("decoder", vocab_size, BYTE_LEVEL_ALPHABET_SIZE + num_special, "256 bytes + 2 special tokens")
    backend = Tokenizer(models.BPE())
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[GPT2_EOS_TOKEN, GPT2_PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in the corpus or not
        show_progress=False,
    )
    backend.train_from_iterator(batches, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=GPT2_EOS_TOKEN,
        eos_token=GPT2_EOS_TOKEN,
        unk_token=GPT2_EOS_TOKEN,
        pad_token=GPT2_PAD_TOKEN,
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,  # keep decode(encode(text)) == text
        model_input_names=["input_ids", "attention_mask"],
    )


def _train_unigram(
    batches: Iterator[list[str]], vocab_size: int, min_frequency: int, lowercase: bool
) -> PreTrainedTokenizerFast:
    """T5: Unigram over Metaspace pieces; 100 sentinels take the top ids; "$A </s>"."""
    num_pieces = vocab_size - T5_NUM_SENTINELS
    minimum = T5_NUM_SENTINELS + len(T5_SPECIAL_TOKENS) + 1
    _require_vocab_size("seq2seq", vocab_size, minimum, "100 sentinels + 3 specials + 1 piece")
    backend = Tokenizer(models.Unigram())
    # T5's sentencepiece normalisation (nmt_nfkc, squeezed spaces); lower-casing only when asked.
    steps = [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    backend.normalizer = normalizers.Sequence(steps + [normalizers.Lowercase()] if lowercase else steps)
    # "first": no "▁" is prepended to the text that follows a sentinel, so "<extra_id_0>." decodes as written.
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=num_pieces,
        special_tokens=list(T5_SPECIAL_TOKENS),
        unk_token="<unk>",
        show_progress=False,
    )
    try:
        backend.train_from_iterator(batches, trainer=trainer)
    except Exception as error:  # tokenizers raises a bare Exception for this user-input problem
        if "not large enough to contain all chars" not in str(error):
            raise
        raise InputError(
            f"vocab_size {vocab_size} leaves {num_pieces} Unigram pieces after the {T5_NUM_SENTINELS} sentinels, "
            "fewer than the corpus has distinct characters; expected a larger vocab_size"
        ) from error
    # Added in reverse so that <extra_id_0> gets the highest id, as in T5's vocabulary.
    sentinels = sentinel_tokens()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in reversed(sentinels)])
    eos_id = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=sentinels,  # transformers 5's name for additional_special_tokens
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )


def train_tokenizer_from_files(
    files: Sequence[str | Path],
    family: str,
    vocab_size: int,
    out_dir: str | Path,
    min_frequency: int = 2,
    batch_size: int = 1000,
    lowercase: bool | None = None,
    text_column: str = "text",
    overwrite: bool = False,
) -> PreTrainedTokenizerFast:
    """`hfpipe tokenizer train`: validate `files`, stream their documents into `train_tokenizer`, save to `out_dir`.

    Files are read by `hfpipe.data.corpus.load_text_dataset` (.txt: blank-line-separated paragraphs are
    documents; .jsonl/.json/.csv/.parquet: the `text_column`), which checks each file exists, is non-empty
    and is UTF-8 (InputError naming the file and byte offset) before any training starts.
    """
    from hfpipe.data.corpus import load_text_dataset  # lazy: keeps `import hfpipe.tokenization` light

    if family not in FAMILIES:
        raise InputError(f"tokenizer family {family!r} is unknown; expected one of {', '.join(FAMILIES)}")
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").exists() and not overwrite:
        raise InputError(f"{out_dir} already holds a tokenizer.json; expected a new output directory")
    documents = load_text_dataset(
        files=[str(f) for f in files], text_column=text_column, streaming=True, validation_split_percentage=0
    )["train"]
    texts = (text for batch in documents.iter(batch_size=batch_size) for text in batch[text_column])
    tokenizer = train_tokenizer(texts, family, vocab_size, min_frequency, batch_size, lowercase)
    tokenizer.save_pretrained(out_dir)
    logger.info("saved a %s tokenizer of %d tokens to %s", family, len(tokenizer), out_dir)
    return tokenizer
