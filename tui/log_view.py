"""A bounded, batched log view: lines arrive in bursts, the widget is written on a short timer.

A service printing thousands of lines a second must not cost one widget write per line: ``add``
only buffers, and every ``FLUSH`` seconds the buffered lines go to the RichLog as one write.
The last ``MAX_LINES`` lines are kept here as data too, so toggling timestamps or wrapping, or a
new search, re-renders them, and search counts matches without reading the screen back.

A regex filter (and its inverse) hides lines without dropping them: every line stays in ``kept``,
and only the lines that pass are written, in the same one write per flush.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.message import Message
from textual.widgets import RichLog

from protocol.messages import LogLine

__all__ = ["FLUSH", "MAX_LINES", "LogView"]

MAX_LINES = 5000
FLUSH = 0.1


@dataclass(frozen=True, slots=True)
class Shown:
    """One line as kept for re-rendering; ``n`` counts every line ever added (never reused)."""

    n: int
    line: LogLine


class LogView(RichLog):
    DEFAULT_CSS = """
    LogView {
        height: 1fr;
    }
    """

    class Changed(Message):
        """Follow, search or line count changed: the status line should say so."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=MAX_LINES, markup=False, wrap=False, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.kept: deque[Shown] = deque(maxlen=MAX_LINES)
        self.pending: list[Shown] = []
        self.added = 0
        self.timestamps = False
        self.query_text = ""
        self.matches: list[int] = []  # Shown.n of each match, oldest first
        self.match_at: int | None = None  # index into matches
        self.filter_re: re.Pattern[str] | None = None
        self.filter_invert = False

    def on_mount(self) -> None:
        self.set_interval(FLUSH, self.flush)

    # --- feeding ---------------------------------------------------------------------------------

    def add(self, lines: Iterable[LogLine]) -> None:
        for line in lines:
            self.pending.append(Shown(self.added, line))
            self.added += 1
        if len(self.pending) > MAX_LINES:  # a burst larger than the view: the head never shows
            del self.pending[: len(self.pending) - MAX_LINES]

    def reset(self) -> None:
        self.kept.clear()
        self.pending.clear()
        self.matches.clear()
        self.match_at = None
        self.clear()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self.kept.extend(batch)
        shown = [s for s in batch if self._passes(s)]
        if self.query_text:
            self.matches.extend(s.n for s in shown if self._matches(s))
            oldest = self.kept[0].n
            dropped = 0
            while dropped < len(self.matches) and self.matches[dropped] < oldest:
                dropped += 1
            if dropped:
                del self.matches[:dropped]
                if self.match_at is not None:
                    self.match_at = max(0, self.match_at - dropped)
        if shown:
            self.write(Text("\n").join(self._styled(s) for s in shown))
        self.post_message(self.Changed())

    def plain_lines(self) -> list[str]:
        """The kept lines as plain text, without timestamps (what tests and search read)."""
        return [s.line.line for s in self.kept]

    def visible_lines(self) -> list[str]:
        """The kept lines the filter lets through, as plain text."""
        return [s.line.line for s in self.kept if self._passes(s)]

    # --- display options ---------------------------------------------------------------------------

    @property
    def follow(self) -> bool:
        return self.auto_scroll

    def set_follow(self, on: bool) -> None:
        self.auto_scroll = on
        if on:
            self.scroll_end(animate=False)
        self.post_message(self.Changed())

    def set_timestamps(self, on: bool) -> None:
        self.timestamps = on
        self.rerender()

    def set_wrap(self, on: bool) -> None:
        self.wrap = on
        self.rerender()

    def rerender(self) -> None:
        self.flush()
        self.clear()
        shown = [s for s in self.kept if self._passes(s)]
        if shown:
            self.write(Text("\n").join(self._styled(s) for s in shown))
        self._scroll_to_match()
        self.post_message(self.Changed())

    # --- filter -------------------------------------------------------------------------------------

    @property
    def filter_label(self) -> str:
        """``/re/`` or ``!/re/`` (inverse); "" without a filter."""
        if self.filter_re is None:
            return ""
        return ("!" if self.filter_invert else "") + f"/{self.filter_re.pattern}/"

    def set_filter(self, pattern: str) -> None:
        """Show only lines matching ``pattern`` ("" clears the filter); raises re.error."""
        compiled = re.compile(pattern) if pattern else None
        self.flush()
        self.filter_re = compiled
        if compiled is None:
            self.filter_invert = False
        self._refilter()

    def set_filter_invert(self, on: bool) -> None:
        self.flush()
        self.filter_invert = on
        self._refilter()

    def _refilter(self) -> None:
        if self.query_text:
            self.matches = [s.n for s in self.kept if self._passes(s) and self._matches(s)]
            self.match_at = len(self.matches) - 1 if self.matches else None
        self.rerender()

    def _passes(self, shown: Shown) -> bool:
        if self.filter_re is None:
            return True
        return (self.filter_re.search(shown.line.line) is not None) != self.filter_invert

    # --- search ------------------------------------------------------------------------------------

    def search(self, text: str) -> None:
        self.flush()
        self.query_text = text
        self.matches = (
            [s.n for s in self.kept if self._passes(s) and self._matches(s)] if text else []
        )
        self.match_at = len(self.matches) - 1 if self.matches else None
        if self.matches:
            self.auto_scroll = False
        self.rerender()

    def next_match(self, step: int) -> None:
        if not self.matches:
            return
        self.auto_scroll = False
        at = len(self.matches) - 1 if self.match_at is None else self.match_at
        self.match_at = (at + step) % len(self.matches)
        self._scroll_to_match()
        self.post_message(self.Changed())

    def _matches(self, shown: Shown) -> bool:
        return self.query_text.lower() in shown.line.line.lower()

    def _scroll_to_match(self) -> None:
        if self.match_at is None or not self.matches or not self.kept:
            return
        target = self.matches[self.match_at]
        if self.filter_re is None:
            row = target - self.kept[0].n
        else:  # hidden lines take no row
            row = sum(1 for s in self.kept if s.n < target and self._passes(s))
        shown = len(self.kept) if self.filter_re is None else len(self.visible_lines())
        if self.wrap and shown > 1:  # wrapped rows: scroll in proportion
            row = round(row * len(self.lines) / shown)
        self.scroll_to(y=max(0, row - self.size.height // 2), animate=False)

    # --- rendering ---------------------------------------------------------------------------------

    def _styled(self, shown: Shown) -> Text:
        line = shown.line
        err = line.stream in ("err", "stderr")
        text = Text()
        if self.timestamps:
            stamp = datetime.fromtimestamp(line.ts).strftime("%H:%M:%S.%f")[:-3]
            text.append(stamp + " ", style="dim")
        text.append("err│" if err else "out│", style="bold red" if err else "dim")
        text.append(line.line, style="red" if err else "")
        if self.query_text:
            current = self.match_at is not None and self.matches[self.match_at] == shown.n
            text.highlight_words(
                [self.query_text],
                style="black on yellow" if current else "reverse",
                case_sensitive=False,
            )
        return text
