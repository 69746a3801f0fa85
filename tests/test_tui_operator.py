"""Issue 15, the TUI as an operator meets it: logs that keep each service's history and stay
put while read, an 80-column screen, and a notice below 80x24. Pilot drives the real app
against a real daemon with real services."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree
from tuikit import select, states, until

from runyard.tui.app import RunyardApp
from runyard.tui.banner import TOO_SMALL, Banner
from runyard.tui.log_rings import MAX_LINES
from runyard.tui.logs_screen import LogsScreen
from runyard.tui.services_table import COLUMNS, ServicesTable

pytestmark = pytest.mark.timeout(90)

#: 60 lines at once, then, once the trigger file exists, 12,000 more as fast as it can.
NOISY = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
for n in range(1, 61):
    print(f"noisy pre {{n}}", flush=True)
while not os.path.exists({trigger!r}):
    time.sleep(0.05)
print("\\n".join(f"noisy {{n}}" for n in range(1, 12001)), flush=True)
while True:
    time.sleep(0.05)
"""
#: A line every 0.2 s.
QUIET = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    n += 1
    print(f"quiet {n}", flush=True)
    time.sleep(0.2)
"""


async def test_per_service_rings_and_a_paused_view_that_does_not_slide(root: Path, daemons) -> None:
    """Findings: one noisy service wiped everyone's history in L (one 5,000-line buffer);
    with follow off the view still slid; scrolling up snapped back to the bottom in 0.1 s."""
    trigger = root.parent / "flood"
    tree = build_tree(root, {"noisy": NOISY.format(trigger=str(trigger)), "quiet": QUIET})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: states(app).get("quiet") == "running", "quiet running")
        await pilot.press("L")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the L screen"
        )
        assert isinstance(screen, LogsScreen)
        view = screen.view
        await until(
            pilot,
            lambda: {"quiet 1", "noisy pre 60"} <= set(view.plain_lines()),
            "both services' first lines",
        )
        # Scrolling up stops following, and stays up while lines keep coming.
        await pilot.press("home")
        assert view.follow is False
        seen = view.kept_count
        await until(pilot, lambda: view.kept_count > seen + 2, "more quiet lines")
        await pilot.pause(0.3)
        assert view.scroll_y == 0, "snapped back to the bottom"
        top = view.rows[0].text
        status = screen.query_one("#logs-status")
        assert "paused" in str(status.render())

        trigger.touch()
        await until(pilot, lambda: "noisy 12000" in view.plain_lines(), "the flood", 40)
        await pilot.pause(0.3)
        # Paused: nothing slid, nothing went.
        assert view.scroll_y == 0 and view.rows[0].text == top
        assert "quiet 1" in view.plain_lines()
        # End follows again; each service keeps its own last MAX_LINES.
        await pilot.press("end")
        assert view.follow is True
        await pilot.pause(0.2)
        lines = view.plain_lines()
        assert "quiet 1" in lines, "the noisy service pushed out the quiet one's history"
        assert sum(1 for x in lines if x.startswith("noisy")) <= MAX_LINES
        assert "noisy 12000" in lines
        assert view.scroll_y == view.max_scroll_y
        assert str(status.render()).startswith("follow")


LONG = "payments-reconciliation-batch"  # 29 characters


async def test_80_columns_long_names_status_line_and_too_small(root: Path, daemons) -> None:
    """Findings: a 29-character name pushed PORTS and READY off an 80-column screen; the logs
    status line was cut at 80 columns; below 80x24 nothing said the terminal was too small."""
    tree = build_tree(root, {LONG: SLEEPER, "db": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get(LONG) == "running", "the long one running")
        table = app.services_screen.query_one(ServicesTable)
        name = str(table.get_cell(LONG, "name"))
        assert name.endswith("…") and LONG.startswith(name[:-1]) and len(name) <= 16
        right = 0
        for key, _ in COLUMNS:
            right += table.columns[key].get_render_width(table)  # type: ignore[index]
            if key in ("ports", "ready"):
                assert right <= 80, f"{key} ends at column {right}"

        # The logs status line, with everything on, fits.
        await select(pilot, app, LONG)
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the logs"
        )
        assert isinstance(screen, LogsScreen)
        await until(pilot, lambda: "sleeper up" in screen.view.plain_lines(), "its line")
        screen.view.set_filter("up")
        await pilot.press("t", "w", "slash", *"sleeper up", "enter", "home")
        status = screen.query_one("#logs-status")
        await until(pilot, lambda: "matches" in str(status.render()), "the search count")
        text = str(status.render())
        assert len(text) <= status.content_region.width, text
        for word in ("paused", "time", "wrap", "/up/", "1/1 matches"):
            assert word in text, text
        await pilot.press("escape")

        # Too small: the banner says so, and goes when the terminal is big enough again.
        banner = app.services_screen.query_one(Banner)
        await pilot.resize_terminal(70, 20)
        await until(pilot, lambda: TOO_SMALL in str(banner.render()), "the too-small notice")
        assert "70x20" in str(banner.render()) and banner.display
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: not banner.display, "the notice gone")
