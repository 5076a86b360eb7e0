"""Sentence splitting for BERT's sentence pairs (NSP/SOP): rules, no model."""

from __future__ import annotations

import re


# Never end a sentence: titles and Latin abbreviations ("Mr. Smith", "e.g. the").
_TITLE_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt messrs mme mlle gen col lt sgt capt cmdr adm gov sen rep rev hon pres "
    "e.g i.e cf viz vs approx".split()
)
# End no sentence when a number follows ("No. 5", "Fig. 2", "Jan. 3").
_NUMBER_ABBREVIATIONS = frozenset(
    "no nos vol vols p pp fig figs ch sec eq art jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Candidate boundary: terminal punctuation (plus closing quotes/brackets), white space, then what
# can start a sentence (opening quotes/brackets, a capital or a digit). A blank line always ends one.
_BOUNDARY = re.compile(
    r"(?P<end>[.!?\u2026]+[\"'\u201d\u2019)\]]*)\s+(?=[\"'\u201c\u2018(\[]*(?P<next>[A-Z0-9]))|\n[ \t]*\n\s*"
)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_DOTTED_ABBREVIATION = re.compile(r"(?:[A-Za-z]{1,3}\.)+[A-Za-z]{1,3}")  # U.S, e.g, a.m, Ph.D


def _ends_sentence(text: str, match: re.Match) -> bool:
    end = match.group("end")
    if end is None or _BLANK_LINE.search(match.group()):
        return True
    if end.rstrip("\"'\u201d\u2019)]") != ".":  # "?", "!", "..." end sentences
        return True
    words_before = text[: match.start()].split()
    word = words_before[-1].lstrip("\"'\u201c\u2018([").lower() if words_before else ""
    if word in _TITLE_ABBREVIATIONS or _DOTTED_ABBREVIATION.fullmatch(word):
        return False
    if word in _NUMBER_ABBREVIATIONS and match.group("next").isdigit():
        return False
    return not (len(word) == 1 and word.isalpha())  # an initial: "J. R. R. Tolkien"


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each stripped of surrounding white space (inner white space kept).

    A rule-based splitter, good enough for BERT's next-sentence pairs: a sentence ends at . ! ? or
    ... followed by white space and a capital letter or digit, except after titles ("Mr.", "Dr."),
    Latin abbreviations ("e.g.", "i.e."), dotted abbreviations ("U.S."), initials ("J. Smith") and
    reference abbreviations before a number ("No. 5", "Fig. 2"); decimals ("3.14") have no space
    after the point. A blank line always ends a sentence. No characters other than white space
    between sentences are lost.
    """
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if _ends_sentence(text, match):
            stop = match.end("end") if match.group("end") is not None else match.start()
            if sentence := text[start:stop].strip():
                sentences.append(sentence)
            start = match.end()
    if rest := text[start:].strip():
        sentences.append(rest)
    return sentences
