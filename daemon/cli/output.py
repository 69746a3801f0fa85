"""How the CLI prints: aligned tables for people, JSON for scripts, sizes in readable units."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from .log_text import json_for_terminal

__all__ = [
    "parse_bytes",
    "print_json",
    "print_table",
    "silence_stdout",
    "stdout_closed",
]

_encoder = msgspec.json.Encoder(order="sorted")


def print_json(value: Any) -> None:
    text = msgspec.json.format(_encoder.encode(value)).decode()
    sys.stdout.write(json_for_terminal(text) + "\n")


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int] | None = None
) -> None:
    """Columns padded to the widest cell; ``right`` holds the indexes of numeric columns."""
    right = right or set()
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        sys.stdout.write("  ".join(parts).rstrip() + "\n")


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}


def parse_bytes(text: str) -> int:
    """``500``, ``10M``, ``1.5GiB`` -> bytes; ValueError with the reason otherwise."""
    s = text.strip().lower().replace(" ", "")
    i = len(s)
    while i and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    number, unit = s[:i], s[i:]
    if unit not in _UNITS or not number:
        raise ValueError(f"{text!r} is not a size (examples: 500, 10M, 1.5GiB)")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size (examples: 500, 10M, 1.5GiB)") from None
    if value < 0:
        raise ValueError(f"{text!r}: a size must be >= 0")
    return int(value * _UNITS[unit])


def stdout_closed() -> bool:
    """True when stdout is a pipe or socket whose reader has gone (poll reports an error)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
