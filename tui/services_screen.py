"""The main screen: the services table, its filter, and the keys that act on a service.

While the daemon is unreachable the table keeps the last known state, dimmed, under a line that
says so (the dimming alone would not read without colour); both go when the daemon is back."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from .banner import Banner
from .bridge import ALL_LOGS
from .dialogs import ConfirmDialog, InputDialog
from .footer import KeysFooter
from .services_table import ServicesTable

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["STALE", "ServicesScreen"]

STALE = "last known state, not live: the daemon is unreachable"


class ServicesScreen(Screen[None]):
    DEFAULT_CSS = """
    ServicesScreen #stale {
        display: none;
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        color: $text-warning;
        text-style: italic;
    }
    ServicesScreen.-stale #stale {
        display: block;
    }
    ServicesScreen.-stale ServicesTable {
        opacity: 50%;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "act('start')", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("r", "act('restart')", "Restart"),
        Binding("R", "reload", "Reload"),
        Binding("e", "ensure", "Ensure", show=False),  # rare; in the help, not the footer
        Binding("slash", "filter", "Filter"),
        Binding("L", "all_logs", "All logs"),
        Binding("d", "disk", "Disk"),
        Binding("u", "runs", "Runs"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield Static(STALE, id="stale")
        yield Input(placeholder="filter by name (enter: keep, esc: clear)", id="filter")
        yield ServicesTable(id="services")
        yield KeysFooter()

    @property
    def table(self) -> ServicesTable:
        return self.query_one(ServicesTable)

    @property
    def runyard(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.table.focus()
        self.watch(self.app, "unreachable", self._reachability)

    def _reachability(self, reason: str) -> None:
        self.set_class(bool(reason), "-stale")

    @property
    def stale(self) -> bool:
        """The table shows the last known state, not live data."""
        return self.has_class("-stale")

    # --- filter ---------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = bool(box.value)
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.display = False
        self.table.set_filter("")
        self.table.focus()

    # --- other screens ---------------------------------------------------------------------------

    def action_all_logs(self) -> None:
        self.runyard.open_logs(ALL_LOGS)

    def action_disk(self) -> None:
        self.runyard.open_disk()

    def action_runs(self) -> None:
        self.runyard.open_runs()

    # --- actions --------------------------------------------------------------------------------

    def _target(self) -> str | None:
        if self.runyard.read_only:
            self.notify("read-only: actions are disabled", severity="warning")
            return None
        name = self.table.selected
        if name is None:
            self.notify("no service selected", severity="warning")
        return name

    def action_act(self, action: str) -> None:
        name = self._target()
        if name is not None:
            self.runyard.request_action(action, [name])

    def action_stop(self) -> None:
        name = self._target()
        if name is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.runyard.request_action("stop", [name])

        self.app.push_screen(ConfirmDialog(f"Stop service [b]{name}[/b]?"), answered)

    def action_ensure(self) -> None:
        name = self._target()
        if name is None:
            return

        def answered(spec: str | None) -> None:
            if spec is not None:
                self.runyard.request_ensure(name, spec.strip() or "latest")

        self.app.push_screen(
            InputDialog(f"Ensure a version of [b]{name}[/b] (VERSION_SPEC)", "latest"), answered
        )

    def action_reload(self) -> None:
        if self.runyard.read_only:
            self.notify("read-only: actions are disabled", severity="warning")
            return
        self.runyard.request_action("reload", [])

    @on(DataTable.RowSelected)
    def _open_logs(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.runyard.open_logs(event.row_key.value)
