"""A bounded, batched, virtual log view: lines are kept as data and only the rows on screen are
ever rendered.

A service printing thousands of lines a second must not cost one widget write per line, nor
the rendering of lines nobody will see: ``add`` only buffers, and every ``FLUSH`` seconds the
buffered lines join the kept ones in one update (one refresh). The view is a ScrollView whose
``render_line`` styles just the lines in the viewport (cached per line), so the cost per flush
does not grow with the number of lines that arrived, and toggling timestamps or wrap, a new
search or a new filter re-renders a screenful, not the 5,000 kept lines.

The last ``MAX_LINES`` lines of each service are kept (``kept``, in ``log_rings.LogRings``,
which also says what following on and off does to them); ``rows`` are those the regex filter
(or its inverse) lets through, oldest first. Scrolling up (keys, wheel, scrollbar) stops
following; End (or ``f``) follows again. Wrapping folds a line at the view's width (cells, not
words, like a terminal), so the rows a line takes are known from its length without rendering
it. Search counts matches on the data, not on the screen.

A ``tagged`` view (every service's log, interleaved) starts each line with its service's name,
padded to the longest name, in a colour of its own: the name reads without colour, the colour
helps the eye. Filter and search match the line's text, not the tag.

Under NO_COLOR Textual turns colours into greys of the same luminance: red stderr became dark
grey on dark grey (~1.3:1). There, stderr is told by attributes only (a reversed ``err│``
marker, bold text) and tags are bold, so every line keeps the terminal's full contrast.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Sequence

from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollTo, ScrollUp
from textual.strip import Strip

from runyard.protocol.messages import LogLine

from .log_rings import MAX_LINES, PAUSED_MAX, LogRings, Shown, clean, shown_line
from .log_style import styled_line

__all__ = ["FLUSH", "MAX_LINES", "LogView", "clean"]

FLUSH = 0.1
#: Cells of the widest service tag in a tagged view (longer names are cut).
TAG_WIDTH = 16
#: Cells of "HH:MM:SS.mmm " and of the stream marker "out│".
STAMP_CELLS = 13
STREAM_CELLS = 4
#: Rendered lines kept for redrawing (several screens' worth); the oldest half goes when full.
STRIP_CACHE = 1024


def _n(shown: Shown) -> int:
    return shown.n


class LogView(ScrollView, can_focus=True):
    # No focus tint (RichLog has one): the view is nearly always focused, and a tint is a
    # colour blend on every segment of every frame, a quarter of a frame's cost at 10 fps.
    DEFAULT_CSS = """
    LogView {
        height: 1fr;
        background: $surface;
        color: $foreground;
        overflow-y: scroll;
        overflow-x: auto;
    }
    """

    class Changed(Message):
        """Follow, search or line count changed: the status line should say so."""

    def __init__(self, *, tagged: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        #: Lines carry their service's name (the interleaved view of every service).
        self.tagged = tagged
        self.tag_width = 0
        self.rings = LogRings()
        #: The kept lines the filter lets through, oldest first: what the view shows.
        self.rows: list[Shown] = []
        self.pending: list[Shown] = []
        self.added = 0
        self.auto_scroll = True
        self.timestamps = False
        self.wrap = False
        self.query_text = ""
        self.matches: list[int] = []  # Shown.n of each match, oldest first
        self.match_at: int | None = None  # index into matches
        self.filter_re: re.Pattern[str] | None = None
        self.filter_invert = False
        #: Updates of the shown lines so far (one per flush or re-render, never one per line).
        self.writes = 0
        #: With wrap: the first screen row of each of ``rows``, and the row count after them.
        self._starts: list[int] = []
        self._total_rows = 0
        self._widest = 0  # cells of the widest line's text, for the horizontal scroll
        # A plain dict, oldest first: an LRU of linked cells would leave a reference cycle per
        # eviction (a thousand a second while following), each holding a Strip, for the GC.
        self._strips: dict[int, Strip] = {}
        #: Looked up once a frame (render_lines), not once a row.
        self._frame_style = Style()
        self._frame_width = 0
        self.mono = False

    def on_mount(self) -> None:
        #: NO_COLOR: attributes instead of colours (see the module docstring).
        self.mono = self.app.no_color
        self.set_interval(FLUSH, self.flush)

    # --- feeding ---------------------------------------------------------------------------------

    def add(self, lines: Iterable[LogLine], sources: Sequence[str] | None = None) -> None:
        """Buffer ``lines``; ``sources`` names each line's service (tagged views)."""
        n, before = self.added, len(self.pending)
        if sources is None:
            self.pending.extend(shown_line(n + i, line) for i, line in enumerate(lines))
        else:
            self.pending.extend(
                shown_line(n + i, line, service)
                for i, (line, service) in enumerate(zip(lines, sources, strict=True))
            )
            widest = max((len(name) for name in set(sources)), default=0)
            if widest > self.tag_width:
                self.tag_width = min(TAG_WIDTH, widest)
                self._strips.clear()  # every tag is padded to the new width
        self.added = n + len(self.pending) - before
        # A burst larger than the view: its head would never show. Every service has a ring of
        # its own in a tagged view (the catch-up of L brings each one's tail): keep more there.
        cap = PAUSED_MAX if self.tagged else MAX_LINES
        if len(self.pending) > cap:
            del self.pending[: len(self.pending) - cap]

    @property
    def kept(self) -> list[Shown]:
        """Every kept line (all services' rings), in the order they arrived."""
        return self.rings.merged()

    @property
    def kept_count(self) -> int:
        return self.rings.count

    @property
    def held_count(self) -> int:
        """Lines that wait for the view to follow again (its ring was full)."""
        return self.rings.held_count

    def reset(self) -> None:
        self.rings.clear()
        self.pending.clear()
        self.rows.clear()
        self.matches.clear()
        self.match_at = None
        self._widest = 0
        self._strips.clear()
        self._layout()
        self.refresh()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        shown, dropped = self.rings.add(batch, following=self.auto_scroll)
        if dropped:  # only while following: the view goes to the end anyway
            self.rows = [s for s in self.rows if s.n not in dropped]
            if self.query_text:
                self._drop_matches(dropped)
        if self.filter_re is not None:
            shown = [s for s in shown if self._passes(s)]
        self.rows.extend(shown)
        self._widest = max(self._widest, max((s.cells for s in shown), default=0))
        if self.query_text:
            self.matches.extend(s.n for s in shown if self._matches(s))
        self._layout()
        self.writes += 1
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()
        self.post_message(self.Changed())

    def _drop_matches(self, dropped: set[int]) -> None:
        before = len(self.matches)
        self.matches = [n for n in self.matches if n not in dropped]
        if self.match_at is not None:
            self.match_at = max(0, self.match_at - (before - len(self.matches)))
            if not self.matches:
                self.match_at = None

    def plain_lines(self) -> list[str]:
        """The kept lines as plain text, without timestamps (what tests and search read)."""
        return [s.text for s in self.kept]

    def visible_lines(self) -> list[str]:
        """The kept lines the filter lets through, as plain text."""
        return [s.text for s in self.rows]

    def rendered_rows(self) -> list[str]:
        """Every screen row of the view as text (timestamps, tags and wrapping included), as
        the user would see it scrolled; for tests, so it renders every row."""
        width = max(1, self.scrollable_content_region.width)
        out = []
        for shown in self.rows:
            text = self._styled(shown, Style()).plain
            if not self.wrap:
                out.append(text)
                continue
            out += [text[i : i + width] for i in range(0, max(1, len(text)), width)]
        return out

    # --- display options ---------------------------------------------------------------------------

    @property
    def follow(self) -> bool:
        return self.auto_scroll

    def set_follow(self, on: bool) -> None:
        if on == self.auto_scroll:
            return
        self.auto_scroll = on
        if on:
            self.flush()
            self.rings.resume()
            self.rerender()  # the rings were cut back: rows, matches and the end
        self.post_message(self.Changed())

    # Scrolling up means "let me read": stop following (End or f follows again).

    def action_scroll_up(self) -> None:
        self.set_follow(False)
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self.set_follow(False)
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self.set_follow(False)
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.set_follow(True)
        super().action_scroll_end()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if not (event.ctrl or event.shift):
            self.set_follow(False)
        super()._on_mouse_scroll_up(event)

    def _on_scroll_up(self, event: ScrollUp) -> None:  # a click on the scrollbar's track
        self.set_follow(False)
        super()._on_scroll_up(event)

    def _on_scroll_to(self, message: ScrollTo) -> None:  # the scrollbar's thumb dragged
        if message.y is not None and message.y < self.scroll_y:
            self.set_follow(False)
        super()._on_scroll_to(message)

    def set_timestamps(self, on: bool) -> None:
        self.timestamps = on
        self.rerender()

    def set_wrap(self, on: bool) -> None:
        self.wrap = on
        self.rerender()

    def rerender(self) -> None:
        """Show the kept lines again after an option changed (only the viewport is drawn)."""
        self.flush()
        self.rows = (
            [s for s in self.kept if self._passes(s)]
            if self.filter_re is not None
            else [*self.kept]
        )
        self._widest = max((s.cells for s in self.rows), default=0)
        self._strips.clear()
        self._layout()
        self.writes += 1
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self._scroll_to_match()
        self.refresh()
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
        return (self.filter_re.search(shown.text) is not None) != self.filter_invert

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
        self._strips.clear()  # the current match is drawn apart
        self._scroll_to_match()
        self.refresh()
        self.post_message(self.Changed())

    def _matches(self, shown: Shown) -> bool:
        return self.query_text.lower() in shown.text.lower()

    def _scroll_to_match(self) -> None:
        if self.match_at is None or not self.matches or not self.rows:
            return
        index = bisect.bisect_left(self.rows, self.matches[self.match_at], key=_n)
        row = self._starts[index] if self.wrap and index < len(self._starts) else index
        self.scroll_to(y=max(0, row - self.size.height // 2), animate=False, immediate=True)

    # --- geometry and rendering ----------------------------------------------------------------------

    @property
    def prefix_cells(self) -> int:
        """Cells before a line's text: timestamp, tag and stream marker."""
        return (
            (STAMP_CELLS if self.timestamps else 0)
            + (self.tag_width + 1 if self.tagged else 0)
            + STREAM_CELLS
        )

    def _layout(self) -> None:
        """The virtual size from ``rows``: one row a line, or with wrap as many as it folds into."""
        width = max(1, self.scrollable_content_region.width)
        if not self.wrap:
            self._starts = []
            self._total_rows = len(self.rows)
            self.virtual_size = Size(self.prefix_cells + self._widest, self._total_rows)
            return
        prefix = self.prefix_cells
        starts, row = [], 0
        for shown in self.rows:
            starts.append(row)
            row += max(1, -(-(prefix + shown.cells) // width))
        self._starts = starts
        self._total_rows = row
        self.virtual_size = Size(width, row)

    def on_resize(self) -> None:
        if self.wrap:
            self._layout()
            if self.auto_scroll:
                self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    def render_lines(self, crop: Region) -> list[Strip]:
        self._frame_style = self.rich_style
        self._frame_width = self.scrollable_content_region.width
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self._frame_width
        style = self._frame_style
        row = scroll_y + y
        if row >= self._total_rows or not self.rows:
            return Strip.blank(width, style)
        if self.wrap:
            index = bisect.bisect_right(self._starts, row) - 1
            fold = row - self._starts[index]
            start = fold * width
        else:
            index, start = row, scroll_x
        strip = self._strip(self.rows[index], style)
        return strip.crop_extend(start, start + width, style)

    def _strip(self, shown: Shown, style: Style) -> Strip:
        strips = self._strips
        cached = strips.get(shown.n)
        if cached is None:
            text = self._styled(shown, style)
            cached = Strip(text.render(self.app.console), self.prefix_cells + shown.cells)
            if len(strips) >= STRIP_CACHE:
                for n in list(itertools.islice(strips, STRIP_CACHE // 2)):
                    del strips[n]
            strips[shown.n] = cached
        return cached

    def _styled(self, shown: Shown, base: Style) -> Text:
        current = self.match_at is not None and self.matches[self.match_at] == shown.n
        tag = shown.service[: self.tag_width].ljust(self.tag_width) if self.tagged else None
        return styled_line(
            shown, base, self.timestamps, tag, self.mono, self.query_text, current=current
        )
