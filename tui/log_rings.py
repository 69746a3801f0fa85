"""The lines a log view keeps: one ring per service, and what following on or off means.

Each service has a ring of its own (``MAX_LINES``), so in the interleaved view of every
service (L) a flood from one service cannot push out the others' history: the view shows the
rings merged by arrival. While the view follows, a ring drops its oldest lines as new ones
come. While it does not (the operator scrolled up, searched, or pressed ``f``), nothing is
dropped, so the lines in view neither slide nor vanish, nor do search matches: a ring grows
up to ``PAUSED_MAX`` and lines past that wait (the newest ``MAX_LINES`` of each service) until
the view follows again.
"""

from __future__ import annotations

import heapq
import re
from collections import deque
from typing import NamedTuple

from rich.cells import cell_len

from runyard.protocol.messages import LogLine

__all__ = ["MAX_LINES", "PAUSED_MAX", "LogRings", "Shown", "clean", "shown_line"]

#: Lines kept per service while following.
MAX_LINES = 5000
#: Lines a service's ring may grow to while the view does not follow.
PAUSED_MAX = 4 * MAX_LINES

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def clean(line: str) -> str:
    """A line as it can be shown: tabs expanded, ANSI escape sequences dropped (a service's
    colours are not ours to replay), other control characters as U+FFFD."""
    if line.isprintable():
        return line
    line = _ESCAPES.sub("", line.expandtabs())
    return _CONTROLS.sub("\ufffd", line)


class Shown(NamedTuple):
    """One kept line: ``n`` counts every line ever added (never reused); ``text`` is the line
    as shown (``clean``) and ``cells`` its width; ``service`` is the line's service in a tagged
    view ("" otherwise). A tuple: thousands are made a second."""

    n: int
    line: LogLine
    text: str
    cells: int
    service: str = ""


def shown_line(n: int, line: LogLine, service: str = "") -> Shown:
    text = clean(line.line)
    return Shown(n, line, text, len(text) if text.isascii() else cell_len(text), service)


class LogRings:
    def __init__(self) -> None:
        self.rings: dict[str, deque[Shown]] = {}
        #: Lines that came while paused with their service's ring full, newest MAX_LINES each.
        self.held: dict[str, deque[Shown]] = {}
        self.held_count = 0
        self.count = 0

    def clear(self) -> None:
        self.rings.clear()
        self.held.clear()
        self.held_count = self.count = 0

    def add(self, batch: list[Shown], following: bool) -> tuple[list[Shown], set[int]]:
        """Keep ``batch``; returns the lines now shown and the ``n`` of those dropped."""
        accepted: list[Shown] = []
        dropped: set[int] = set()
        for shown in batch:
            ring = self.rings.get(shown.service)
            if ring is None:
                ring = self.rings[shown.service] = deque()
            if following:
                if len(ring) >= MAX_LINES:
                    dropped.add(ring.popleft().n)
            elif len(ring) >= PAUSED_MAX:
                held = self.held.get(shown.service)
                if held is None:
                    held = self.held[shown.service] = deque(maxlen=MAX_LINES)
                held.append(shown)
                self.held_count += 1
                continue
            ring.append(shown)
            accepted.append(shown)
        self.count += len(accepted) - len(dropped)
        return accepted, dropped

    def resume(self) -> None:
        """Following again: the held lines join, each ring is cut back to MAX_LINES."""
        for service, held in self.held.items():
            self.rings[service].extend(held)
        self.held.clear()
        self.held_count = 0
        for ring in self.rings.values():
            while len(ring) > MAX_LINES:
                ring.popleft()
        self.count = sum(len(ring) for ring in self.rings.values())

    def merged(self) -> list[Shown]:
        """Every kept line, in the order they arrived."""
        if len(self.rings) == 1:
            return [*next(iter(self.rings.values()))]
        return list(heapq.merge(*self.rings.values(), key=lambda s: s.n))
