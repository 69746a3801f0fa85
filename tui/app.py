"""The Runyard TUI: the App class. It owns the Bridge (the only code that talks to the daemon)
and the services' state, and hands the bridge's messages to the screens that show them.

Two seams, for tests that must render the same on any machine (snapshots): ``bridge`` makes
the bridge (a subclass can post fixed messages instead of talking to a daemon), and ``clock``
is what "now" is when an uptime is shown."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from textual import events, on
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import reactive
from textual.screen import Screen

from runyard.protocol.client import ClientError
from runyard.protocol.messages import ServiceStatus
from runyard.protocol.payloads import DiskReport

from .banner import MIN_SIZE
from .bridge import Bridge, BridgeTarget
from .dialogs import HelpDialog
from .disk_screen import LOGS_WARN, DiskScreen
from .logs_screen import LogsScreen
from .palette import runyard_commands
from .runs_screen import RunsScreen
from .service_detail import DetailScreen, ServiceDetail
from .services_screen import ServicesScreen

__all__ = ["RunyardApp"]

#: At most this many batches of changes wait for the services table (the first, whole one
#: is kept); the next whole status (every REFRESH) puts right what was dropped.
HELD_MAX = 1000


class RunyardApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "runyard"
    BINDINGS: ClassVar[list[BindingType]] = [
        # q is not in the footer, to leave room for the screens' keys at 80 columns: the help
        # (?, always shown) lists it.
        Binding("q", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help"),
    ]

    #: Why the daemon cannot be reached; "" while it answers.
    unreachable: reactive[str] = reactive("")
    #: (columns, rows) of the terminal: the banner says when it is too small.
    terminal_size: reactive[tuple[int, int]] = reactive(MIN_SIZE)

    def __init__(
        self,
        root: Path,
        *,
        read_only: bool = False,
        logs_warn: int = LOGS_WARN,
        bridge: Callable[[Path, BridgeTarget], Bridge] = Bridge,
        clock: Callable[[], float] = time.time,
        label: str | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        #: What the title names: the root, or ``BOX:ROOT`` over ``runyard --host``.
        self.label = label or str(self.root)
        self.read_only = read_only
        self.logs_warn = logs_warn
        #: Seconds since the epoch, now (uptimes are counted from it).
        self.clock = clock
        #: The newest disk report from the daemon.
        self.disk_report: DiskReport | None = None
        self.bridge = bridge(self.root, self)
        self.services_screen = ServicesScreen()
        #: What the daemon said before the services table was composed: (whole, services)
        #: batches, applied by services_shown. After that the table takes them as they come.
        self._held: list[tuple[bool, list[ServiceStatus]]] = []
        self._table_shown = False

    def on_mount(self) -> None:
        self.install_screen(HelpDialog(), "help")
        self.sub_title = self.label + ("  [read-only]" if self.read_only else "")
        if self.read_only:
            self.title = "runyard (read-only)"
        self.terminal_size = (self.size.width, self.size.height)
        self.push_screen(self.services_screen)
        self.run_worker(self.bridge.run(), name="bridge", group="bridge", exit_on_error=False)
        self.call_after_refresh(self._freeze_heap)

    def _freeze_heap(self) -> None:
        """Move everything alive after start-up (Textual, Rich, our modules: most of the heap)
        out of the cyclic GC's reach. A full collection scans every tracked object, and with
        them it took up to ~175 ms under a 10,000 lines/s log: a frozen key press. What is
        frozen stays until the app ends (on_unmount)."""
        if self.is_running:  # not after on_unmount, which would never unfreeze
            gc.collect()
            gc.freeze()

    def on_unmount(self) -> None:
        # Frozen objects are never collected: give them back when the app ends (tests run many
        # apps in one process, one after the other).
        gc.unfreeze()

    async def action_quit(self) -> None:
        self.bridge.stop()
        self.exit()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpDialog):
            self.push_screen("help")

    def on_resize(self, event: events.Resize) -> None:
        self.terminal_size = (event.size.width, event.size.height)

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Runyard's own commands first (ctrl+p), then Textual's (theme, screenshot, quit)."""
        table = self.services_screen.shown_table() if screen is self.services_screen else None
        services = table.services if table is not None else ()
        yield from runyard_commands(self, screen, services)
        yield from super().get_system_commands(screen)

    # --- what screens ask for ---------------------------------------------------------------------

    def open_logs(self, service: str) -> None:
        """The logs screen of ``service``, or of every service (bridge.ALL_LOGS)."""
        self.bridge.follow_logs(service)

        def closed(_: None) -> None:
            self.bridge.follow_logs(None)

        self.push_screen(LogsScreen(service), closed)

    def open_disk(self) -> None:
        self.push_screen(DiskScreen(self.logs_warn))

    def open_runs(self) -> None:
        self.push_screen(RunsScreen())

    def open_detail(self, service: str) -> None:
        """The details of ``service`` on a screen of their own (narrow terminals)."""
        self.push_screen(DetailScreen(service))
        self.call_after_refresh(self.show_details)

    def show_details(self) -> None:
        """Give every details pane on the stack the services as they are now."""
        table = self.services_screen.shown_table()
        if table is None:
            return  # not composed yet, or being torn down
        for screen in self.screen_stack:
            for pane in screen.query(ServiceDetail):
                name = screen.service if isinstance(screen, DetailScreen) else table.selected
                pane.show(name, table.services, table.received)
        self.services_screen.show_summary()

    def request_action(self, action: str, services: list[str]) -> None:
        self.run_worker(
            self._act(action, services), group="actions", exit_on_error=False, exclusive=False
        )

    async def _act(self, action: str, services: list[str]) -> None:
        what = " ".join(services) or "config"
        if self.unreachable:  # say so now, not when a request times out
            self.notify(
                f"{action} {what}: not sent, the daemon is unreachable ({self.unreachable})",
                severity="error",
                timeout=6,
            )
            return
        self.notify(f"{action} {what}…", timeout=2)
        try:
            reply = await self.bridge.action(action, services)
        except ClientError as exc:
            self.notify(f"{action} {what} failed: {exc}", severity="error", timeout=6)
            return
        self._services_in(list(reply.services), whole=False)
        self.notify(f"{action} {what}: done" + (f" ({reply.message})" if reply.message else ""))

    def request_ensure(self, name: str, version_spec: str, catalog: str | None = None) -> None:
        self.run_worker(
            self._ensure(name, version_spec, catalog),
            group="actions",
            exit_on_error=False,
            exclusive=False,
        )

    async def _ensure(self, name: str, version_spec: str, catalog: str | None) -> None:
        if self.unreachable:
            self.notify(
                f"ensure {name}: not sent, the daemon is unreachable ({self.unreachable})",
                severity="error",
                timeout=6,
            )
            return
        self.notify(f"ensure {name} {version_spec}…", timeout=2)
        try:
            binary = await self.bridge.ensure(name, version_spec, catalog)
        except ClientError as exc:
            self.notify(f"ensure {name} {version_spec}: {exc}", severity="error", timeout=6)
            return
        version = binary.version or "?"
        if binary.installed:
            self.notify(f"{name}: installed {version}", timeout=6)
        else:
            self.notify(f"{name} {version}: already installed", timeout=6)

    # --- what the bridge says -----------------------------------------------------------------

    def _services_in(self, services: list[ServiceStatus], *, whole: bool) -> None:
        """Give the table what the daemon said: every service (``whole``), or those that
        changed. Before the services screen is composed it waits (services_shown gives it);
        once the screen has been torn down (the app is ending) nobody shows it."""
        table = self.services_screen.shown_table()
        if table is None or not self._table_shown:
            if not self._table_shown:
                if whole:
                    self._held = [(True, services)]
                else:
                    self._held.append((False, services))
                    del self._held[1:-HELD_MAX]  # a whole one comes every REFRESH: it corrects
            return
        if whole and {s.name for s in services} != set(table.services):
            table.replace_all(services)
        else:
            for status in services:
                table.update_service(status)
        self.show_details()

    def services_shown(self) -> None:
        self._table_shown = True
        held, self._held = self._held, []
        for whole, services in held:
            self._services_in(services, whole=whole)

    @on(Bridge.Connected)
    def _connected(self, message: Bridge.Connected) -> None:
        self.unreachable = ""
        self._services_in(list(message.snapshot.services), whole=True)

    @on(Bridge.Disconnected)
    def _disconnected(self, message: Bridge.Disconnected) -> None:
        self.unreachable = message.reason or "no reason given"

    @on(Bridge.ServiceChanged)
    def _service_changed(self, message: Bridge.ServiceChanged) -> None:
        self._services_in([message.service], whole=False)

    @on(Bridge.StatusRefreshed)
    def _refreshed(self, message: Bridge.StatusRefreshed) -> None:
        self._services_in(message.services, whole=True)

    @on(Bridge.LogLines)
    def _log_lines(self, message: Bridge.LogLines) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, LogsScreen) and screen.service == message.service:
                screen.add_lines(message.lines, message.reset, message.sources)

    @on(Bridge.DiskUpdated)
    def _disk_updated(self, message: Bridge.DiskUpdated) -> None:
        self.disk_report = message.report
        for screen in self.screen_stack:
            if isinstance(screen, DiskScreen):
                screen.show_report(message.report)

    @on(Bridge.RunChanged)
    def _run_changed(self, message: Bridge.RunChanged) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                screen.action_refresh_runs()

    @on(Bridge.DaemonNotice)
    def _daemon_notice(self, message: Bridge.DaemonNotice) -> None:
        text = f"daemon {message.kind}" + (f": {message.message}" if message.message else "")
        self.notify(text, timeout=4)
