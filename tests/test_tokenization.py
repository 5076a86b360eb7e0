"""Tokenizer training per family: specials and ids, T5 sentinel order, BERT segment ids, round trips
through AutoTokenizer, byte-level losslessness, vocabulary sizes, lazy input, file validation."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.errors import InputError
from hfpipe.tokenization import (
    T5_NUM_SENTINELS,
    iter_text_batches,
    sentinel_tokens,
    train_tokenizer,
    train_tokenizer_from_files,
)

VOCAB_SIZE = {"encoder": 800, "decoder": 800, "seq2seq": 600}
SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Return the number of items in the container, or -1 on failure!",
    "Unicode: naïve café, 東京, emoji 🙂, tabs\tand  double  spaces.",
    "",
]


@pytest.fixture(scope="module")
def corpus():
    # Real English prose: ~250 KB of standard-library docstrings (Unigram training time grows with text).
    return embedded_corpus(max_chars=250_000)


@pytest.fixture(scope="module")
def tokenizers(corpus):
    # Unigram (seq2seq) on less text: it is ~20x slower to train than WordPiece/BPE.
    return {
        family: train_tokenizer(iter(corpus[:200] if family == "seq2seq" else corpus), family, size)
        for family, size in VOCAB_SIZE.items()
    }


@pytest.mark.parametrize("family", list(VOCAB_SIZE))
def test_trained_vocabulary_has_exactly_the_asked_size(tokenizers, family):
    tokenizer = tokenizers[family]
    assert len(tokenizer) == VOCAB_SIZE[family]
    assert len(tokenizer.get_vocab()) == VOCAB_SIZE[family]
    assert max(tokenizer.get_vocab().values()) == VOCAB_SIZE[family] - 1  # ids are 0..V-1, no holes


def test_encoder_specials_pairs_and_lowercasing(tokenizers):
    tokenizer = tokenizers["encoder"]
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id) == (0, 1, 2)
    assert (tokenizer.sep_token_id, tokenizer.mask_token_id) == (3, 4)
    assert tokenizer.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    a, b = "Return the number of items.", "It may fail with an error."
    len_a, len_b = len(tokenizer.tokenize(a)), len(tokenizer.tokenize(b))
    pair = tokenizer(a, b)
    assert pair["input_ids"][0] == 2 and pair["input_ids"][len_a + 1] == 3 and pair["input_ids"][-1] == 3
    assert pair["token_type_ids"] == [0] * (len_a + 2) + [1] * (len_b + 1)
    single = tokenizer(a)
    assert single["input_ids"] == [2, *tokenizer.convert_tokens_to_ids(tokenizer.tokenize(a)), 3]
    assert single["token_type_ids"] == [0] * (len_a + 2)
    assert tokenizer.tokenize("RETURN The Number") == tokenizer.tokenize("return the number")  # uncased BERT
    assert any(token.startswith("##") for token in tokenizer.get_vocab())


def test_decoder_specials_and_no_eos_appended(tokenizers):
    tokenizer = tokenizers["decoder"]
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|pad|>"]) == [0, 1]
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == "<|endoftext|>"
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1)
    assert tokenizer.model_input_names == ["input_ids", "attention_mask"]
    ids = tokenizer("Return the value.")["input_ids"]
    assert ids == tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Return the value."))  # nothing added
    assert 0 not in ids
    assert tokenizer.tokenize("Return") != tokenizer.tokenize("return")  # cased by default
    assert tokenizer.tokenize(" the")[0] == "Ġthe"  # GPT-2's byte-level space marker


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_byte_level_bpe_decodes_any_unicode_back_exactly(tokenizers, text):
    tokenizer = tokenizers["decoder"]
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids or "<|endoftext|>" in text  # no byte is unknown
    assert tokenizer.decode(ids) == text


def test_seq2seq_specials_and_sentinels_count_down_from_the_top(tokenizers):
    tokenizer = tokenizers["seq2seq"]
    size = VOCAB_SIZE["seq2seq"]
    assert tokenizer.convert_tokens_to_ids(["<pad>", "</s>", "<unk>"]) == [0, 1, 2]
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    sentinels = sentinel_tokens()
    assert len(sentinels) == T5_NUM_SENTINELS
    assert tokenizer.convert_tokens_to_ids(sentinels) == list(range(size - 1, size - 1 - T5_NUM_SENTINELS, -1))
    assert list(tokenizer.extra_special_tokens) == sentinels
    assert set(sentinels) <= set(tokenizer.all_special_tokens)
    ids = tokenizer("The value <extra_id_0> returned <extra_id_1>.")["input_ids"]
    assert ids[-1] == 1 and ids.count(1) == 1  # "$A </s>"
    assert size - 1 in ids and size - 2 in ids  # sentinels stay single tokens
    assert tokenizer.decode(ids, skip_special_tokens=False) == "The value <extra_id_0> returned <extra_id_1>.</s>"


@pytest.mark.parametrize("family", list(VOCAB_SIZE))
def test_save_and_autotokenizer_round_trip(tokenizers, family, tmp_path):
    tokenizer = tokenizers[family]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(loaded) == len(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.all_special_tokens == tokenizer.all_special_tokens
    assert loaded.all_special_ids == tokenizer.all_special_ids
    assert loaded.model_input_names == tokenizer.model_input_names
    assert loaded(SAMPLES) == tokenizer(SAMPLES)
    assert loaded(SAMPLES[:2], SAMPLES[2:]) == tokenizer(SAMPLES[:2], SAMPLES[2:])
    ids = tokenizer(SAMPLES[2])["input_ids"]
    assert loaded.decode(ids) == tokenizer.decode(ids)
    if family == "seq2seq":
        assert list(loaded.extra_special_tokens) == sentinel_tokens()


def test_small_corpus_gives_fewer_tokens_never_more():
    # 3 distinct words: BPE runs out of pairs to merge long before 1,000 tokens.
    tokenizer = train_tokenizer(["low lower lowest"] * 50, "decoder", 1000)
    assert 256 + 2 <= len(tokenizer) < 1000
    tokenizer = train_tokenizer(["low lower lowest"] * 50, "encoder", 1000)
    assert len(tokenizer) < 1000
    # A tiny vocabulary: the WordPiece alphabet is capped so that characters and their "##" forms fit.
    tokenizer = train_tokenizer(embedded_corpus(max_chars=50_000), "encoder", 60)
    assert len(tokenizer) == 60


def test_training_from_a_generator_consumes_it_once_and_matches_a_list(corpus):
    texts = corpus[:300]
    pulled = []

    def stream():
        for text in texts:
            pulled.append(len(pulled))
            yield text

    generator = stream()
    from_generator = train_tokenizer(generator, "decoder", 500, batch_size=7)
    assert len(pulled) == len(texts)
    assert next(generator, None) is None  # exhausted: consumed once, never rewound
    from_list = train_tokenizer(texts, "decoder", 500)
    assert from_generator.get_vocab() == from_list.get_vocab()


def test_text_batches_are_pulled_lazily():
    endless = (f"text {i}" for i in itertools.count())
    batches = iter_text_batches(endless, 3)
    assert next(batches) == ["text 0", "text 1", "text 2"]
    assert next(batches) == ["text 3", "text 4", "text 5"]
    assert next(endless) == "text 6"  # nothing was read ahead
    assert [len(b) for b in iter_text_batches(map(str, range(10)), 4)] == [4, 4, 2]
    with pytest.raises(TypeError, match=r"texts\[4\] is NoneType"):
        list(iter_text_batches(["a", "b", "c", "d", None], 2))


def test_bad_family_and_vocab_sizes_are_input_errors():
    with pytest.raises(InputError, match="family 'gpt'.*encoder, decoder, seq2seq"):
        train_tokenizer(["a"], "gpt", 1000)
    with pytest.raises(InputError, match="vocab_size 200 .* >= 258"):
        train_tokenizer(["a"], "decoder", 200)
    with pytest.raises(InputError, match="vocab_size 50 .* >= 104"):
        train_tokenizer(["a"], "seq2seq", 50)
    # 26 distinct letters do not fit in 105 - 100 sentinels = 5 Unigram pieces.
    with pytest.raises(InputError, match="vocab_size 105 leaves 5 Unigram pieces"):
        train_tokenizer(["abcdefghijklmnopqrstuvwxyz"] * 3, "seq2seq", 105)


def test_train_from_files_saves_a_loadable_tokenizer(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(embedded_corpus(max_chars=60_000)) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    tokenizer = train_tokenizer_from_files([text], "encoder", 500, out)
    assert len(tokenizer) == 500
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    assert AutoTokenizer.from_pretrained(out)("A pair", "of texts") == tokenizer("A pair", "of texts")
    with pytest.raises(InputError, match="already holds a tokenizer.json"):
        train_tokenizer_from_files([text], "encoder", 500, out)


def test_train_from_files_names_the_file_and_byte_offset_of_bad_utf8(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("fine text\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    # "héllo\n" is 7 bytes (é is two), "\n" 1, "world\n" 6, "ab" 2: the stray 0xff is byte 16.
    bad.write_bytes("héllo\n\nworld\n".encode() + b"ab\xffcd\n")
    out = tmp_path / "tok"
    with pytest.raises(InputError, match=rf"{bad}: byte offset 16 is not valid UTF-8"):
        train_tokenizer_from_files([good, bad], "decoder", 300, out)
    assert not out.exists()  # validated before training
    with pytest.raises(InputError, match="does not exist"):
        train_tokenizer_from_files([tmp_path / "missing.txt"], "decoder", 300, out)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match="empty.txt is empty"):
        train_tokenizer_from_files([tmp_path / "empty.txt"], "decoder", 300, out)
