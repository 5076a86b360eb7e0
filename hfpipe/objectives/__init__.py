"""Pretraining objectives as plug-ins: one module per objective, one line per objective in the table below.

Each module defines its objective as one class, a subclass of :class:`Objective` registered with
:func:`register`: the class is the recipe's ``objective`` section (``name: Literal["<name>"]`` and the
keys only it takes, with their checks) and says what the objective needs, the model family it trains,
its Auto class, its examples and collator, its metrics. ``hfpipe pretrain`` (hfpipe/pretrain.py) is
the driver that runs any of them. A new objective is one new file here and one name in this import.
"""

from .base import Examples, Objective, register
from . import mlm_nsp, sop, mlm, span_mlm, electra, clm, span_corruption, prefix_lm, ul2  # noqa: E402,I001  the table

__all__ = ["Examples", "Objective", "register"]
