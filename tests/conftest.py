"""Test-wide set-up: no Hub access, deterministic and thread-frugal on a 2-core machine."""

import os

# Before any Hugging Face import: otherwise every Hub call retries for ~24 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two xdist workers share two cores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test when the folder is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def register_plugin():
    """``register_plugin(registry, member)``: a plug-in (an objective, a task) registered for one test."""
    added = []

    def register(registry, member):
        registry.register(member)
        added.append((registry, member))
        return member

    yield register
    for registry, member in added:
        registry.unregister(member)


def pytest_collection_modifyitems(config, items):
    # Slow end-to-end tests first (a stable sort; every xdist worker collects the same order): the
    # longest jobs start early, so the two workers finish together instead of one running a
    # four-minute test alone at the end.
    items.sort(key=lambda item: "slow" not in item.keywords)
    if not torch.cuda.is_available():
        skip_gpu = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
