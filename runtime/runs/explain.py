"""What differs between a sealed run and a re-execution of it, shown so a person can judge it.

``value_differences``: per differing JSON path of RUN_OUTPUT.json (the order and limit of
``jsonio.diff_paths``), the original and the replayed value as compact JSON text, cut to
``VALUE_WIDTH`` characters with ``...`` (a 10 MB array must not flood a terminal or a wire
reply), and ``(absent)`` for a side without the path.

``file_differences``: the artifacts whose bytes differ, with both sizes and sha256 (None for a
side without the file). Pure reads; nothing here decides replayability (``replay.py`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .jsonio import ABSENT, diff_values
from .model import FileDifference, ValueDifference
from .sealing import file_digest, list_files

__all__ = ["ABSENT_TEXT", "VALUE_WIDTH", "file_differences", "show_value", "value_differences"]

#: Characters of a value shown (the text is cut and ends with "...").
VALUE_WIDTH = 60
ABSENT_TEXT = "(absent)"


def show_value(value: Any, width: int = VALUE_WIDTH) -> str:
    """``value`` as compact JSON text of at most ``width`` characters."""
    if value is ABSENT:
        return ABSENT_TEXT
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def value_differences(original: Any, replayed: Any) -> list[ValueDifference]:
    return [
        ValueDifference(path=path, original=show_value(a), replayed=show_value(b))
        for path, a, b in diff_values(original, replayed)
    ]


def _digests(root: Path) -> dict[str, tuple[str, int]]:
    if not root.is_dir():
        return {}
    try:
        return {rel: file_digest(root / rel) for rel in list_files(root)}
    except (OSError, ValueError):
        return {}


def file_differences(original_root: Path, replayed_root: Path) -> list[FileDifference]:
    """The files under the two ``artifacts/`` roots whose bytes differ, by path
    (``artifacts/...``), sorted."""
    old, new = _digests(original_root), _digests(replayed_root)
    out: list[FileDifference] = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a is not None and b is not None and a[0] == b[0]:
            continue
        out.append(
            FileDifference(
                path=f"artifacts/{rel}",
                original_size=a[1] if a else None,
                replayed_size=b[1] if b else None,
                original_sha256=a[0] if a else None,
                replayed_sha256=b[0] if b else None,
            )
        )
    return out
