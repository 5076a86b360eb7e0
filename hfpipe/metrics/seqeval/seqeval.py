"""seqeval as a local `evaluate` module: the Hub's `seqeval` metric (entity-level P/R/F1), offline.

    from hfpipe.metrics import load_metric
    load_metric("seqeval").compute(
        predictions=[["O", "B-PER", "I-PER", "O"], ["B-LOC"]],
        references=[["O", "B-PER", "I-PER", "O"], ["B-ORG"]])
    # {'LOC': {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'number': 0},
    #  'ORG': {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'number': 1},
    #  'PER': {'precision': 1.0, 'recall': 1.0, 'f1': 1.0, 'number': 1},
    #  'overall_precision': 0.5, 'overall_recall': 0.5, 'overall_f1': 0.5, 'overall_accuracy': 0.8}

The scoring is the seqeval package's (what the Hub metric wraps; evaluate 0.4's wheel ships no metric
scripts, hence this file): its default mode, which follows the CoNLL shared tasks' conlleval script.
A chunk (entity) starts at B- (and S-), at an I- or E- after O or after a tag of another type, and
ends before O, B-, S- or a change of type; so IOB1 and IOB2/BIO are read alike, and a broken
sequence (I-LOC after O or after B-PER) counts as a new entity rather than being dropped. An entity
is (type, first word, last word); a prediction is right only when all three match. Sentences are
joined with an O between them, so no entity spans two.

Result keys are the Hub metric's: one entry per entity type seen in the references or the
predictions ({"precision", "recall", "f1", "number"}; number = gold entities of the type), and the
micro-averaged "overall_precision", "overall_recall", "overall_f1", plus "overall_accuracy", the
fraction of words whose tag is right (the metric used for part-of-speech tagging). An undefined
ratio (0/0: no predicted or no gold entity) is 0, as seqeval's zero_division gives it, without
its warning; part-of-speech tags (no B-/I- prefix) score their accuracy without a warning per tag.

Kept free of hfpipe imports on purpose: evaluate copies this file into its module cache and
imports it from there.
"""

import warnings

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
# get_entities: the chunking, for tests and readers (no comment on an import line: evaluate reads one as
# the pip name it tells users to install)
from seqeval.metrics.sequence_labeling import get_entities

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


def seqeval_scores(predictions, references, suffix: bool = False) -> dict:
    """The metric itself, on plain lists (see the module docstring for the keys)."""
    if len(predictions) != len(references):
        raise ValueError(f"seqeval: {len(predictions)} predicted sentences but {len(references)} references")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"seqeval: sentence {i} has {len(p)} predicted tags but {len(r)} gold tags")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".* seems not to be NE tag")
        warnings.filterwarnings("ignore", category=RuntimeWarning)  # its macro average of no entity at all
        report = classification_report(references, predictions, suffix=suffix, output_dict=True, zero_division=0)
        accuracy = accuracy_score(references, predictions) if any(references) else 0.0
    overall = report.pop("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    result = {
        type_: {"precision": float(score["precision"]), "recall": float(score["recall"]),
                "f1": float(score["f1-score"]), "number": int(score["support"])}
        for type_, score in sorted(report.items()) if type_ not in ("macro avg", "weighted avg")
    }
    result["overall_precision"] = float(overall["precision"])
    result["overall_recall"] = float(overall["recall"])
    result["overall_f1"] = float(overall["f1-score"])
    result["overall_accuracy"] = float(accuracy)
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


__all__ = ["Seqeval", "get_entities", "seqeval_scores"]
