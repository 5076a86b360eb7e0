"""hfpipe's metrics: local `evaluate` modules, one folder each (glue/, squad/, squad_v2/).

    from hfpipe.metrics import load_metric
    squad = load_metric("squad")
    squad.compute(predictions=[{"id": "q1", "prediction_text": "Denver Broncos"}],
                  references=[{"id": "q1", "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}])
    # {'exact_match': 100.0, 'f1': 100.0}
    mrpc = load_metric("glue", "mrpc")

The evaluate 0.4 wheel ships no metric scripts and the Hub may be unreachable, so each metric
lives here as a folder `<name>/<name>.py` that `evaluate.load(<folder>)` reads offline. This module
imports nothing heavy: the squad_v2 scorer imports `hfpipe.metrics.squad.compute_score`, which
runs this file first.
"""

from __future__ import annotations

from pathlib import Path

from hfpipe.errors import InputError

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the metric folders shipped with hfpipe (those holding `<name>/<name>.py`)."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str, config_name: str | None = None, **kwargs):
    """`evaluate.load` of hfpipe's local metric folder `name` (offline).

    Args:
        name: folder name under hfpipe/metrics ("glue", "squad", "squad_v2").
        config_name: the metric's configuration (GLUE's task name; None for SQuAD).
        **kwargs: passed to `evaluate.load` (e.g. experiment_id, num_process, process_id).

    Returns:
        an `evaluate.EvaluationModule`.
    """
    folder = METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise InputError(f"metric {name!r}: not one of hfpipe's metrics; expected one of {', '.join(available_metrics())}")
    import evaluate  # here, not at the top: keeps `import hfpipe.metrics` light for the scorers that import it

    return evaluate.load(str(folder), config_name, **kwargs)
