"""What the logs screen does with the lines it keeps, apart from showing them: save the visible
ones to a file, and find the first line at or after a time.

Saving writes through runtime.core.atomic (a temp file beside the target, fsynced, renamed over
it, the directory fsynced), mode 0600: a log may hold what only the operator should read. The
path is the operator's (the dialog offers a default under the tree's temp/, or the current
directory when that is not writable); a directory means "a file named by default in it".
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from runyard.runtime.core.atomic import atomic_output

from .log_rings import Shown

__all__ = ["default_save_path", "first_at_or_after", "format_saved", "parse_time", "save_lines"]

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?$")


def default_save_path(root: Path, service: str, now: float | None = None) -> Path:
    """``runyard-logs-SERVICE-YYYYmmdd-HHMMSS.log`` in ``root``/temp, or in the current
    directory when the tree's temp/ is not writable (``SERVICE`` is ``all`` for every service)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    name = f"runyard-logs-{'all' if service == '*' else service}-{stamp}.log"
    temp = root / "temp"
    where = temp if os.access(temp, os.W_OK | os.X_OK) else Path.cwd()
    return where / name


def format_saved(rows: Sequence[Shown], tagged: bool) -> str:
    """One line per row: local ISO time to the millisecond, the service (tagged views), the
    stream, the text as shown (escape sequences dropped)."""
    out = []
    for shown in rows:
        stamp = datetime.fromtimestamp(shown.line.ts).isoformat(timespec="milliseconds")
        who = f" {shown.service}" if tagged else ""
        out.append(f"{stamp}{who} {shown.line.stream} {shown.text}\n")
    return "".join(out)


def save_lines(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (mode 0600); a directory gets a default name by the
    caller first. Returns the path written; raises OSError naming nothing (the caller says the
    path and the cause in one line)."""
    path = path.expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    with atomic_output(path, mode=0o600) as fh:
        fh.write(text.encode("utf-8"))
    return path


def parse_time(text: str, now: float | None = None) -> float:
    """``HH:MM``, ``HH:MM:SS[.fff]`` (today, local time; yesterday when that is still to come)
    or an ISO time (``2026-12-06T23:10:00``, with or without an offset) as seconds since the
    epoch; raises ValueError with a one-line reason."""
    text = text.strip()
    match = _CLOCK.match(text)
    if match:
        hour, minute, second, frac = match.groups()
        if int(hour) > 23 or int(minute) > 59 or int(second or 0) > 59:
            raise ValueError(f"{text!r} is not a time of day (HH:MM or HH:MM:SS)")
        base = datetime.fromtimestamp(time.time() if now is None else now)
        when = base.replace(
            hour=int(hour),
            minute=int(minute),
            second=int(second or 0),
            microsecond=int((frac or "0").ljust(6, "0")),
        )
        if when > base:
            when -= timedelta(days=1)
        return when.timestamp()
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: HH:MM, HH:MM:SS or an ISO time (2026-12-06T23:10:00)"
        ) from None


def first_at_or_after(rows: Sequence[Shown], ts: float) -> int | None:
    """The index of the first of ``rows`` stamped at or after ``ts`` (None: none is). Rows
    are in arrival order, which interleaved services keep only roughly by time: a scan. Times
    are compared to the microsecond (an ISO time has no more; a float stamp rounds either way)."""
    ts = round(ts, 6)
    for index, shown in enumerate(rows):
        if round(shown.line.ts, 6) >= ts:
            return index
    return None
