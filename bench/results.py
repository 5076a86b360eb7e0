"""Where benchmark results go: ``<stem>.md`` (the printed table) and ``<stem>.json`` beside it."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(folder: Path, stem: str, text: str, payload: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.md").write_text(text + "\n")
    (folder / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {folder / stem}.{{md,json}}")
