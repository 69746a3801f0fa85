"""``read_history``: the last lines of a service's log files (rotated ones too), parsed back into
``LogLine``s, for a tail that the in-memory ring is too short for (after a daemon restart)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_HISTORY_BYTES", "read_history"]

#: Bytes read from the files for one tail at most.
MAX_HISTORY_BYTES = 4 * 1024 * 1024
_STAMP = len(b"2026-11-21T23:53:11.123456Z")


def _parse(raw: bytes, timegm: Callable[[tuple[int, ...]], int]) -> tuple[float, str, str] | None:
    """``2026-11-21T23:53:11.123456Z out text`` -> (ts, "out", "text"); None when malformed."""
    if len(raw) < _STAMP + 5 or raw[_STAMP : _STAMP + 1] != b" ":
        return None
    stream = raw[_STAMP + 1 : _STAMP + 4].decode("ascii", "replace")
    if stream not in ("out", "err") or raw[_STAMP + 4 : _STAMP + 5] != b" ":
        return None
    s = raw[:_STAMP].decode("ascii", "replace")
    try:
        secs = timegm(
            (int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]), int(s[17:19]))
        )
        ts = secs + int(s[20:26]) / 1_000_000
    except ValueError:
        return None
    return ts, stream, raw[_STAMP + 5 :].decode("utf-8", "replace")


def read_history(path: Path, backups: int, n: int) -> list[tuple[float, str, str]]:
    """The last ``n`` well-formed lines of ``path`` and its backups ``.1 … .backups``, oldest
    first, reading at most MAX_HISTORY_BYTES from the end."""
    chunks: list[bytes] = []
    budget = MAX_HISTORY_BYTES
    count = 0
    for i in range(backups + 1):
        file = path if i == 0 else path.with_name(f"{path.name}.{i}")
        try:
            fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            break
        try:
            size = os.fstat(fd).st_size
            take = min(size, budget)
            data = os.pread(fd, take, size - take)
        finally:
            os.close(fd)
        if take < size:  # cut mid-file: drop the first, partial line
            data = data[data.find(b"\n") + 1 :]
        chunks.append(data)
        budget -= take
        count += data.count(b"\n")
        if count >= n or budget <= 0:
            break
    lines = b"".join(reversed(chunks)).splitlines()[-n:] if n > 0 else []
    from calendar import timegm  # a tail that reads the files: not an idle daemon's import

    return [p for p in (_parse(line, timegm) for line in lines) if p is not None]
