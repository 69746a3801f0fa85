"""A bounded, batched log view: lines arrive in bursts, the widget is written on a short timer.

A service printing thousands of lines a second must not cost one widget write per line: ``add``
only buffers, and every ``FLUSH`` seconds the buffered lines go to the RichLog as one write.
The last ``MAX_LINES`` lines are kept here as data too, so toggling timestamps or wrapping, or a
new search, re-renders them, and search counts matches without reading the screen back.
"""

from __future__ import annotations

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
        if self.query_text:
            self.matches.extend(s.n for s in batch if self._matches(s))
            oldest = self.kept[0].n
            dropped = 0
            while dropped < len(self.matches) and self.matches[dropped] < oldest:
                dropped += 1
            if dropped:
                del self.matches[:dropped]
                if self.match_at is not None:
                    self.match_at = max(0, self.match_at - dropped)
        self.write(Text("\n").join(self._styled(s) for s in batch))
        self.post_message(self.Changed())

    def plain_lines(self) -> list[str]:
        """The kept lines as plain text, without timestamps (what tests and search read)."""
        return [s.line.line for s in self.kept]

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
        if self.kept:
            self.write(Text("\n").join(self._styled(s) for s in self.kept))
        self._scroll_to_match()
        self.post_message(self.Changed())

    # --- search ------------------------------------------------------------------------------------

    def search(self, text: str) -> None:
        self.flush()
        self.query_text = text
        self.matches = [s.n for s in self.kept if self._matches(s)] if text else []
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
        row = self.matches[self.match_at] - self.kept[0].n
        if self.wrap and len(self.kept) > 1:  # wrapped rows: scroll in proportion
            row = round(row * len(self.lines) / len(self.kept))
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
