"""The services table: one row per service, keyed by name, updated cell by cell from events.

A state reads without colour (the label is the state's name) and with it (the colour says how
worried to be). The table keeps every service it knows, and shows those matching its filter.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from runyard.protocol.messages import ServiceStatus
from runyard.runtime.core.sizes import ByteStyle, format_bytes

__all__ = ["COLUMNS", "ServicesTable", "cells", "state_label"]

#: (key, header) in display order; short headers so the table fits 80 columns.
COLUMNS = (
    ("name", "NAME"),
    ("state", "STATE"),
    ("pid", "PID"),
    ("uptime", "UP"),
    ("restarts", "RST"),
    ("last_exit", "EXIT"),
    ("cpu", "CPU%"),
    ("rss", "RSS"),
    ("ports", "PORTS"),
    ("ready", "READY"),
    ("status", "STATUS"),
)

STATE_STYLES = {
    "running": "bold green",
    "starting": "yellow",
    "stopping": "yellow",
    "backoff": "bold magenta",
    "exited": "red",
    "fatal": "bold red",
    "stopped": "dim",
}


def state_label(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


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


def cells(s: ServiceStatus, now: float | None = None) -> dict[str, str | Text]:
    return {
        "name": s.name,
        "state": state_label(s.state),
        "pid": str(s.pid) if s.pid else "-",
        "uptime": uptime(s, now),
        "restarts": str(s.restarts),
        "last_exit": "-" if s.last_exit is None else str(s.last_exit),
        "cpu": "-" if s.cpu_percent is None else f"{s.cpu_percent:.1f}",
        "rss": "-" if s.rss is None else format_bytes(s.rss, ByteStyle.TENTHS),
        "ports": ",".join(str(p.port) for p in s.ports) or "-",
        "ready": ready(s),
        # what the service says of itself (sd_notify STATUS=)
        "status": s.notify_status or "",
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
        self.filter_text = ""

    def on_mount(self) -> None:
        for key, header in COLUMNS:
            self.add_column(header, key=key)

    def _now(self) -> float:
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else time.time()

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
        self._rebuild()

    def update_service(self, service: ServiceStatus) -> None:
        known = service.name in self.services
        self.services[service.name] = service
        if not self._visible(service.name):
            return
        if not known or service.name not in self.rows:
            self._rebuild()
            return
        try:
            for key, value in cells(service, self._now()).items():
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
                row = cells(self.services[name], now)
                self.add_row(*(row[key] for key, _ in COLUMNS), key=name)
        if keep is not None and keep in self.rows:
            self.move_cursor(row=self.get_row_index(keep))
