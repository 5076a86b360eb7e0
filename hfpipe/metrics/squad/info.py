"""The evaluate MetricInfo shared by the squad and squad_v2 metrics: same references, same sources."""

import datasets
import evaluate

SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/"

# The Hub's squad / squad_v2 reference layout: {"id", "answers": {"text": [...], "answer_start": [...]}}.
REFERENCES_FEATURE = {
    "id": datasets.Value("string"),
    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
}


def squad_metric_info(description: str, citation: str, inputs_description: str, predictions_feature: dict):
    """MetricInfo for a SQuAD metric whose predictions have `predictions_feature`."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features({"predictions": predictions_feature, "references": REFERENCES_FEATURE}),
        codebase_urls=[SQUAD_URL],
        reference_urls=[SQUAD_URL],
    )
