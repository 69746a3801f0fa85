"""The logs of one service, or of every service interleaved (``ALL_LOGS``, each line tagged with
its service): a tail, then live lines; follow, search, a regex filter (and its inverse),
timestamps and wrap, the same in both.

Both scroll back past what they hold: paused at the top line, the view asks the daemon for the
lines before each service's oldest (``logs.tail`` with ``before_seq``: the daemon's ring, then
its rotated log files) and puts them above, merged by time, the line on top staying on top,
until the files have no more or a ring is at PAUSED_MAX."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Input, Static

from runyard.protocol.client import ClientError, NotFound
from runyard.protocol.messages import LogLine

from .banner import Banner
from .bridge import ALL_LOGS
from .dialogs import InputDialog, ServicesDialog
from .footer import KeysFooter
from .log_rings import PAUSED_MAX
from .log_tools import default_save_path, first_at_or_after, format_saved, parse_time, save_lines
from .log_view import LogView

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["LogsScreen", "status_line"]

#: Seconds between looks at whether the view is paused at its top line (scrollback).
SCROLLBACK_EVERY = 0.2
#: The most cells of a filter or search text the status line shows.
PATTERN_CELLS = 12


class LogsScreen(Screen[None]):
    DEFAULT_CSS = """
    LogsScreen #logs-title, LogsScreen #logs-status {
        height: 1;
        background: $boost;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("f", "follow", "Follow"),
        Binding("slash", "search", "Search"),
        Binding("n", "next_match(1)", "Next"),
        Binding("N", "next_match(-1)", "Prev"),
        Binding("t", "timestamps", "Time"),
        Binding("w", "wrap", "Wrap"),
        Binding("F", "filter", "Filter"),
        Binding("I", "invert_filter", "Invert"),
        Binding("v", "services", "Show/hide services", show=False),
        Binding("s", "save", "Save visible lines", show=False),
        Binding("g", "goto", "Go to a time", show=False),
    ]

    def __init__(self, service: str) -> None:
        super().__init__()
        #: The service whose log this is, or ALL_LOGS.
        self.service = service
        self._status_text = ""
        #: Lines that came before the view was mounted (the bridge can be that quick).
        self._early: list[tuple[list[LogLine], bool, list[str] | None]] | None = []
        #: Scrollback: a request is out; the oldest (service, seq)s the daemon had nothing
        #: before.
        self._older_busy = False
        self._older_end: tuple[tuple[str, int], ...] | None = None

    @property
    def all_services(self) -> bool:
        return self.service == ALL_LOGS

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        title = "logs: all services, interleaved" if self.all_services else f"logs: {self.service}"
        yield Static(title, id="logs-title")
        yield LogView(id="log", tagged=self.all_services)
        yield Input(placeholder="search (enter: find, esc: cancel)", id="search")
        yield Static("", id="logs-status")
        yield KeysFooter()

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def on_mount(self) -> None:
        self.query_one("#search", Input).display = False
        self.view.focus()
        early, self._early = self._early or [], None
        for lines, reset, sources in early:
            self.add_lines(lines, reset, sources)
        self._status()
        self.set_interval(SCROLLBACK_EVERY, self._maybe_older)

    def add_lines(
        self, lines: list[LogLine], reset: bool, sources: list[str] | None = None
    ) -> None:
        if self._early is not None:
            self._early.append((lines, reset, sources))
            return
        try:
            view = self.view
        except NoMatches:
            return  # the screen is closing (its widgets are gone): nothing shows these lines
        if reset:
            view.reset()
        view.add(lines, sources)

    # --- keys -----------------------------------------------------------------------------------

    def action_back(self) -> None:
        box = self.query_one("#search", Input)
        if box.has_focus:
            box.display = False
            self.view.focus()
            return
        self.dismiss(None)

    def action_follow(self) -> None:
        self.view.set_follow(not self.view.follow)
        self._status()  # in the same frame as the view, not one message later

    def action_timestamps(self) -> None:
        self.view.set_timestamps(not self.view.timestamps)
        self._status()  # in the same frame as the view, not one message later

    def action_wrap(self) -> None:
        self.view.set_wrap(not self.view.wrap)
        self._status()  # in the same frame as the view, not one message later

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.value = self.view.query_text
        box.focus()

    def action_filter(self) -> None:
        current = self.view.filter_re.pattern if self.view.filter_re is not None else ""

        def answered(pattern: str | None) -> None:
            if pattern is None:
                return
            try:
                self.view.set_filter(pattern)
            except re.error as exc:
                self.notify(f"bad regex: {exc}", severity="error", timeout=4)

        self.app.push_screen(
            InputDialog("Show only lines matching (regex; empty: all lines)", current), answered
        )

    def action_invert_filter(self) -> None:
        if self.view.filter_re is None:
            self.notify("no filter: F sets one", severity="warning", timeout=3)
            return
        self.view.set_filter_invert(not self.view.filter_invert)

    def action_next_match(self, step: int) -> None:
        self.view.next_match(step)
        self._status()

    # --- scrollback ------------------------------------------------------------------------------

    def _maybe_older(self) -> None:
        try:
            view = self.view
        except NoMatches:
            return  # the screen is closing
        heads = {svc: ring[0] for svc, ring in view.rings.rings.items() if ring}
        if view.follow or view.scroll_y > 0 or self._older_busy or not heads:
            return
        key = tuple(sorted((svc, head.line.seq) for svc, head in heads.items()))
        if key == self._older_end or max(map(len, view.rings.rings.values())) >= PAUSED_MAX:
            return
        self._older_busy = True
        low = min(head.n for head in heads.values())
        self.run_worker(self._load_older(key, low), group="older", exit_on_error=False)

    async def _load_older(self, key: tuple[tuple[str, int], ...], low: int) -> None:
        """The lines before each service's oldest, merged by time, above every kept line."""
        bridge = cast("ScreenHost", self.app).bridge
        older: list[tuple[float, int, str, LogLine]] = []
        try:
            for svc, seq in key:
                try:
                    lines = await bridge.older_lines(svc or self.service, seq)
                except NotFound:  # gone after a reload
                    continue
                older += [(x.ts, len(older) + i, svc, x) for i, x in enumerate(lines)]
        except ClientError as exc:
            self.notify(f"older lines: {exc}", severity="error", timeout=4)
            self._older_end = key  # not again for these lines (the banner says the rest)
            return
        finally:
            self._older_busy = False
        try:
            view = self.view
        except NoMatches:
            return  # the screen is closing
        heads = [ring[0].n for ring in view.rings.rings.values() if ring]
        if not heads or min(heads) != low:  # reset or cut back meanwhile: ask again later
            return
        if not older:
            self._older_end = key
            self.notify("the start of the log: no older lines in its files", timeout=3)
            return
        older.sort(key=lambda item: (item[0], item[1]))
        before = view.virtual_size.height
        view.rings.prepend([(svc, line) for _, _, svc, line in older], low)
        view.rerender()
        view.scroll_to(y=view.virtual_size.height - before, animate=False, immediate=True)

    # --- services, save, go to a time -------------------------------------------------------------

    def action_services(self) -> None:
        if not self.all_services:
            self.notify("v: in the view of every service (L)", severity="warning", timeout=3)
            return
        view = self.view
        names = sorted(set(view.rings.rings) | view.hidden)

        def answered(hidden: frozenset[str] | None) -> None:
            if hidden is not None:
                view.set_hidden(hidden)

        self.app.push_screen(ServicesDialog(names, view.hidden), answered)

    def action_save(self) -> None:
        self.view.flush()
        rows = [*self.view.rows]
        default = default_save_path(cast("ScreenHost", self.app).root, self.service)

        def answered(path: str | None) -> None:
            if not path:
                return
            target = Path(path.strip()).expanduser()
            if target.is_dir():
                target /= default.name
            try:
                written = save_lines(target, format_saved(rows, self.all_services))
            except OSError as exc:
                cause = exc.strerror or type(exc).__name__
                self.notify(f"cannot save to {target}: {cause}", severity="error", timeout=6)
                return
            self.notify(f"saved {len(rows)} lines to {written}", timeout=6)

        prompt = f"Save the {len(rows)} visible lines to (a file, or a directory)"
        self.app.push_screen(InputDialog(prompt, str(default)), answered)

    def action_goto(self) -> None:
        def answered(text: str | None) -> None:
            if text:
                self.go_to(text)

        self.app.push_screen(
            InputDialog("Go to the first line at or after (HH:MM[:SS] or ISO time)"), answered
        )

    def go_to(self, text: str) -> None:
        try:
            ts = parse_time(text)
        except ValueError as exc:
            self.notify(str(exc), severity="error", timeout=4)
            return
        view = self.view
        view.flush()
        index = first_at_or_after(view.rows, ts)
        if index is None:
            newest = _clock(view.rows[-1].line.ts) if view.rows else "none"
            self.notify(f"no line at or after {text} (the newest: {newest})", timeout=4)
            return
        view.scroll_to_row(index)
        if index == 0 and view.rows[0].line.ts > ts:
            self.notify(f"the oldest kept line is at {_clock(view.rows[0].line.ts)}", timeout=4)
        self._status()

    @on(Input.Submitted, "#search")
    def _search(self, event: Input.Submitted) -> None:
        event.input.display = False
        self.view.search(event.value)
        self.view.focus()
        self._status()

    @on(LogView.Changed)
    def _status(self) -> None:
        text = status_line(self.view)
        if text != self._status_text:  # ten flushes a second mostly change nothing here
            self._status_text = text
            self.query_one("#logs-status", Static).update(text, layout=False)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _cut(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: cells - 1] + "…"


def status_line(v: LogView) -> str:
    """What the view does, short enough for 80 columns: ``follow`` (or ``paused +N (End)``:
    lines that wait, End follows again), the lines kept, time and wrap when on, the filter,
    the search."""
    if v.follow:
        parts = ["follow"]
    else:
        parts = [f"paused +{v.held_count} (End)" if v.held_count else "paused (End)"]
    parts.append(f"{v.kept_count} lines")
    shown = " ".join(word for word, on in (("time", v.timestamps), ("wrap", v.wrap)) if on)
    if shown:
        parts.append(shown)
    if v.hidden:
        parts.append("hidden: " + _cut(",".join(sorted(v.hidden)), PATTERN_CELLS))
    if v.filter_label:
        parts.append("filter: " + _cut(v.filter_label, PATTERN_CELLS + 3))
    if v.query_text:
        at = 0 if v.match_at is None else v.match_at + 1
        parts.append(f"/{_cut(v.query_text, PATTERN_CELLS)}: {at}/{len(v.matches)} matches")
    return " · ".join(parts)
