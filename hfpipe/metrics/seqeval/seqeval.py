"""seqeval as a local `evaluate` module: the Hub's `seqeval` metric (entity-level P/R/F1), offline.

    from hfpipe.metrics import load_metric
    load_metric("seqeval").compute(
        predictions=[["O", "B-PER", "I-PER", "O"], ["B-LOC"]],
        references=[["O", "B-PER", "I-PER", "O"], ["B-ORG"]])
    # {'LOC': {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'number': 0},
    #  'ORG': {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'number': 1},
    #  'PER': {'precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'number': 1},
    #  'overall_precision': 0.5, 'overall_recall': 0.5, 'overall_f1': 0.5, 'overall_accuracy': 0.8}

The seqeval package is not installed (and the evaluate 0.4 wheel ships no metric scripts), so the
chunk extraction is written here: seqeval's default mode, which follows the CoNLL shared tasks'
conlleval script. A chunk (entity) starts at B- (and S-), at an I- or E- after O or after a tag of
another type, and ends before O, B-, S- or a change of type; so IOB1 (I- starts an entity, B- only
separates two adjacent ones of one type) and IOB2/BIO (every entity starts with B-) are read
alike, and a broken sequence (I-LOC after O or after B-PER) counts as a new entity rather than
being dropped. An entity is (type, first word, last word); a prediction is right only when all
three match. Sentences are joined with an O between them, so no entity spans two.

Result keys are the Hub metric's: one entry per entity type seen in the references or the
predictions ({"precision", "recall", "f1", "number"}; number = gold entities of the type), and the
micro-averaged "overall_precision", "overall_recall", "overall_f1", plus "overall_accuracy", the
fraction of words whose tag is right (the metric used for part-of-speech tagging). An undefined
ratio (0/0: no predicted or no gold entity) is 0, seqeval's zero_division="warn" value.

Kept free of hfpipe imports on purpose: evaluate copies this file into its module cache and
imports it from there.
"""

from collections import defaultdict

import datasets
import evaluate

_DESCRIPTION = """\
Entity-level precision, recall and F1 for sequence labelling (named entities, chunks), computed as
seqeval's default mode and the conlleval script do (IOB1, IOB2/BIO, IOE and IOBES tags), with
token accuracy.
"""

_CITATION = """\
@inproceedings{tjong-kim-sang-de-meulder-2003-introduction,
  title={Introduction to the {C}o{NLL}-2003 Shared Task: Language-Independent Named Entity Recognition},
  author={Tjong Kim Sang, Erik F. and De Meulder, Fien},
  booktitle={Proceedings of the Seventh Conference on Natural Language Learning at HLT-NAACL 2003},
  year={2003}
}
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N sentences,) lists of predicted tags (str), e.g. [["B-PER", "I-PER", "O"]].
    references: (N sentences,) lists of gold tags, each as long as its prediction.
    suffix: True when the chunk tag follows the type ("PER-B"), as seqeval's ``suffix``.
Returns:
    {"<TYPE>": {"precision", "recall", "f1", "number"}, ...,
     "overall_precision", "overall_recall", "overall_f1", "overall_accuracy"}: floats in [0, 1]
    (number: an int, the gold entities of that type).
Examples:
    >>> seqeval = load_metric("seqeval")
    >>> seqeval.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""


def _split(tag: str, suffix: bool) -> tuple[str, str]:
    """(chunk tag, type): "B-PER" -> ("B", "PER"); "O" -> ("O", "_"); a bare "NN" -> ("N", "N")."""
    if suffix:
        return tag[-1], tag[:-1].rsplit("-", maxsplit=1)[0] or "_"
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether the chunk holding the previous word ends before this one."""
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _starts(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    """Whether a chunk starts at this word."""
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(sentences, suffix: bool = False) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of every chunk; word positions count over all sentences
    joined with one "O" after each (so positions are unique and no chunk crosses sentences)."""
    words = [tag for sentence in sentences for tag in [*sentence, "O"]]
    chunks, prev_tag, prev_type, begin = [], "O", "", 0
    for i, tag_text in enumerate([*words, "O"]):
        tag, type_ = _split(tag_text, suffix)
        if _ends(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _scores(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, gold)
    f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def seqeval_scores(predictions, references, suffix: bool = False) -> dict:
    """The metric itself, on plain lists (see the module docstring for the keys)."""
    if len(predictions) != len(references):
        raise ValueError(f"seqeval: {len(predictions)} predicted sentences but {len(references)} references")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"seqeval: sentence {i} has {len(p)} predicted tags but {len(r)} gold tags")
    gold, predicted = defaultdict(set), defaultdict(set)
    for type_, start, end in get_entities(references, suffix):
        gold[type_].add((start, end))
    for type_, start, end in get_entities(predictions, suffix):
        predicted[type_].add((start, end))
    result = {}
    for type_ in sorted(set(gold) | set(predicted)):
        precision, recall, f1 = _scores(len(gold[type_] & predicted[type_]), len(predicted[type_]), len(gold[type_]))
        result[type_] = {"precision": precision, "recall": recall, "f1": f1, "number": len(gold[type_])}
    correct = sum(len(gold[t] & predicted[t]) for t in gold)
    overall = _scores(correct, sum(map(len, predicted.values())), sum(map(len, gold.values())))
    result["overall_precision"], result["overall_recall"], result["overall_f1"] = overall
    words = [(p, r) for ps, rs in zip(predictions, references) for p, r in zip(ps, rs)]
    result["overall_accuracy"] = _ratio(sum(p == r for p, r in words), len(words))
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
            }),
            homepage="https://github.com/chakki-works/seqeval",
        )

    def _compute(self, predictions, references, suffix: bool = False):
        return seqeval_scores([list(p) for p in predictions], [list(r) for r in references], suffix=suffix)
