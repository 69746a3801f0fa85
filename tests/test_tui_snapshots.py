"""Snapshots (pytest-textual-snapshot) of every screen at 80x24 and 120x40.

The app runs on tuikit.ScriptedBridge: fixed msgspec messages posted through the bridge's own
message path, a fixed clock for uptimes and TZ=UTC for log timestamps, so nothing on screen
depends on the machine, the time or a temp path. ``--snapshot-update`` rewrites the .svg files
under __snapshots__/ (review them before committing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from textual.pilot import Pilot
from tuikit import LOGS, RUN_ID, SERVICES, scripted_app, until

from runyard.tui.dialogs import HelpDialog
from runyard.tui.disk_screen import DiskScreen
from runyard.tui.logs_screen import LogsScreen
from runyard.tui.runs_screen import RunsScreen
from runyard.tui.service_detail import WIDE, DetailScreen, ServiceDetail
from runyard.tui.services_table import ServicesTable

pytestmark = pytest.mark.timeout(120)

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}

Step = Callable[[Pilot], Awaitable[None]]


@pytest.fixture(autouse=True)
def fixed_environment() -> Iterator[None]:
    """Log timestamps are shown in local time: make it UTC. NO_COLOR would drop the colours."""
    saved = {name: os.environ.get(name) for name in ("TZ", "NO_COLOR")}
    os.environ["TZ"] = "UTC"
    os.environ.pop("NO_COLOR", None)
    time.tzset()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        time.tzset()


async def services_shown(pilot: Pilot) -> None:
    def rows() -> int:
        tables = pilot.app.screen.query(ServicesTable)
        return tables.first().row_count if tables else 0

    await until(pilot, lambda: rows() == len(SERVICES), "the fixed services")


async def on_screen(pilot: Pilot, kind: type, what: str) -> object:
    return await until(pilot, lambda: isinstance(pilot.app.screen, kind) and pilot.app.screen, what)


async def log_lines(pilot: Pilot, count: int) -> None:
    screen = await on_screen(pilot, LogsScreen, "the logs screen")
    assert isinstance(screen, LogsScreen)
    view = screen.view
    await until(pilot, lambda: len(view.kept) == count and not view.pending, "the lines shown")


async def services(pilot: Pilot) -> None:
    await services_shown(pilot)


async def unreachable(pilot: Pilot) -> None:
    await services_shown(pilot)
    screen = pilot.app.screen
    await until(pilot, lambda: getattr(screen, "stale", False), "the greyed table")


async def logs_one(pilot: Pilot) -> None:
    await services_shown(pilot)
    await pilot.press("enter")  # the cursor starts on the first row: api
    await log_lines(pilot, len(LOGS["api"]))


async def logs_all(pilot: Pilot) -> None:
    await services_shown(pilot)
    await pilot.press("L")
    await log_lines(pilot, sum(len(lines) for lines in LOGS.values()))
    await pilot.press("t")  # timestamps on: TZ is UTC here
    screen = pilot.app.screen
    assert isinstance(screen, LogsScreen)
    await until(pilot, lambda: screen.view.timestamps, "timestamps on")


async def disk(pilot: Pilot) -> None:
    await services_shown(pilot)
    await pilot.press("d")
    screen = await on_screen(pilot, DiskScreen, "the disk screen")
    assert isinstance(screen, DiskScreen)
    await until(pilot, lambda: len(screen.shown) == 5, "the fixed disk report")


async def runs_list(pilot: Pilot) -> None:
    await services_shown(pilot)
    await pilot.press("u")
    screen = await on_screen(pilot, RunsScreen, "the runs screen")
    assert isinstance(screen, RunsScreen)
    await until(pilot, lambda: len(screen.runs) == 2, "the fixed runs")
    await until(pilot, lambda: screen.selected == RUN_ID, "the newest run selected")
    # The details follow the cursor: wait for them too, so the picture is always the same.
    await until(pilot, lambda: "files (10," in screen.detail_text, "the run's details")


async def run_details(pilot: Pilot) -> None:
    await runs_list(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, RunsScreen)
    await pilot.press("enter")
    await until(pilot, lambda: "files (10," in screen.detail_text, "the run's details")


async def run_files(pilot: Pilot) -> None:
    """The end of the details, where the file list is, reached with the keyboard."""
    await run_details(pilot)
    await pilot.press("tab", "end")
    box = pilot.app.screen.query_one("#runs-detail-box")
    await until(
        pilot, lambda: box.has_focus and box.scroll_y == box.max_scroll_y, "the details' end"
    )


async def details_shown(pilot: Pilot) -> None:
    """The services with the selected one's details (beside the table from 120 columns)."""
    await services_shown(pilot)
    pane = pilot.app.screen.query_one(ServiceDetail)
    if pilot.app.size.width >= WIDE:
        await until(pilot, lambda: "stderr, last" in pane.text, "api's stderr lines")


async def details_worker(pilot: Pilot) -> None:
    """A backoff service's details on a screen of their own (i)."""
    await services_shown(pilot)
    table = pilot.app.screen.query_one(ServicesTable)
    table.move_cursor(row=table.get_row_index("worker"))
    await pilot.press("i")
    screen = await on_screen(pilot, DetailScreen, "the details screen")
    assert isinstance(screen, DetailScreen)
    await until(pilot, lambda: "stderr, last 1 lines" in screen.detail.text, "its stderr")


async def help_dialog(pilot: Pilot) -> None:
    await services_shown(pilot)
    await pilot.press("question_mark")
    await on_screen(pilot, HelpDialog, "the help")


SCREENS: dict[str, tuple[Step, dict[str, object]]] = {
    "services": (services, {}),
    "services_details": (details_shown, {}),
    "services_read_only": (services, {"read_only": True}),
    "details_worker": (details_worker, {}),
    "services_unreachable": (unreachable, {"down": "connection refused"}),
    "logs_one": (logs_one, {}),
    "logs_all": (logs_all, {}),
    "disk": (disk, {}),
    "runs_list": (runs_list, {}),
    "run_details": (run_details, {}),
    "run_files": (run_files, {}),
    "help": (help_dialog, {}),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_screen(snap_compare, screen: str, size: str) -> None:  # type: ignore[no-untyped-def]
    steps, options = SCREENS[screen]
    app = scripted_app(**options)
    app.theme = "textual-dark"  # not $TEXTUAL_THEME: the same colours on every machine
    assert snap_compare(app, terminal_size=SIZES[size], run_before=steps)
