"""Small real-text GLUE and SQuAD stand-ins built from the embedded corpus, for ``--smoke`` and the demo.

    from hfpipe.tasks.embedded import embedded_glue, embedded_squad
    ds = embedded_glue("mrpc")            # DatasetDict train (256) / validation (64), load_glue's features
    qa = embedded_squad(version="v2")     # DatasetDict train (128) / validation (32), SQUAD_FEATURES
    sft = embedded_sft()                  # (instruction, response) pairs, train (256) / validation (64)

GLUE and SQuAD cannot ship in the repository and the Hub may be unreachable, so these tasks are
SYNTHETIC: their texts are real sentences (Python standard-library docstrings, from
``hfpipe.data.embedded_corpus.embedded_corpus``), but their labels come from how the sentences were put
together, not from human annotation. Each task keeps the exact columns, dtypes, label order and
split names of ``load_glue`` / ``load_squad``, so any recipe runs on them unchanged. The label of
every example follows from one "relation" between its texts:

- cola, sst2 (one sentence): ``original`` (label 1: acceptable / positive) is a corpus sentence;
  ``shuffled`` (label 0: unacceptable / negative) is the same sentence with its words in a random
  order (capital letter and final punctuation kept in place, so only word order tells them apart).
- mrpc, qqp, rte, wnli, qnli (pairs): ``next`` (equivalent / duplicate / entailment) pairs a
  sentence with the sentence that follows it in its docstring; ``other_document`` (the negative
  class) pairs it with a sentence of another docstring. Fields named ``question*`` (qqp, qnli) get
  the sentence as a question: its final punctuation replaced by "?".
- mnli: ``next`` = entailment, ``same_document`` = neutral (same docstring, 2 to 4 sentences
  apart), ``other_document`` = contradiction.
- stsb: sentence2 is sentence1 with each word dropped or replaced by a corpus word with
  probability p ~ U(0, 1); the score is 5 x the Jaccard similarity of the two lowercased word sets.

Classes are balanced (counts differ by at most one), every split is deterministic for a seed, and
training and evaluation splits come from disjoint docstrings (MNLI's matched and mismatched
validation sets from two further disjoint sets; the corpus has one genre, so "mismatched" is only a
held-out set of documents). ``idx`` numbers the rows 0..n-1 as in a GLUE file.

SQuAD: the context is a paragraph of 2 to 4 consecutive docstring sentences; the question is a
cloze, ``What follows "<five words of the context>" in the text?``, and the answer is the next one
to three words (a real span: ``context[answer_start:]`` starts with it). With ``version="v2"`` a
third of the questions quote five words from another docstring that do not occur in the context;
their ``answers`` lists are empty.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import datasets

from hfpipe.data.embedded_corpus import embedded_corpus
from hfpipe.data.sentences import split_sentences
from hfpipe.errors import InputError
from hfpipe.tasks.glue_tasks import get_glue_task, glue_features
from hfpipe.tasks.squad_format import SQUAD_FEATURES, squad_version

__all__ = ["embedded_glue", "embedded_squad", "shuffle_words", "word_jaccard"]

# The leading docstrings used (~1/3 of the corpus, ~4,000 clean sentences): plenty for tasks of a few
# hundred rows, and a third of the sentence-splitting time.
CORPUS_CHARS = 500_000

# A "clean" sentence is prose: starts with a capital, ends with . ! or ?, 5 to 40 words, mostly
# plain words. Docstrings also hold code, signatures and tables, which would make shuffled and
# real sentences look alike and cloze answers meaningless.
MIN_WORDS = 5
MAX_WORDS = 40
MIN_PLAIN_WORD_FRACTION = 0.8
_PLAIN_WORD = re.compile(r"[(\"']?[A-Za-z][A-Za-z'-]*[.,;:!?)\"']*")
_WORD = re.compile(r"\w+")

# GLUE class name -> the relation between the texts that an example of that class shows.
_RELATION_OF_LABEL = {
    "acceptable": "original", "positive": "original",
    "unacceptable": "shuffled", "negative": "shuffled",
    "equivalent": "next", "duplicate": "next", "entailment": "next",
    "neutral": "same_document",
    "not_equivalent": "other_document", "not_duplicate": "other_document",
    "not_entailment": "other_document", "contradiction": "other_document",
}
# Sentence distance for MNLI's neutral class: same document, never adjacent.
_NEUTRAL_DISTANCES = (2, 3, 4)
_SHUFFLE_TRIES = 20

# SQuAD cloze: a cue of this many context words, then an answer of 1..MAX_ANSWER_WORDS words.
CUE_WORDS = 5
MAX_ANSWER_WORDS = 3
UNANSWERABLE_EVERY = 3  # v2: one question in three has no answer
_ANSWER_STRIP = ".,;:!?()\"'"


# ----------------------------------------------------------------------------------------------
# The sentence pools


@dataclass(frozen=True)
class _SentencePool:
    """The clean sentences of a set of docstrings.

    runs: (document id, sentences) for each stretch of consecutive clean sentences of a document
        (a filtered-out sentence breaks a run, so neighbours within a run were neighbours in the text).
    sentences: (document id, sentence) for every clean sentence.
    next_pairs: (sentence, the sentence right after it).
    far_pairs: (sentence, a sentence of the same run _NEUTRAL_DISTANCES after it).
    vocabulary: the distinct words of the sentences (STS-B's replacement words).
    """

    runs: tuple[tuple[int, tuple[str, ...]], ...]
    sentences: tuple[tuple[int, str], ...]
    next_pairs: tuple[tuple[str, str], ...]
    far_pairs: tuple[tuple[str, str], ...]
    vocabulary: tuple[str, ...]

    @classmethod
    def from_documents(cls, documents: Sequence[tuple[int, str]]) -> _SentencePool:
        runs = [run for doc_id, text in documents for run in _clean_runs(doc_id, text)]
        sentences = [(doc_id, s) for doc_id, run in runs for s in run]
        next_pairs = [(run[i], run[i + 1]) for _, run in runs for i in range(len(run) - 1)]
        far_pairs = [(run[i], run[i + d]) for _, run in runs for d in _NEUTRAL_DISTANCES for i in range(len(run) - d)]
        vocabulary = sorted({word for _, s in sentences for word in s.split()
                             if _PLAIN_WORD.fullmatch(word) and word.isalpha()})
        pool = cls(tuple(runs), tuple(sentences), tuple(next_pairs), tuple(far_pairs), tuple(vocabulary))
        if not (pool.far_pairs and len({doc_id for doc_id, _ in sentences}) > 1):
            raise RuntimeError(f"the embedded corpus gave too few clean sentences ({len(sentences)}) for a task")
        return pool

    def other_document_pair(self, rng: random.Random) -> tuple[str, str]:
        doc_a, a = rng.choice(self.sentences)
        while True:
            doc_b, b = rng.choice(self.sentences)
            if doc_b != doc_a:
                return a, b


def _clean_runs(doc_id: int, text: str) -> list[tuple[int, tuple[str, ...]]]:
    runs, run = [], []
    for sentence in [*split_sentences(text), ""]:  # the "" sentinel closes the last run
        sentence = " ".join(sentence.split())
        if _is_clean(sentence):
            run.append(sentence)
        elif run:
            runs.append((doc_id, tuple(run)))
            run = []
    return runs


def _is_clean(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    plain = sum(bool(_PLAIN_WORD.fullmatch(word)) for word in words)
    return plain >= MIN_PLAIN_WORD_FRACTION * len(words) and len(set(words)) > 1


@functools.lru_cache(maxsize=1)
def _pools() -> dict[str, _SentencePool]:
    """Disjoint docstring sets: one in ten for validation(_matched), one in ten for _mismatched."""
    groups: dict[str, list[tuple[int, str]]] = {"train": [], "validation": [], "validation_mismatched": []}
    for doc_id, text in enumerate(embedded_corpus(max_chars=CORPUS_CHARS)):
        group = {0: "validation", 5: "validation_mismatched"}.get(doc_id % 10, "train")
        groups[group].append((doc_id, text))
    return {name: _SentencePool.from_documents(documents) for name, documents in groups.items()}


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"embedded data: {name} must be a positive integer, got {value!r}")


def _balanced_labels(num_rows: int, num_classes: int, rng: random.Random) -> list[int]:
    """Class ids 0..num_classes-1 in equal shares (counts differ by at most one), shuffled."""
    labels = [i % num_classes for i in range(num_rows)]
    rng.shuffle(labels)
    return labels


def _split_rng(seed: int, *names: str) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: stable across runs and PYTHONHASHSEED.
    return random.Random("/".join([str(seed), *names]))


# ----------------------------------------------------------------------------------------------
# GLUE


def embedded_glue(task: str, num_train: int = 256, num_eval: int = 64, seed: int = 0) -> datasets.DatasetDict:
    """A synthetic GLUE task on corpus sentences (see the module docstring for each task's labels).

    Returns a DatasetDict with ``train`` (num_train rows) and ``validation`` (num_eval rows);
    for MNLI ``train``, ``validation_matched`` and ``validation_mismatched`` (num_eval rows each).
    Columns and features are exactly ``glue_features(task)``: the task's text fields (string),
    ``label`` (ClassLabel in the Hub's order; float32 score in [0, 5] for STS-B) and ``idx`` (int32).
    """
    spec = get_glue_task(task)
    _check_size("num_train", num_train)
    _check_size("num_eval", num_eval)
    pools = _pools()
    splits = {"train": (num_train, pools["train"])}
    if spec.name == "mnli":
        splits["validation_matched"] = (num_eval, pools["validation"])
        splits["validation_mismatched"] = (num_eval, pools["validation_mismatched"])
    else:
        splits["validation"] = (num_eval, pools["validation"])
    features = glue_features(spec)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                _glue_columns(spec, pool, num_rows, _split_rng(seed, spec.name, split)), features=features
            )
            for split, (num_rows, pool) in splits.items()
        }
    )


def _glue_columns(spec, pool: _SentencePool, num_rows: int, rng: random.Random) -> dict[str, list]:
    if spec.is_regression:
        rows = [_stsb_example(pool, rng) for _ in range(num_rows)]
        labels = [score for *_, score in rows]
        texts = [text for *text, _ in rows]
    else:
        labels = _balanced_labels(num_rows, spec.num_labels, rng)
        texts = [_related_texts(pool, _RELATION_OF_LABEL[spec.label_names[label]], rng) for label in labels]
    columns = {
        name: [_as_question(t[i]) if name.startswith("question") else t[i] for t in texts]
        for i, name in enumerate(spec.text_fields)
    }
    return {**columns, "label": labels, "idx": list(range(num_rows))}


def _related_texts(pool: _SentencePool, relation: str, rng: random.Random) -> tuple[str, ...]:
    if relation == "original":
        return (rng.choice(pool.sentences)[1],)
    if relation == "shuffled":
        return (shuffle_words(rng.choice(pool.sentences)[1], rng),)
    if relation == "next":
        return rng.choice(pool.next_pairs)
    if relation == "same_document":
        return rng.choice(pool.far_pairs)
    return pool.other_document_pair(rng)


def shuffle_words(sentence: str, rng: random.Random) -> str:
    """The sentence's words in a random order that differs from the original.

    The final punctuation stays at the end and the capital letter at the start (a sentence-initial
    "The" moves as "the"), so a classifier cannot tell a shuffled sentence by its edges.
    """
    words = sentence.split()
    end = words[-1][-1] if words[-1][-1] in ".!?" else ""
    words[-1] = words[-1][: len(words[-1]) - len(end)]
    if words[0][1:].islower():  # a capitalised ordinary word, not "HTTP" or "TypeError"
        words[0] = words[0].lower()
    shuffled = words[:]
    for _ in range(_SHUFFLE_TRIES):
        rng.shuffle(shuffled)
        # a real sentence starts with a letter (_is_clean): a shuffled one must too, or that would give it away
        if shuffled != words and shuffled[0][:1].isalpha():
            break
    else:  # a clean sentence has two distinct words at least: rotating changes it
        shuffled = words[1:] + words[:1]
    shuffled[0] = shuffled[0][:1].upper() + shuffled[0][1:]
    return " ".join(shuffled) + end


def _as_question(sentence: str) -> str:
    return sentence.rstrip(".!?") + "?"


def word_jaccard(text_a: str, text_b: str) -> float:
    """|A ∩ B| / |A ∪ B| of the two texts' lowercased word (\\w+) sets; 1.0 for two empty texts."""
    a, b = set(_WORD.findall(text_a.lower())), set(_WORD.findall(text_b.lower()))
    return len(a & b) / len(a | b) if a | b else 1.0


def _stsb_example(pool: _SentencePool, rng: random.Random) -> tuple[str, str, float]:
    sentence = rng.choice(pool.sentences)[1]
    p = rng.random()  # perturbation rate ~ U(0, 1) spreads the scores over [0, 5]
    perturbed = []
    for word in sentence.split():
        if rng.random() >= p:
            perturbed.append(word)
        elif rng.random() < 0.5:
            perturbed.append(rng.choice(pool.vocabulary))
        # else: dropped
    if not perturbed:
        perturbed.append(rng.choice(pool.vocabulary))
    text = " ".join(perturbed)
    return sentence, text, 5.0 * word_jaccard(sentence, text)


# ----------------------------------------------------------------------------------------------
# SQuAD


def embedded_squad(
    num_train: int = 128, num_eval: int = 32, version: str = "v1", seed: int = 0
) -> datasets.DatasetDict:
    """Synthetic cloze questions on docstring paragraphs, as a DatasetDict ``train`` / ``validation``.

    Features are ``SQUAD_FEATURES`` (id, title, context, question, answers {text, answer_start}).
    version: "v1"/"1.1" (every question answerable) or "v2"/"2.0" (every third question, shuffled,
    asks about a phrase that is not in the context and has empty answers).
    """
    version = squad_version(version)
    _check_size("num_train", num_train)
    _check_size("num_eval", num_eval)
    pools = _pools()
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                _squad_columns(pools[split], num_rows, version, split, _split_rng(seed, "squad", version, split)),
                features=SQUAD_FEATURES,
            )
            for split, num_rows in (("train", num_train), ("validation", num_eval))
        }
    )


def _squad_columns(pool: _SentencePool, num_rows: int, version: str, split: str, rng: random.Random):
    unanswerable = [False] * num_rows
    if version == "2.0":
        unanswerable = [label == 0 for label in _balanced_labels(num_rows, UNANSWERABLE_EVERY, rng)]
    columns: dict[str, list] = {name: [] for name in SQUAD_FEATURES}
    for i, no_answer in enumerate(unanswerable):
        doc_id, context = _paragraph(pool, rng)
        if no_answer:
            question, answers = _unanswerable_question(pool, doc_id, context, rng), {"text": [], "answer_start": []}
        else:
            question, answers = _cloze_question(context, rng)
        columns["id"].append(f"embedded-{split}-{i:05d}")
        columns["title"].append(f"docstring {doc_id}")
        columns["context"].append(context)
        columns["question"].append(question)
        columns["answers"].append(answers)
    return columns


def _paragraph(pool: _SentencePool, rng: random.Random) -> tuple[int, str]:
    """2 to 4 consecutive sentences of one document (one long sentence for a one-sentence run)."""
    while True:
        doc_id, run = rng.choice(pool.runs)
        length = min(len(run), rng.randint(2, 4))
        start = rng.randrange(len(run) - length + 1)
        context = " ".join(run[start:start + length])
        if len(context.split()) >= 2 * (CUE_WORDS + MAX_ANSWER_WORDS):
            return doc_id, context


def _cloze_question(context: str, rng: random.Random) -> tuple[str, dict[str, list]]:
    """'What follows "<cue>" in the text?' with the 1-3 words after the cue as the answer span."""
    spans = [m.span() for m in re.finditer(r"\S+", context)]
    while True:
        i = rng.randrange(len(spans) - CUE_WORDS - MAX_ANSWER_WORDS + 1)
        cue = context[spans[i][0]:spans[i + CUE_WORDS - 1][1]]
        answer_words = spans[i + CUE_WORDS:i + CUE_WORDS + rng.randint(1, MAX_ANSWER_WORDS)]
        start, end = answer_words[0][0], answer_words[-1][1]
        # Punctuation at the edges is no part of the answer (SQuAD's normaliser drops it anyway).
        while start < end and context[start] in _ANSWER_STRIP:
            start += 1
        while end > start and context[end - 1] in _ANSWER_STRIP:
            end -= 1
        if end > start and context.count(cue) == 1:  # a repeated cue would make two right answers
            question = f'What follows "{cue}" in the text?'
            return question, {"text": [context[start:end]], "answer_start": [start]}


def _unanswerable_question(pool: _SentencePool, doc_id: int, context: str, rng: random.Random) -> str:
    """The cloze question for five words of another document that do not occur in the context."""
    while True:
        other_doc, sentence = rng.choice(pool.sentences)
        words = sentence.split()
        start = rng.randrange(len(words) - CUE_WORDS + 1)
        cue = " ".join(words[start:start + CUE_WORDS])
        if other_doc != doc_id and cue not in context:
            return f'What follows "{cue}" in the text?'


# ----------------------------------------------------------------------------------------------
# Instruction tuning

# Instructions whose answers follow from the sentence alone, so a small model can learn them.
_SFT_INSTRUCTIONS = {
    "repeat": ("Repeat this sentence: {s}", lambda s: s),
    "first": ("What is the first word of this sentence? {s}", lambda s: _WORD.findall(s)[0]),
    "last": ("What is the last word of this sentence? {s}", lambda s: _WORD.findall(s)[-1]),
    "count": ("How many words does this sentence have? {s}", lambda s: str(len(s.split()))),
}


def embedded_sft(num_train: int = 256, num_eval: int = 64, seed: int = 0) -> datasets.DatasetDict:
    """Synthetic (instruction, response) pairs on corpus sentences: repeat a sentence, name its
    first or last word, count its words (the four kinds in equal shares). ``train`` and
    ``validation`` come from disjoint docstrings; columns ``instruction`` and ``response``."""
    _check_size("num_train", num_train)
    _check_size("num_eval", num_eval)
    pools, kinds = _pools(), sorted(_SFT_INSTRUCTIONS)
    splits = {}
    for split, num_rows in (("train", num_train), ("validation", num_eval)):
        rng = _split_rng(seed, "sft", split)
        rows = {"instruction": [], "response": []}
        for kind in _balanced_labels(num_rows, len(kinds), rng):
            template, answer = _SFT_INSTRUCTIONS[kinds[kind]]
            _, sentence = rng.choice(pools[split].sentences)
            rows["instruction"].append(template.format(s=sentence))
            rows["response"].append(answer(sentence))
        splits[split] = datasets.Dataset.from_dict(rows)
    return datasets.DatasetDict(splits)


def embedded_preferences(num_train: int = 256, num_eval: int = 64, seed: int = 0) -> datasets.DatasetDict:
    """Synthetic preference pairs from ``embedded_sft``: the prompt is an instruction, the chosen
    completion its right response, the rejected one the response to the split's next instruction (a
    fluent answer to another question; the same text as the right one is skipped to the next that
    differs). Columns ``prompt``, ``chosen`` and ``rejected``."""
    pairs = {}
    for split, rows in embedded_sft(num_train, num_eval, seed).items():
        responses = rows["response"]
        rejected = []
        for i, right in enumerate(responses):
            other = next((responses[(i + k) % len(responses)] for k in range(1, len(responses))
                          if responses[(i + k) % len(responses)].strip() != right.strip()), right + " (not)")
            rejected.append(other)
        pairs[split] = datasets.Dataset.from_dict({"prompt": rows["instruction"], "chosen": responses,
                                                   "rejected": rejected})
    return datasets.DatasetDict(pairs)


# ----------------------------------------------------------------------------------------------
# Token tagging (named entities, part of speech)

# CoNLL-2003's NER labels in the Hub dataset's ClassLabel order, so embedded and real data agree.
TAGGING_NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
# Entity slot -> (names, the Penn Treebank tag of each of their words). Multi-word names make I- tags.
_ENTITIES = {
    "PER": (("Anna Berg", "John Smith", "Maria Lopez", "Li Wei", "Peter", "Olga Ivanova", "Kofi Mensah",
             "Tom Baker"), "NNP"),
    "LOC": (("Paris", "New York", "Buenos Aires", "Nairobi", "Oslo", "Tokyo", "Cape Town", "Lima"), "NNP"),
    "ORG": (("Reuters", "United Nations", "Acme Corp", "Red Cross", "World Bank", "Nokia"), "NNP"),
    "MISC": (("German", "Olympic", "French", "Japanese", "Brazilian"), "JJ"),
}
# Newswire-like templates; every word outside a {slot} is in _POS_LEXICON.
_TAGGING_TEMPLATES = (
    "{PER} visited {LOC} on Monday .",
    "{ORG} hired {PER} last year .",
    "{PER} said {ORG} would open an office in {LOC} .",
    "The {MISC} team won in {LOC} on Sunday .",
    "{ORG} shares fell in {LOC} .",
    "{PER} and {PER} met in {LOC} .",
    "A {MISC} official told {ORG} that prices rose .",
    "Police in {LOC} arrested a man .",
)
_POS_LEXICON = {
    "The": "DT", "A": "DT", "a": "DT", "an": "DT", "visited": "VBD", "on": "IN", "in": "IN", "that": "IN",
    "Monday": "NNP", "Sunday": "NNP", ".": ".", "hired": "VBD", "last": "JJ", "year": "NN", "said": "VBD",
    "would": "MD", "open": "VB", "office": "NN", "team": "NN", "won": "VBD", "shares": "NNS", "fell": "VBD",
    "and": "CC", "met": "VBD", "official": "NN", "told": "VBD", "prices": "NNS", "rose": "VBD", "Police": "NNS",
    "arrested": "VBD", "man": "NN",
}
TAGGING_POS_LABELS = tuple(sorted({*_POS_LEXICON.values(), *(tag for _, tag in _ENTITIES.values())}))


def embedded_tagging(num_train: int = 256, num_eval: int = 64, seed: int = 0) -> datasets.DatasetDict:
    """Synthetic newswire-like sentences tagged for NER (BIO, CoNLL-2003's PER/ORG/LOC/MISC) and POS.

    Each sentence fills one of _TAGGING_TEMPLATES (used in equal shares) with names drawn from small
    lists; a name's first word is B-<type>, its others I-<type>, every other word O. POS tags come
    from a fixed lexicon (names NNP, nationalities JJ). Returns a DatasetDict ``train`` /
    ``validation`` with the Hub's CoNLL-2003 columns: ``tokens`` (list[str]), ``ner_tags`` and
    ``pos_tags`` (lists of ClassLabel ids; names TAGGING_NER_LABELS / TAGGING_POS_LABELS).
    Deterministic for a seed.
    """
    _check_size("num_train", num_train)
    _check_size("num_eval", num_eval)
    features = datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=list(TAGGING_NER_LABELS))),
        "pos_tags": datasets.Sequence(datasets.ClassLabel(names=list(TAGGING_POS_LABELS))),
    })
    ner_id = {name: i for i, name in enumerate(TAGGING_NER_LABELS)}
    pos_id = {name: i for i, name in enumerate(TAGGING_POS_LABELS)}
    splits = {}
    for split, num_rows in (("train", num_train), ("validation", num_eval)):
        rng = _split_rng(seed, "tagging", split)
        rows: dict[str, list] = {"tokens": [], "ner_tags": [], "pos_tags": []}
        for template in _balanced_labels(num_rows, len(_TAGGING_TEMPLATES), rng):
            tokens, ner, pos, used = [], [], [], set()
            for word in _TAGGING_TEMPLATES[template].split():
                if not word.startswith("{"):
                    tokens.append(word)
                    ner.append(ner_id["O"])
                    pos.append(pos_id[_POS_LEXICON[word]])
                    continue
                kind = word[1:-1]
                names, tag = _ENTITIES[kind]
                name = rng.choice([n for n in names if n not in used])  # "Peter and Peter" would read oddly
                used.add(name)
                for i, part in enumerate(name.split()):
                    tokens.append(part)
                    ner.append(ner_id[("B-" if i == 0 else "I-") + kind])
                    pos.append(pos_id[tag])
            rows["tokens"].append(tokens)
            rows["ner_tags"].append(ner)
            rows["pos_tags"].append(pos)
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(splits)
