"""Disk usage per service: bin / data / logs / config / cache, a bar and the totals.

Live from the daemon's ``du`` events (through the bridge; the TUI never walks the disk). A
service whose logs pass the threshold is drawn in the warning colour *and* marked with ``!``, so
it reads without colour too.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Static

from runyard.protocol.payloads import DiskReport
from runyard.runtime.core.sizes import ByteStyle, format_bytes

from .banner import Banner
from .footer import KeysFooter

__all__ = ["BAR_WIDTH", "LOGS_WARN", "DiskScreen", "bar"]

#: Bytes of logs/<svc>/ past which a service is flagged.
LOGS_WARN = 100 * 1024 * 1024
#: Cells of the widest bar (the service with the largest total).
BAR_WIDTH = 10
PARTS = ("bin", "data", "logs", "config", "cache")
COLUMNS = (
    ("name", "SERVICE"),
    ("bin", "BIN"),
    ("data", "DATA"),
    ("logs", "LOGS"),
    ("config", "CONF"),
    ("cache", "CACHE"),
    ("total", "TOTAL"),
    ("bar", ""),
)
WARN_STYLE = "bold red"


def bar(value: int, largest: int, width: int = BAR_WIDTH) -> str:
    if largest <= 0 or value <= 0:
        return ""
    return "▇" * max(1, round(width * value / largest))


class DiskScreen(Screen[None]):
    DEFAULT_CSS = """
    DiskScreen #disk-title, DiskScreen #disk-status {
        height: 1;
        background: $boost;
        padding: 0 1;
    }
    DiskScreen DataTable {
        height: 1fr;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, logs_warn: int = LOGS_WARN) -> None:
        super().__init__()
        self.logs_warn = logs_warn
        #: The report shown: {service: {part: bytes}}, plus "other" and "total" bytes.
        self.shown: dict[str, dict[str, int]] = {}
        self.other = 0
        self.total = 0

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield Static(
            f"disk usage · ! logs over {format_bytes(self.logs_warn, ByteStyle.COMPACT)}",
            id="disk-title",
        )
        table: DataTable[Any] = DataTable(id="disk", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("waiting for the daemon's disk report…", id="disk-status")
        yield KeysFooter()

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#disk", DataTable)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.table.add_column(label, key=key)
        self.table.focus()
        report = getattr(self.app, "disk_report", None)
        if report is not None:
            self.show_report(report)

    def warned(self, name: str) -> bool:
        return self.shown.get(name, {}).get("logs", 0) > self.logs_warn

    def show_report(self, report: DiskReport) -> None:
        """Replace what is shown with ``report``. Before on_mount (which shows the app's newest
        report) or while being torn down there is nothing to show it in."""
        try:
            table, status = self.table, self.query_one("#disk-status", Static)
        except NoMatches:  # each widget goes on its own when the screen is torn down
            return
        if not table.columns:
            return
        rows = {
            svc.name: {p: getattr(svc, p).bytes for p in (*PARTS, "total")}
            for svc in report.services
        }
        self.shown = rows
        self.other = report.other.bytes
        self.total = report.total.bytes
        largest = max((r["total"] for r in rows.values()), default=0)

        cursor = table.cursor_row
        table.clear()
        for name in sorted(rows):
            table.add_row(*self._cells(name, rows[name], largest), key=name)
        table.add_row(
            Text(" (other)", style="dim"),
            *[""] * 5,
            format_bytes(self.other, ByteStyle.COMPACT),
            "",
            key="",
        )
        table.add_row(
            Text(" TOTAL", style="bold"),
            *[""] * 5,
            format_bytes(self.total, ByteStyle.COMPACT),
            "",
            key=" ",
        )
        if cursor < table.row_count:
            table.move_cursor(row=cursor)
        status.update(self._status(report))

    def _status(self, report: DiskReport) -> str:
        """The line under the table: services, total, the disk's free space, who is flagged."""
        rows = self.shown
        flagged = [n for n in sorted(rows) if self.warned(n)]
        status = f"{len(rows)} services · total {format_bytes(self.total, ByteStyle.COMPACT)}"
        if report.disk_free is not None and report.disk_size:
            free, size = report.disk_free, report.disk_size
            status += (
                f" · disk free {format_bytes(free, ByteStyle.COMPACT)}"
                f" of {format_bytes(size, ByteStyle.COMPACT)} ({free * 100 // size}%)"
            )
        if flagged:
            status += (
                " · ! logs over "
                + format_bytes(self.logs_warn, ByteStyle.COMPACT)
                + ": "
                + ", ".join(flagged)
            )
        return status

    def _cells(self, name: str, r: dict[str, int], largest: int) -> list[Any]:
        warn = self.warned(name)
        style = WARN_STYLE if warn else ""
        cells: list[Any] = [Text(("!" if warn else " ") + name, style=style)]
        for part in PARTS:
            text = format_bytes(r[part], ByteStyle.COMPACT)
            cells.append(Text(text, style=WARN_STYLE if part == "logs" and warn else ""))
        cells.append(Text(format_bytes(r["total"], ByteStyle.COMPACT), style="bold"))
        cells.append(Text(bar(r["total"], largest), style="red" if warn else "cyan"))
        return cells

    def action_back(self) -> None:
        self.dismiss(None)
