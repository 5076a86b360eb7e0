"""The corpus pipeline: embedded corpus, file checks, .txt documents, column formats, validation
split, sentence splitting, cached tokenization; then the real texts in ../shared/data/text."""

import inspect
import itertools
import json
import logging
import math
import os

import pytest
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from hfpipe.data import corpus as corpus_module
from hfpipe.data.corpus import TxtStats, check_utf8, iter_txt_documents, load_text_dataset
from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.data.sentences import split_sentences
from hfpipe.data.tokenized import sentences_dataset, tokenize_dataset, tokenizer_fingerprint
from hfpipe.errors import InputError
from hfpipe.tokenization import train_tokenizer

LOGGER = "hfpipe.data.corpus"

# 8 lines: a BOM, a CRLF, two blank and one whitespace-only separator line, no final newline.
TXT_BYTES = (
    "\ufeffFirst document, line one.\nline two of the first.\n\n   \nSecond document.\r\n\n\n  Third, indented."
).encode("utf-8")
TXT_DOCUMENTS = ["First document, line one.\nline two of the first.", "Second document.", "  Third, indented."]


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer(embedded_corpus(max_chars=200_000), "encoder", 1000)


@pytest.fixture
def txt_file(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(TXT_BYTES)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# -- embedded corpus ---------------------------------------------------------------------------


def test_embedded_corpus_is_real_prose_of_the_expected_size():
    documents = embedded_corpus()
    total = sum(map(len, documents))
    assert len(documents) >= 5000 and 1_000_000 <= total <= 3_000_000  # 7,549 docs, 1.61 MB on 3.11.7
    assert all(document and document == document.strip() for document in documents)
    # Cleaned with inspect.cleandoc; a second pass changes only the few docstrings whose lines after
    # the first are all indented relative to it (3 on 3.11.7).
    assert sum(inspect.cleandoc(document) != document for document in documents) <= len(documents) // 1000
    words = sum(len(document.split()) for document in documents)
    assert 150_000 <= words <= 400_000
    the = sum(document.lower().split().count("the") for document in documents)
    assert 0.03 <= the / words <= 0.08  # "the" is ~5% of English words: prose, not code
    assert embedded_corpus() == documents  # deterministic
    documents.clear()  # callers get a copy: the cached corpus is untouched
    assert len(embedded_corpus()) >= 5000


def test_embedded_corpus_max_chars_keeps_whole_leading_documents():
    documents = embedded_corpus()
    kept = embedded_corpus(max_chars=100_000)
    assert kept == documents[: len(kept)]
    assert sum(map(len, kept)) <= 100_000 < sum(map(len, documents[: len(kept) + 1]))


# -- file checks -------------------------------------------------------------------------------


def test_check_utf8_offsets_do_not_depend_on_chunk_size(tmp_path):
    text = "aé€😀b" * 5  # characters of 1, 2, 3 and 4 bytes straddle every chunk boundary
    good = tmp_path / "good.txt"
    good.write_bytes(text.encode())
    bad = tmp_path / "bad.txt"
    bad.write_bytes(text.encode() + b"\xc3(" + b"tail")  # 0xc3 must be followed by a continuation byte
    truncated = tmp_path / "truncated.txt"
    truncated.write_bytes(b"ok\xe2\x82")
    offset = len(text.encode())  # 11 bytes per repeat: 55
    for chunk_bytes in range(1, 9):
        check_utf8(good, chunk_bytes)
        with pytest.raises(InputError, match=rf"bad.txt: byte offset {offset} is not valid UTF-8 \(invalid cont"):
            check_utf8(bad, chunk_bytes)
        with pytest.raises(InputError, match=r"byte offset 2 is not valid UTF-8 \(unexpected end of data\)"):
            check_utf8(truncated, chunk_bytes)


def test_file_problems_are_input_errors_naming_the_file(tmp_path, txt_file):
    with pytest.raises(InputError, match=r"data file .*missing.txt does not exist"):
        load_text_dataset(files=[tmp_path / "missing.txt"])
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.txt is empty"):
        load_text_dataset(files=[tmp_path / "empty.txt"])
    (tmp_path / "notes.md").write_text("# notes\n")
    with pytest.raises(InputError, match=r"notes.md: unknown extension '.md'"):
        load_text_dataset(files=[tmp_path / "notes.md"])
    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    with pytest.raises(InputError, match=r"mix formats: text \(.*docs.txt\), json \(.*a.jsonl\)"):
        load_text_dataset(files=[txt_file, jsonl])
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(InputError, match=r"hold no text, only blank lines"):
        load_text_dataset(files=[tmp_path / "blank.txt"], cache_dir=str(tmp_path / "cache"))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')  # Latin-1 é
    with pytest.raises(InputError, match=r"bad.jsonl: byte offset 28 is not valid UTF-8"):
        load_text_dataset(files=[bad])


# -- .txt documents ----------------------------------------------------------------------------


def test_txt_paragraphs_are_documents_and_blank_lines_are_counted(txt_file, tmp_path, caplog):
    stats = TxtStats()
    assert list(iter_txt_documents(txt_file, stats=stats)) == TXT_DOCUMENTS
    assert (stats.lines, stats.blank_lines, stats.documents) == (8, 4, 3)
    caplog.set_level(logging.INFO, logger=LOGGER)
    corpus = load_text_dataset(files=[txt_file], validation_split_percentage=0, cache_dir=str(tmp_path / "c"))
    assert list(corpus) == ["train"] and corpus["train"]["text"] == TXT_DOCUMENTS
    assert f"{txt_file}: 3 documents from 8 lines; skipped 4 empty lines" in caplog.messages


def test_txt_lines_as_documents(txt_file):
    stats = TxtStats()
    documents = list(iter_txt_documents(txt_file, sample_by="line", stats=stats))
    assert documents == ["First document, line one.", "line two of the first.", *TXT_DOCUMENTS[1:]]
    assert (stats.lines, stats.blank_lines, stats.documents) == (8, 4, 4)


def test_overlong_documents_name_the_file_and_line_or_row(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "MAX_DOCUMENT_BYTES", 20)
    paragraphs = tmp_path / "long.txt"
    paragraphs.write_text("short\n\n" + "x" * 15 + "\n" + "y" * 10 + "\n")  # 15 + 1 + 10 = 26 bytes
    with pytest.raises(InputError, match=r"long.txt: the document starting at line 3 is longer than 20 bytes"):
        load_text_dataset(files=[paragraphs])
    assert len(list(iter_txt_documents(paragraphs, sample_by="line"))) == 3  # each line fits
    one_line = tmp_path / "one_line.txt"
    one_line.write_text("ok\n" + "z" * 10_000)
    with pytest.raises(InputError, match=r"one_line.txt: the document starting at line 2"):
        list(iter_txt_documents(one_line, sample_by="line"))
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": "short"}, {"text": "é" * 15}])  # 30 bytes
    with pytest.raises(InputError, match=r"rows.jsonl: row 1 holds 30 bytes of text, more than 20"):
        load_text_dataset(files=[rows], cache_dir=str(tmp_path / "c"))


# -- column formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("extension", ["jsonl", "csv", "parquet"])
def test_column_files_keep_the_text_column_and_skip_blank_rows(tmp_path, extension, caplog):
    import pandas as pd

    rows = [{"id": i, "body": f"Document {i}."} for i in range(12)]
    rows[3]["body"], rows[7]["body"], rows[9]["body"] = "", "  \n\t", None
    path = tmp_path / f"rows.{extension}"
    frame = pd.DataFrame(rows)
    {"jsonl": lambda: write_jsonl(path, rows), "csv": lambda: frame.to_csv(path, index=False),
     "parquet": lambda: frame.to_parquet(path)}[extension]()
    caplog.set_level(logging.INFO, logger=LOGGER)
    corpus = load_text_dataset(files=[path], text_column="body", validation_split_percentage=0,
                               cache_dir=str(tmp_path / "c"))
    expected = [f"Document {i}." for i in range(12) if i not in (3, 7, 9)]
    assert corpus["train"].column_names == ["body"] and corpus["train"]["body"] == expected
    assert f"data file {path}: 9 rows; skipped 3 empty texts" in caplog.messages
    with pytest.raises(InputError, match=r"no column 'text'; found columns \['id', 'body'\]"):
        load_text_dataset(files=[path], cache_dir=str(tmp_path / "c"))
    with pytest.raises(InputError, match=r"column 'id' holds Value\('int64'\); expected strings"):
        load_text_dataset(files=[path], text_column="id", cache_dir=str(tmp_path / "c"))
    streamed = load_text_dataset(files=[path], text_column="body", streaming=True, cache_dir=str(tmp_path / "c"))
    assert [row["body"] for row in streamed["train"]] == expected


def test_compressed_and_tab_separated_files_read_as_their_format(tmp_path):
    """IMDB's .jsonl.xz, a Wikipedia dump's .txt.xz, GLUE's .tsv (unbalanced quotes: no quoting) as they are."""
    import bz2
    import gzip
    import lzma

    rows = [{"id": i, "text": f"Review {i}: \"great\" film."} for i in range(6)]
    jsonl = "".join(json.dumps(row) + "\n" for row in rows).encode()
    for name, opener in (("r.jsonl.xz", lzma.open), ("r.jsonl.gz", gzip.open), ("r.jsonl.bz2", bz2.open)):
        with opener(tmp_path / name, "wb") as file:
            file.write(jsonl)
        read = load_text_dataset(files=[tmp_path / name], validation_split_percentage=0, cache_dir=str(tmp_path / "c"))
        assert read["train"]["text"] == [row["text"] for row in rows], name
    with lzma.open(tmp_path / "wiki.txt.xz", "wb") as file:
        file.write(TXT_BYTES)
    read = load_text_dataset(files=[tmp_path / "wiki.txt.xz"], validation_split_percentage=0,
                             cache_dir=str(tmp_path / "c"))
    assert read["train"]["text"] == TXT_DOCUMENTS
    tsv = tmp_path / "train.tsv"
    tsv.write_text('sentence\tlabel\nit \'s a " charming journey \t1\nno wit , only labored gags \t0\n')
    read = load_text_dataset(files=[tsv], text_column="sentence", validation_split_percentage=0,
                             cache_dir=str(tmp_path / "c"))
    assert read["train"]["sentence"] == ['it \'s a " charming journey ', "no wit , only labored gags "]
    with lzma.open(tmp_path / "bad.txt.xz", "wb") as file:
        file.write(b"fine\n\xff\n")
    with pytest.raises(InputError, match=r"bad.txt.xz: byte offset 5 .* not valid UTF-8"):
        load_text_dataset(files=[tmp_path / "bad.txt.xz"], cache_dir=str(tmp_path / "c"))
    (tmp_path / "notes.doc.xz").write_bytes(lzma.compress(b"x"))
    with pytest.raises(InputError, match=r"notes.doc.xz: unknown extension '.doc'; expected one of .*\.tsv.*\.xz"):
        load_text_dataset(files=[tmp_path / "notes.doc.xz"], cache_dir=str(tmp_path / "c"))


def test_unparsable_json_is_an_input_error(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(InputError, match=r"broken.jsonl cannot be read as json"):
        load_text_dataset(files=[path], cache_dir=str(tmp_path / "c"))


# -- splits ------------------------------------------------------------------------------------


def test_validation_split_is_a_seeded_disjoint_percentage(tmp_path):
    documents = [f"Document number {i}." for i in range(40)]
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in documents])
    cache = str(tmp_path / "c")
    corpus = load_text_dataset(files=[path], seed=1, cache_dir=cache)
    assert isinstance(corpus, DatasetDict) and (len(corpus["train"]), len(corpus["validation"])) == (38, 2)
    assert sorted([*corpus["train"]["text"], *corpus["validation"]["text"]]) == sorted(documents)
    again = load_text_dataset(files=[path], seed=1, cache_dir=cache)
    assert list(again["validation"]["text"]) == list(corpus["validation"]["text"])
    assert len(load_text_dataset(files=[path], validation_split_percentage=12.5, cache_dir=cache)["validation"]) == 5
    assert len(load_text_dataset(files=[path], validation_split_percentage=1, cache_dir=cache)["validation"]) == 1
    assert list(load_text_dataset(files=[path], validation_split_percentage=0, cache_dir=cache)) == ["train"]
    held_out = write_jsonl(tmp_path / "held_out.jsonl", [{"text": "Held out one."}, {"text": "Held out two."}])
    corpus = load_text_dataset(files=[path], validation_files=[held_out], cache_dir=cache)
    assert len(corpus["train"]) == 40 and corpus["validation"]["text"] == ["Held out one.", "Held out two."]
    with pytest.raises(InputError, match=r"validation_split_percentage: expected a number in \[0, 100\)"):
        load_text_dataset(files=[path], validation_split_percentage=100)
    single = write_jsonl(tmp_path / "single.jsonl", [{"text": "Only one."}])
    with pytest.raises(InputError, match=r"1 documents cannot give 5% for validation"):
        load_text_dataset(files=[single], cache_dir=cache)


def test_no_source_means_the_embedded_corpus():
    total = len(embedded_corpus())
    corpus = load_text_dataset()
    assert len(corpus["validation"]) == math.ceil(total * 5 / 100)
    assert len(corpus["train"]) + len(corpus["validation"]) == total
    streamed = load_text_dataset(streaming=True)
    assert isinstance(streamed, IterableDatasetDict) and list(streamed) == ["train"]
    assert [row["text"] for row in itertools.islice(streamed["train"], 3)] == embedded_corpus()[:3]


def test_streaming_txt_gives_the_same_documents(txt_file, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    streamed = load_text_dataset(files=[txt_file], streaming=True)
    assert isinstance(streamed["train"], IterableDataset)
    assert [row["text"] for row in streamed["train"]] == TXT_DOCUMENTS
    assert f"{txt_file}: 3 documents from 8 lines; skipped 4 empty lines" in caplog.messages


# -- sentences ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Mr. Smith went to Washington. He arrived at 3.30 p.m. on Monday.",
         ["Mr. Smith went to Washington.", "He arrived at 3.30 p.m. on Monday."]),
        ("Use a list, e.g. a tuple. Then call it.", ["Use a list, e.g. a tuple.", "Then call it."]),
        ("The value is 3.14. It is pi.", ["The value is 3.14.", "It is pi."]),
        ("Dr. J. R. R. Tolkien wrote it. Really? Yes! See No. 5 in Fig. 2 for details.",
         ["Dr. J. R. R. Tolkien wrote it.", "Really?", "Yes!", "See No. 5 in Fig. 2 for details."]),
        ('"Stop." She left.', ['"Stop."', "She left."]),
        ("He lives in the U.S. and works at Acme Inc. The firm grew.",
         ["He lives in the U.S. and works at Acme Inc.", "The firm grew."]),
        ("I said no. Then I left. It was Jan. 5 (a Monday).",
         ["I said no.", "Then I left.", "It was Jan. 5 (a Monday)."]),
        ("Title\n\nBody text, wrapped\nover two lines. Next one.",
         ["Title", "Body text, wrapped\nover two lines.", "Next one."]),
        ("Wait... What happened? nothing much.", ["Wait...", "What happened? nothing much."]),
        ("  \n ", []),
    ],
)
def test_split_sentences_hand_cases(text, sentences):
    assert split_sentences(text) == sentences


def test_split_sentences_loses_no_characters_on_real_text():
    for document in embedded_corpus()[:1500]:
        sentences = split_sentences(document)
        assert "".join(document.split()) == "".join("".join(s.split()) for s in sentences)
        assert all(s == s.strip() and s for s in sentences)


# -- tokenization ------------------------------------------------------------------------------


def test_tokenize_dataset_ids_and_cache_hit(wordpiece, tmp_path, caplog):
    documents = ["First document here.", "A second, longer document with more words in it.", "Third."]
    dataset = Dataset.from_dict({"text": documents, "source": ["a", "b", "c"]})
    first = tokenize_dataset(dataset, wordpiece, cache_dir=str(tmp_path))
    assert first.column_names == ["input_ids"] and str(first.features["input_ids"].feature.dtype) == "int32"
    assert first["input_ids"] == wordpiece(documents, add_special_tokens=False)["input_ids"]
    cache_file = first.cache_files[0]["filename"]
    assert os.path.dirname(cache_file) == str(tmp_path / "hfpipe")
    modified = os.stat(cache_file).st_mtime_ns
    caplog.set_level(logging.INFO, logger="datasets")
    second = tokenize_dataset(dataset, wordpiece, cache_dir=str(tmp_path))
    assert any(m.startswith("Loading cached processed dataset") for m in caplog.messages)  # not re-tokenised
    assert second.cache_files[0]["filename"] == cache_file and os.stat(cache_file).st_mtime_ns == modified
    assert second["input_ids"] == first["input_ids"]
    framed = tokenize_dataset(dataset, wordpiece, add_special_tokens=True, cache_dir=str(tmp_path))
    assert framed.cache_files[0]["filename"] != cache_file
    for ids, plain in zip(framed["input_ids"], first["input_ids"]):
        assert ids == [2, *plain, 3]
    other = train_tokenizer(embedded_corpus(max_chars=50_000), "encoder", 300)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(wordpiece)
    assert tokenize_dataset(dataset, other, cache_dir=str(tmp_path)).cache_files[0]["filename"] != cache_file
    with pytest.raises(InputError, match=r"no column 'body'"):
        tokenize_dataset(dataset, wordpiece, text_column="body")


def test_tokenize_file_backed_splits_and_streams(wordpiece, txt_file, tmp_path, caplog):
    corpus = load_text_dataset(files=[txt_file], validation_split_percentage=34, cache_dir=str(tmp_path / "c"))
    tokenized = tokenize_dataset(corpus, wordpiece)
    assert isinstance(tokenized, DatasetDict) and (len(tokenized["train"]), len(tokenized["validation"])) == (1, 2)
    assert tokenized["validation"].cache_files[0]["filename"].startswith(str(tmp_path / "c"))  # next to the corpus
    caplog.set_level(logging.INFO, logger="datasets")
    again = tokenize_dataset(corpus, wordpiece)
    assert sum(m.startswith("Loading cached processed dataset") for m in caplog.messages) == 2  # both splits
    assert again["train"]["input_ids"] == tokenized["train"]["input_ids"]
    streamed = tokenize_dataset(load_text_dataset(files=[txt_file], streaming=True), wordpiece)
    expected = wordpiece(TXT_DOCUMENTS, add_special_tokens=False)["input_ids"]
    assert [row["input_ids"] for row in streamed["train"]] == expected


def test_sentences_dataset_gives_tokenized_sentences_per_document(wordpiece, tmp_path):
    documents = ["First one here. Second one, e.g. with an abbreviation. Third!", "Alone"]
    dataset = Dataset.from_dict({"text": documents})
    result = sentences_dataset(dataset, wordpiece, cache_dir=str(tmp_path))
    assert result.column_names == ["sentences"]
    expected = [wordpiece(split_sentences(d), add_special_tokens=False)["input_ids"] for d in documents]
    assert [len(d) for d in expected] == [3, 1]
    assert result["sentences"] == expected


# -- the real texts in ../shared/data/text ------------------------------------------------------


@pytest.mark.parametrize("name", ["war_and_peace.txt", "wikitext2-tokenized-valid.txt", "tinyshakespeare.txt"])
def test_shared_texts_documents_match_an_independent_count(shared_data, name, tmp_path):
    path = shared_data / "text" / name
    text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    lines = text.splitlines()
    # Independent rule: groupby over "is the line blank?"; every non-blank run is one document.
    runs = [list(group) for blank, group in itertools.groupby(lines, key=lambda l: not l.strip()) if not blank]
    corpus = load_text_dataset(files=[path], validation_split_percentage=0, cache_dir=str(tmp_path))
    documents = corpus["train"]["text"]
    assert len(documents) == len(runs)
    assert documents[:50] == ["\n".join(run) for run in runs[:50]]
    assert sum(len(d.split()) for d in documents) == len(text.split())  # no word lost or merged
    assert "".join("".join(d.split()) for d in documents) == "".join(text.split())


def test_shared_wiki_sentences_partition_the_document_tokens(shared_data, wordpiece, tmp_path):
    # BERT pre-tokenisation splits at white space, where sentences end: a document's tokens are
    # exactly its sentences' tokens, in order.
    corpus = load_text_dataset(files=[shared_data / "text" / "wiki_00.txt"], validation_split_percentage=0,
                               cache_dir=str(tmp_path))
    assert len(corpus["train"]) == 116
    tokens = tokenize_dataset(corpus["train"], wordpiece)["input_ids"]
    sentences = sentences_dataset(corpus["train"], wordpiece)["sentences"]
    assert [sum(document, []) for document in sentences] == tokens
    counts = [len(document) for document in sentences]
    assert sum(counts) == 515 and max(counts) == 24  # real multi-sentence paragraphs
