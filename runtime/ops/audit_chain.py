"""The audit log's format, shared by its writer (audit.py) and its verifier (audit_verify.py).

Where the log and its head live, what the first ``prev`` is, which fields an entry has, how a
line is hashed and parsed (deep nesting refused), and how lines are read backwards from the end
(so an append or a tail costs the same whatever the size of the log). runtime/ops/audit.py says
what the log holds and guarantees.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runyard.runtime.core.digest import sha256

__all__ = [
    "AUDIT_RELPATH",
    "FIELDS",
    "GENESIS",
    "HEAD_RELPATH",
    "MAX_DEPTH",
    "audit_path",
    "head_path",
    "last_lines",
    "line_hash",
    "loads",
]

#: Where the log lives, relative to the tree's ``logs/`` directory.
AUDIT_RELPATH = Path("runyard") / "audit.jsonl"
#: The seq and hash of the last entry, rewritten atomically on every append.
HEAD_RELPATH = Path("runyard") / "audit.head"
#: Deepest nesting an entry may have (ours have 3 levels); deeper lines are malformed.
MAX_DEPTH = 32
#: The ``prev`` of the first entry.
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "target", "result", "detail", "prev")

_CHUNK = 8192


def audit_path(logs_dir: str | os.PathLike[str]) -> Path:
    """The audit log of the tree whose ``logs/`` directory is ``logs_dir``."""
    return Path(logs_dir) / AUDIT_RELPATH


def head_path(log: str | os.PathLike[str]) -> Path:
    """The head file beside the audit log ``log``."""
    return Path(log).with_name(HEAD_RELPATH.name)


def loads(raw: bytes) -> Any:
    """``json.loads`` that refuses deep nesting with a ValueError instead of a RecursionError."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend(
                (c, depth + 1) for c in (item.values() if isinstance(item, dict) else item)
            )
    return value


def line_hash(line: bytes) -> str:
    """The ``prev`` the entry after ``line`` carries (``line`` without its newline)."""
    return sha256(line.rstrip(b"\n")).hexdigest()


def last_lines(fd: int, size: int) -> Iterator[bytes]:
    """The complete lines of the file, last first, read backwards in chunks from ``size``."""
    pos = size
    buf = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        parts = buf.split(b"\n")
        buf = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part
    if buf:
        yield buf
