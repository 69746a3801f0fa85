"""The services table: one row per service, keyed by name, updated cell by cell from events.

A state reads without colour (the label is the state's name) and with it (the colour says how
worried to be); under NO_COLOR, where Textual turns colours into greys (red into dark grey on
dark grey), the states that matter are told by reverse, bold and underline instead. INFO says
why a service is as it is (the daemon's reason: "gave up after 3 restarts", a probe's answer,
the backoff counting down), then what the service says of itself (sd_notify STATUS=). A long
name is cut with an ellipsis so that PORTS and READY stay on an 80-column screen.
The table keeps every service it knows, and shows those matching its filter.
"""

from __future__ import annotations

import re
import time

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from runyard.protocol.messages import ServiceStatus
from runyard.runtime.core.sizes import ByteStyle, format_bytes

from .log_rings import clean

__all__ = ["COLUMNS", "NAME_CELLS", "ServicesTable", "cells", "info", "state_label"]

#: (key, header) in display order; short headers so the table fits 80 columns, and what says
#: whether a service works (state, ready, ports) first, so a narrow screen cuts the rest.
COLUMNS = (
    ("name", "NAME"),
    ("state", "STATE"),
    ("ready", "READY"),
    ("ports", "PORTS"),
    ("pid", "PID"),
    ("uptime", "UP"),
    ("restarts", "RST"),
    ("last_exit", "EXIT"),
    ("cpu", "CPU%"),
    ("rss", "RSS"),
    ("status", "INFO"),
)
#: The widest a name is shown (longer ones end in an ellipsis): the other columns fit 80 cells.
NAME_CELLS = 16

STATE_STYLES = {
    "running": "bold green",
    "starting": "yellow",
    "stopping": "yellow",
    "backoff": "bold magenta",
    "exited": "red",
    "fatal": "bold red",
    "stopped": "dim",
}


#: The same, without colour (NO_COLOR): attributes only, so the text keeps the full contrast.
MONO_STATE_STYLES = {
    "running": "bold",
    "backoff": "bold underline",
    "exited": "underline",
    "fatal": "bold reverse",
}
_COUNTDOWN = re.compile(r"; restart in [0-9.]+s$")


def state_label(state: str, mono: bool = False) -> Text:
    return Text(state, style=(MONO_STATE_STYLES if mono else STATE_STYLES).get(state, ""))


def short_name(name: str) -> str:
    return name if len(name) <= NAME_CELLS else name[: NAME_CELLS - 1] + "…"


def info(s: ServiceStatus, age: float = 0.0) -> str:
    """Why the service is as it is, then what it says of itself; ``age``: seconds since the
    daemon sent ``s`` (the backoff countdown goes on between updates)."""
    why = s.reason
    if s.state == "backoff" and s.next_start_in is not None:
        left = max(0.0, s.next_start_in - age)
        why = f"{_COUNTDOWN.sub('', why) or 'backoff'}; restart in {left:.0f}s"
    elif s.state in ("running", "starting") and not why:
        if s.live is False:
            why = f"not answering: {s.live_detail}" if s.live_detail else "not answering"
        elif s.ready is False and s.ready_detail:
            why = f"not ready: {s.ready_detail}"
    elif s.state == "stopped" and why in ("stopped", "stopping"):
        why = ""  # says nothing the STATE column does not
    # STATUS= is the service's own text: its escape sequences are not for our terminal.
    return "; ".join(text for text in (why, clean(s.notify_status)) if text)


def uptime(s: ServiceStatus, now: float | None = None) -> str:
    if s.started_at is None or s.state not in ("starting", "running", "stopping"):
        return "-"
    secs = int(max(0.0, (time.time() if now is None else now) - s.started_at))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    if secs < 86400:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    return f"{secs // 86400}d{secs % 86400 // 3600:02d}h"


def ready(s: ServiceStatus) -> str:
    if s.ready is None:
        return "yes" if s.state == "running" else "-"
    return "yes" if s.ready else "no"


def cells(
    s: ServiceStatus, now: float | None = None, age: float = 0.0, mono: bool = False
) -> dict[str, str | Text]:
    return {
        "name": short_name(s.name),
        "state": state_label(s.state, mono),
        "pid": str(s.pid) if s.pid else "-",
        "uptime": uptime(s, now),
        "restarts": str(s.restarts),
        "last_exit": "-" if s.last_exit is None else str(s.last_exit),
        "cpu": "-" if s.cpu_percent is None else f"{s.cpu_percent:.1f}",
        "rss": "-" if s.rss is None else format_bytes(s.rss, ByteStyle.TENTHS),
        "ports": ",".join(str(p.port) for p in s.ports) or "-",
        "ready": ready(s),
        "status": Text(info(s, age)),  # the service's own words: never markup
    }


class ServicesTable(DataTable[str | Text]):
    DEFAULT_CSS = """
    ServicesTable {
        height: 1fr;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.services: dict[str, ServiceStatus] = {}
        #: When (the app's clock) each service's status arrived: the backoff counts down from it.
        self.received: dict[str, float] = {}
        self.filter_text = ""

    def on_mount(self) -> None:
        for key, header in COLUMNS:
            self.add_column(header, key=key)
        self.set_interval(1.0, self._tick)

    def _now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else time.time()

    def _cells(self, s: ServiceStatus, now: float) -> dict[str, str | Text]:
        age = now - self.received.get(s.name, now)
        return cells(s, now, age, mono=self.app.no_color)

    def _tick(self) -> None:
        """The backoff countdown, once a second (no daemon message says "one second less")."""
        now = self._now()
        for name, s in self.services.items():
            if s.state == "backoff" and s.next_start_in is not None and name in self.rows:
                value = self._cells(s, now)["status"]
                self.update_cell(name, "status", value, update_width=True)

    @property
    def selected(self) -> str | None:
        """The name of the service under the cursor."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return row_key.value

    def replace_all(self, services: list[ServiceStatus]) -> None:
        self.services = {s.name: s for s in services}
        now = self._now()
        self.received = {s.name: now for s in services}
        self._rebuild()

    def update_service(self, service: ServiceStatus) -> None:
        known = service.name in self.services
        self.services[service.name] = service
        now = self._now()
        self.received[service.name] = now
        if not self._visible(service.name):
            return
        if not known or service.name not in self.rows:
            self._rebuild()
            return
        try:
            for key, value in self._cells(service, now).items():
                self.update_cell(service.name, key, value, update_width=True)
        except CellDoesNotExist:  # the rows changed under us: draw them afresh
            self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild()

    def _visible(self, name: str) -> bool:
        return not self.filter_text or self.filter_text in name.lower()

    def _rebuild(self) -> None:
        keep = self.selected
        self.clear()
        now = self._now()
        for name in sorted(self.services):
            if self._visible(name):
                row = self._cells(self.services[name], now)
                self.add_row(*(row[key] for key, _ in COLUMNS), key=name)
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep))
