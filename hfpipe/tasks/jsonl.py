"""JSON lines as the tasks read them: one object per non-blank line, every problem one line naming
``file:line`` (InputError, exit 2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


def json_lines(path: str | Path) -> Iterator[tuple[str, object]]:
    """(``"file:line"``, the line's parsed JSON) for each non-blank line; the caller checks its keys."""
    path = Path(path)
    try:
        # lines end at "\n" only (JSON Lines): str.splitlines would also cut at U+0085, U+2028 and
        # other separators, which json.dumps(ensure_ascii=False) leaves inside strings
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); expected JSON lines") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not valid JSON ({e.msg}); expected one object per line") from None
