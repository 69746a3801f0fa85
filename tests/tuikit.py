"""Pilot helpers shared by the TUI tests: deadline waits and the services table's view."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.pilot import Pilot

from tui.app import RunyardApp
from tui.services_table import ServicesTable


async def until(pilot: Pilot, cond: Callable[[], object], what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Let the app run until ``cond()`` is truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def states(app: RunyardApp) -> dict[str, str]:
    table = app.services_screen.query_one(ServicesTable)
    return {name: s.state for name, s in table.services.items()}


async def select(pilot: Pilot, app: RunyardApp, name: str) -> None:
    table = app.services_screen.query_one(ServicesTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert table.selected == name
