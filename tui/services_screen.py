"""The main screen: the services table, its filter, and the keys that act on a service.

From ``WIDE`` columns the selected service's details sit right of the table; below that one
line under the table says why the selected service is as it is, and ``i`` opens the details
on their own screen. A status line counts the services by state. In read-only mode the action
keys are not offered (not in the footer, not in the palette); pressed, they say why nothing
happens.

While the daemon is unreachable the table keeps the last known state, dimmed, under a line that
says so (the dimming alone would not read without colour); both go when the daemon is back."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from runyard.protocol.messages import ServiceStatus

from .banner import Banner
from .bridge import ALL_LOGS
from .dialogs import ConfirmDialog, EnsureDialog
from .footer import KeysFooter
from .service_detail import WIDE, ServiceDetail
from .services_table import ServicesTable, info

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["READ_ONLY_REFUSED", "STALE", "ServicesScreen", "summary"]

STALE = "last known state, not live: the daemon is unreachable"
READ_ONLY_REFUSED = "read-only: actions are disabled"
#: The order states are counted in: the working ones first.
STATE_ORDER = ("running", "starting", "stopping", "backoff", "exited", "fatal", "stopped")
#: The actions read-only mode refuses.
ACTIONS = frozenset({"act", "stop", "reload", "ensure"})


def summary(services: dict[str, ServiceStatus]) -> str:
    """``7 services: 5 running, 1 backoff, 1 fatal``."""
    counts: dict[str, int] = {}
    for s in services.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    order = [*STATE_ORDER, *sorted(set(counts) - set(STATE_ORDER))]
    parts = [f"{counts[state]} {state}" for state in order if state in counts]
    noun = "service" if len(services) == 1 else "services"
    return f"{len(services)} {noun}" + (": " + ", ".join(parts) if parts else "")


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
    ServicesScreen #body {
        height: 1fr;
    }
    ServicesScreen ServicesTable {
        width: 1fr;
    }
    ServicesScreen #side {
        display: none;
        width: 48;
        border-left: solid $accent;
    }
    ServicesScreen.-wide #side {
        display: block;
    }
    ServicesScreen #why, ServicesScreen #counts {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    ServicesScreen #counts {
        background: $boost;
    }
    ServicesScreen.-wide #why {
        display: none;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "act('start')", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("r", "act('restart')", "Restart"),
        Binding("R", "reload", "Reload"),
        Binding("e", "ensure", "Ensure", show=False),  # rare; in the help, not the footer
        Binding("slash", "filter", "Filter"),
        Binding("i", "detail", "Details", show=False),  # beside the table from WIDE columns
        Binding("L", "all_logs", "All logs"),
        Binding("d", "disk", "Disk"),
        Binding("u", "runs", "Runs"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("o", "sort", "Sort by next column", show=False),
        Binding("O", "sort_reverse", "Reverse the sort", show=False),
        # Read-only: the keys above are hidden (check_action) and these say why nothing happens.
        Binding("s,x,r,R,e", "refused", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield Static(STALE, id="stale")
        yield Input(placeholder="filter by name (enter: keep, esc: clear)", id="filter")
        with Horizontal(id="body"):
            yield ServicesTable(id="services")
            yield ServiceDetail(id="side")
        yield Static("", id="why")
        yield Static("", id="counts")
        yield KeysFooter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTIONS:
            return not self.runyard.read_only
        if action == "refused":
            return self.runyard.read_only
        return True

    def action_refused(self) -> None:
        self.notify(READ_ONLY_REFUSED, severity="warning")

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width >= WIDE, "-wide")
        self.runyard.show_details()

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self.runyard.show_details()

    def show_summary(self) -> None:
        """The counts line, and (narrow screens) why the selected service is as it is."""
        if not self.is_mounted:
            return  # composed later, with what the app knows then
        try:
            table = self.table
            counts, why_line = self.query_one("#counts", Static), self.query_one("#why", Static)
        except NoMatches:  # being torn down
            return
        counts.update(summary(table.services))
        name = table.selected
        s = table.services.get(name or "")
        line = ""
        if s is not None:
            age = self.runyard.clock() - table.received.get(s.name, self.runyard.clock())
            why = info(s, age)
            line = f"{s.name}: {s.state}" + (f", {why}" if why else "") + "  (i: details)"
        why_line.update(Text(line))  # STATUS= is the service's own text: never markup

    def action_detail(self) -> None:
        name = self.table.selected
        if name is None:
            self.notify("no service selected", severity="warning")
            return
        self.runyard.open_detail(name)

    @property
    def table(self) -> ServicesTable:
        return self.query_one(ServicesTable)

    def shown_table(self) -> ServicesTable | None:
        """The table, or None before the screen is composed and while it is torn down."""
        try:
            return self.query_one(ServicesTable)
        except NoMatches:
            return None

    @property
    def runyard(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.table.focus()
        self.watch(self.app, "unreachable", self._reachability)
        self.runyard.services_shown()

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

    # --- sort -----------------------------------------------------------------------------------

    def action_sort(self) -> None:
        self.table.cycle_sort()
        self.runyard.show_details()

    def action_sort_reverse(self) -> None:
        self.table.set_sort(self.table.sort_key, not self.table.sort_reverse)
        self.runyard.show_details()

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
            self.notify(READ_ONLY_REFUSED, severity="warning")
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

        def answered(answer: tuple[str, str] | None) -> None:
            if answer is not None:
                spec, catalog = answer
                self.runyard.request_ensure(name, spec or "latest", catalog or None)

        self.app.push_screen(EnsureDialog(name), answered)

    def action_reload(self) -> None:
        if self.runyard.read_only:
            self.notify(READ_ONLY_REFUSED, severity="warning")
            return
        self.runyard.request_action("reload", [])

    @on(DataTable.RowSelected)
    def _open_logs(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.runyard.open_logs(event.row_key.value)
