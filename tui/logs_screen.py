"""The logs of one service, or of every service interleaved (``ALL_LOGS``, each line tagged with
its service): a tail, then live lines; follow, search, a regex filter (and its inverse),
timestamps and wrap, the same in both."""

from __future__ import annotations

import re
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Input, Static

from runyard.protocol.messages import LogLine

from .banner import Banner
from .bridge import ALL_LOGS
from .dialogs import InputDialog
from .footer import KeysFooter
from .log_view import LogView

__all__ = ["LogsScreen", "status_line"]

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
    ]

    def __init__(self, service: str) -> None:
        super().__init__()
        #: The service whose log this is, or ALL_LOGS.
        self.service = service
        self._status_text = ""
        #: Lines that came before the view was mounted (the bridge can be that quick).
        self._early: list[tuple[list[LogLine], bool, list[str] | None]] | None = []

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
    if v.filter_label:
        parts.append("filter: " + _cut(v.filter_label, PATTERN_CELLS + 3))
    if v.query_text:
        at = 0 if v.match_at is None else v.match_at + 1
        parts.append(f"/{_cut(v.query_text, PATTERN_CELLS)}: {at}/{len(v.matches)} matches")
    return " · ".join(parts)
