"""Issue 15, the TUI as an operator meets it: logs that keep each service's history and stay
put while read, an 80-column screen, and a notice below 80x24. Pilot drives the real app
against a real daemon with real services."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, program
from tuikit import REJECTED_ID, scripted_app, select, states, until

from archives import archive_record, make_tar, write_catalog
from runyard.tui.app import RunyardApp
from runyard.tui.banner import TOO_SMALL, Banner
from runyard.tui.dialogs import HELP, EnsureDialog
from runyard.tui.disk_screen import DiskScreen
from runyard.tui.log_rings import MAX_LINES
from runyard.tui.logs_screen import LogsScreen
from runyard.tui.runs_screen import RunsScreen, mono_markup
from runyard.tui.service_detail import DetailScreen
from runyard.tui.services_screen import ServicesScreen
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


async def test_read_only_is_visible_and_the_footer_offers_no_actions(root: Path, daemons) -> None:
    """Finding: read-only mode looked exactly like read-write, and the footer still offered
    s/x/r/R. Also: the palette (ctrl+p) has Runyard's commands, and none that act here."""
    tree = build_tree(root, {"alpha": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        screen = app.services_screen
        banner = screen.query_one(Banner)
        assert banner.display and "READ-ONLY" in str(banner.render())
        shown = {k for k, b in screen.active_bindings.items() if b.binding.show}
        assert not shown & {"s", "x", "r", "R"}, shown
        assert {"L", "d", "u"} <= shown
        titles = [c.title for c in app.get_system_commands(screen)]
        assert "Logs of alpha" in titles and "All logs" in titles
        assert not any(t.startswith(("Restart", "Stop", "Start")) for t in titles), titles
        await pilot.press("s")  # refused, and it says why
        await until(pilot, lambda: any("read-only" in n.message for n in app._notifications), "why")


async def test_counts_palette_ensure_from_another_catalog_and_help(root: Path, daemons) -> None:
    """Findings: no status bar with counts; the palette had only Textual's commands; `e`
    always used the last catalog (an ensure from another catalog failed); the help left keys
    out."""
    other = root.parent / "other"
    other.mkdir()
    archive = make_tar(other / "alpha-2.0.0.tar.gz", {"bin/alpha": program(SLEEPER)})
    catalog = write_catalog(other / "catalog.json", [archive_record(archive, "alpha", "2.0.0")])
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c:
        c.stop(["beta"])
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        counts = app.services_screen.query_one("#counts")
        await until(
            pilot,
            lambda: str(counts.render()) == "2 services: 1 running, 1 stopped",
            "the counts",
        )
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Restart alpha", "Logs of beta", "Details of alpha", "Start", "Disk"):
            assert title in titles, titles

        await select(pilot, app, "alpha")
        await pilot.press("e")
        dialog = await until(
            pilot, lambda: isinstance(app.screen, EnsureDialog) and app.screen, "the dialog"
        )
        await pilot.press("ctrl+a", "ctrl+k", *"2.0.0", "tab", *str(catalog), "enter")
        await until(
            pilot,
            lambda: any("installed 2.0.0" in n.message for n in app._notifications),
            "alpha 2.0.0 installed from the other catalog",
            timeout=30,
        )
        assert dialog is not app.screen

    # Every key of every screen is in the help.
    names = {"slash": "/", "question_mark": "?", "escape": "esc", "enter": "enter"}
    for kind in (RunyardApp, ServicesScreen, LogsScreen, RunsScreen, DiskScreen, DetailScreen):
        for binding in kind.BINDINGS:
            for key in binding.key.split(","):  # type: ignore[union-attr]
                shown = names.get(key, key)
                assert re.search(rf"(^|\s){re.escape(shown)}(\s|$)", HELP, re.M), (kind, key)


async def test_no_color_runs_tell_rejected_and_fail_by_attributes(monkeypatch) -> None:
    """As for fatal and stderr (NO_COLOR made red dark grey on dark grey): a rejected run and
    a FAIL in the runs panel are reversed and bold, not red; escaped text is left alone."""
    assert mono_markup("[bold red]FAIL[/bold red] \\[green]x") == (
        "[bold reverse]FAIL[/bold reverse] \\[green]x"
    )
    monkeypatch.setenv("NO_COLOR", "1")
    app = scripted_app()
    assert app.no_color
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app), "the fixed services")
        await pilot.press("u")
        screen = await until(
            pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen, "the runs screen"
        )
        assert isinstance(screen, RunsScreen)
        await until(pilot, lambda: REJECTED_ID in screen.runs, "the rejected run")
        cell = screen.table.get_cell(REJECTED_ID, "status")
        assert str(cell.style) == "bold reverse"  # type: ignore[union-attr]
        await pilot.press("down")
        await until(pilot, lambda: "rejected" in screen.detail_text, "its details")
