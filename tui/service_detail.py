"""One service in full: why it is as it is, how it is set up, and what it printed on stderr last.

The pane sits right of the services table from ``WIDE`` columns; below that ``i`` opens it as a
screen of its own (``DetailScreen``). It shows the status the app already has (pushed by the app
with each change, so it is as live as the table) and asks the daemon for the service's last
stderr lines, and its CPU/RSS samples of the last minutes (sparklines, ``sparkline.py``), when
the service shown changes and every ``STDERR_EVERY`` seconds while shown.
"""

from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Static

from runyard.protocol.client import ClientError
from runyard.protocol.messages import LogLine, ServiceStatus
from runyard.protocol.payloads import StatSample

from .banner import Banner
from .footer import KeysFooter
from .literal import literal as _literal
from .log_rings import clean
from .services_table import info, ready, uptime
from .sparkline import stats_rows

if TYPE_CHECKING:
    from .host import ScreenHost

__all__ = ["WIDE", "DetailScreen", "ServiceDetail", "detail_lines"]

#: Columns from which the details sit beside the table.
WIDE = 120
#: Seconds between two reads of the shown service's stderr lines.
STDERR_EVERY = 2.0


def _ago(then: float, now: float) -> str:
    secs = int(max(0.0, now - then))
    if secs < 120:
        return f"{secs}s ago"
    if secs < 7200:
        return f"{secs // 60}m ago"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m ago"


def _probe(answer: bool | None, detail: str) -> str:
    if answer is None:
        return "-" + (f"  {_literal(detail)}" if detail else "  (no probe)")
    word = "yes" if answer else "[b]no[/b]"
    return word + (f"  {_literal(detail)}" if detail else "")


def _row(label: str, value: str) -> str:
    return f"  [b]{label:<11}[/b]{value}"


def _state_rows(s: ServiceStatus, now: float, age: float) -> list[str]:
    rows = [_row("state", f"[b]{_literal(s.state)}[/b]  (wanted {_literal(s.wanted)})")]
    why = info(s, age)
    if why:
        rows.append(_row("why", _literal(why)))
    if s.state == "backoff" and s.next_start_in is not None:
        rows.append(_row("next start", f"in {max(0.0, s.next_start_in - age):.0f}s"))
    if s.last_exit is not None:
        when = ""
        if s.last_exit_at is not None:
            stamp = datetime.fromtimestamp(s.last_exit_at).strftime("%H:%M:%S")
            when = f", {_ago(s.last_exit_at, now)} ({stamp})"
        rows.append(_row("last exit", f"{s.last_exit}{when}"))
    rows.append(_row("restarts", str(s.restarts)))
    if s.pid:
        rows.append(_row("pid", f"{s.pid}  up {uptime(s, now)}"))
    rows.append(_row("ready", _probe(s.ready, s.ready_detail) if s.ready is not None else ready(s)))
    rows.append(_row("live", _probe(s.live, s.live_detail)))
    return rows


def _setup_rows(s: ServiceStatus, services: dict[str, ServiceStatus]) -> list[str]:
    setup = s.setup
    rows = [_row("version", _literal(s.version or "?"))]
    if setup.bin:
        rows.append(_row("bin", _literal(setup.bin)))
    ports = ", ".join(f"{p.name} {p.port}/{p.protocol}" for p in s.ports)
    rows.append(_row("ports", _literal(ports) or "-"))
    needs = ", ".join(f"{name} ({cond})" for name, cond in sorted(s.depends_on.items()))
    rows.append(_row("needs", _literal(needs) or "-"))
    users = sorted(name for name, other in services.items() if s.name in other.depends_on)
    rows.append(_row("needed by", _literal(", ".join(users)) or "-"))
    if setup.restart:
        policy = setup.restart
        if setup.restart != "never":
            policy += f", at most {setup.max_restarts} in a row, backoff {setup.backoff}"
        rows.append(_row("restart", _literal(policy)))
    rows.append(_row("contained", _literal(s.containment or "-")))
    limits = "; ".join(x for x in (setup.limits, s.limits_note) if x)
    rows.append(_row("limits", _literal(limits) or "none"))
    if s.notify_status:
        rows.append(_row("says", _literal(clean(s.notify_status))))
    return rows


def detail_lines(
    s: ServiceStatus,
    services: dict[str, ServiceStatus],
    stderr: list[LogLine] | None,
    now: float,
    age: float = 0.0,
    samples: list[StatSample] | None = None,
) -> list[str]:
    """The pane as markup lines; ``stderr`` None: not read yet; ``age``: seconds since ``s``
    came from the daemon (the backoff counts down); ``samples``: its CPU/RSS of the last
    minutes (none: no sparklines)."""
    lines = [f"[b]{_literal(s.name)}[/b] {_literal(s.version)}"]
    lines += _state_rows(s, now, age)
    lines += [_row(label, _literal(value)) for label, value in stats_rows(samples or [])]
    lines += _setup_rows(s, services)
    if stderr is None:
        lines.append("[b]stderr[/b] (reading…)")
    else:
        lines.append(
            f"[b]stderr[/b], last {len(stderr)} lines" if stderr else "[b]stderr[/b]: none"
        )
        for line in stderr:
            stamp = datetime.fromtimestamp(line.ts).strftime("%H:%M:%S")
            lines.append(f"  {stamp} {_literal(clean(line.line))}")  # no escapes of its own
    return lines


class ServiceDetail(VerticalScroll):
    """The details of one service; the app calls ``show`` with each change it hears of."""

    DEFAULT_CSS = """
    ServiceDetail {
        height: 1fr;
        padding: 0 1;
        background: $surface;
    }
    ServiceDetail > Static {
        width: 100%;  /* long values (a bin path) wrap inside the pane */
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.service: str | None = None
        self.stderr: list[LogLine] | None = None
        self.samples: list[StatSample] = []
        #: What the pane shows, as plain text (for tests and the curious).
        self.text = ""
        self._services: dict[str, ServiceStatus] = {}
        self._received: dict[str, float] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-text")

    @property
    def runyard(self) -> ScreenHost:
        return cast("ScreenHost", self.app)

    def on_mount(self) -> None:
        self.set_interval(STDERR_EVERY, self._read_stderr)
        self._redraw()  # what the app gave before the text was composed

    def show(
        self,
        service: str | None,
        services: dict[str, ServiceStatus],
        received: dict[str, float],
    ) -> None:
        """Show ``service`` (None: nothing selected) as ``services`` has it now."""
        changed = service != self.service
        self.service, self._services, self._received = service, services, received
        if changed:
            self.stderr = None
            self.samples = []
            self._read_stderr()
        self._redraw()

    def _redraw(self) -> None:
        """Draw what ``show`` was given. The app gives it to every pane on the stack, which
        can be before the pane's text is composed (on_mount draws it then) or after it is
        torn down (the app is ending: nobody reads it)."""
        try:
            shown = self.query_one("#detail-text", Static)
        except NoMatches:
            return
        s = self._services.get(self.service or "")
        if s is None:
            markup = "no service selected"
        else:
            clock = getattr(self.app, "clock", time.time)
            now = clock()
            age = now - self._received.get(s.name, now)
            markup = "\n".join(detail_lines(s, self._services, self.stderr, now, age, self.samples))
        self.text = Text.from_markup(markup).plain
        shown.update(markup)

    def _read_stderr(self) -> None:
        if self.service is None or not self.display or not self.screen.is_current:
            return
        # The function, not a coroutine: a worker cancelled before it starts leaves none behind.
        self.run_worker(
            partial(self._stderr, self.service), group="stderr", exclusive=True, exit_on_error=False
        )

    async def _stderr(self, service: str) -> None:
        try:
            lines = await self.runyard.bridge.stderr_tail(service)
        except ClientError:
            return  # the banner says the daemon is unreachable; keep what was shown
        try:
            samples = await self.runyard.bridge.samples(service)
        except ClientError:
            samples = []
        if service == self.service:
            self.stderr, self.samples = lines, samples
            self._redraw()


class DetailScreen(Screen[None]):
    """The details on a screen of their own, for terminals narrower than ``WIDE``."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,i", "back", "Back")]

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield ServiceDetail(id="detail")
        yield KeysFooter()

    @property
    def detail(self) -> ServiceDetail:
        return self.query_one(ServiceDetail)

    def on_mount(self) -> None:
        self.detail.focus()  # arrows, page keys and End scroll it

    def action_back(self) -> None:
        self.dismiss(None)
