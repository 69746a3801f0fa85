"""The operator's tools of issue 15 against a real daemon: column sorting in the services table,
per-service toggles and saving in the all-services log view, jump to a time."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from daemonkit import SLEEPER, build_tree
from textual.widgets import Input, SelectionList
from tuikit import states, until

from runyard.tui.app import RunyardApp
from runyard.tui.dialogs import InputDialog, ServicesDialog
from runyard.tui.log_tools import first_at_or_after
from runyard.tui.log_view import LogView
from runyard.tui.logs_screen import LogsScreen
from runyard.tui.services_table import ServicesTable

pytestmark = pytest.mark.timeout(60)

#: Exits 1 at once: backoff, then fatal.
CRASHER = "import sys; sys.exit(1)\n"


def order(app: RunyardApp) -> list[str]:
    table = app.services_screen.query_one(ServicesTable)
    return [key.value or "" for key in table.rows]


def headers(app: RunyardApp) -> list[str]:
    table = app.services_screen.query_one(ServicesTable)
    return [column.label.plain for column in table.columns.values()]


async def test_column_sorting_cycles_and_the_header_shows_it(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "zeta": CRASHER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(100, 24)) as pilot:
        await until(
            pilot,
            lambda: (
                states(app).get("alpha") == "running"
                and states(app).get("zeta") not in (None, "starting", "running")
            ),
            "alpha running, zeta down",
        )
        assert order(app) == ["alpha", "zeta"]  # by name, the default: the header is plain
        assert headers(app)[:2] == ["NAME", "STATE"]
        await pilot.press("o")  # by state: the most worrying first
        await until(pilot, lambda: order(app) == ["zeta", "alpha"], "sorted by state")
        assert headers(app)[:2] == ["NAME", "STATE▲"]
        await pilot.press("O")
        await until(pilot, lambda: order(app) == ["alpha", "zeta"], "reversed")
        assert headers(app)[:2] == ["NAME", "STATE▼"]
        table = app.services_screen.query_one(ServicesTable)
        assert table.sort_label == "state descending"
        # The order holds as the daemon's updates come (zeta restarts, alpha's CPU changes).
        await pilot.pause(2.5)
        assert order(app) == ["alpha", "zeta"]
        for _ in range(7):  # cpu, rss, uptime, restarts, last exit, pid, then name again
            await pilot.press("o")
        assert table.sort_key == "name" and headers(app)[:2] == ["NAME", "STATE"]
        await pilot.press("o", "o", "o", "o", "o")  # restarts: zeta has some, alpha none
        assert table.sort_key == "restarts" and headers(app)[6] == "RST▲"
        await until(pilot, lambda: order(app) == ["alpha", "zeta"], "sorted by restarts")


def ticker(name: str) -> str:
    """``NAME N`` on stdout ten times a second."""
    return f"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    n += 1
    print("{name} " + str(n), flush=True)
    time.sleep(0.1)
"""


def notices(app: RunyardApp) -> list[str]:
    return [n.message for n in app._notifications]


async def open_all_logs(pilot, app: RunyardApp) -> LogsScreen:  # type: ignore[no-untyped-def]
    await until(
        pilot,
        lambda: states(app) == {"alpha": "running", "beta": "running"},
        "both services running",
    )
    await pilot.press("L")
    screen = await until(
        pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the all-logs screen"
    )
    assert isinstance(screen, LogsScreen)
    view = screen.view
    await until(
        pilot,
        lambda: {s.service for s in view.kept} == {"alpha", "beta"} and len(view.kept) > 20,
        "lines of both services",
    )
    return screen


async def answer(pilot, app: RunyardApp, text: str) -> None:  # type: ignore[no-untyped-def]
    await until(pilot, lambda: isinstance(app.screen, InputDialog), "the input dialog")
    app.screen.query_one("#answer", Input).value = text
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, InputDialog), "the dialog closed")


async def test_all_logs_per_service_toggles_and_save_visible_lines(root, daemons) -> None:
    tree = build_tree(root, {"alpha": ticker("alpha"), "beta": ticker("beta")})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_all_logs(pilot, app)
        view = screen.view
        # v: the services, ticked; untick beta, esc: beta's lines go, old and new.
        await pilot.press("v")
        dialog = await until(
            pilot, lambda: isinstance(app.screen, ServicesDialog) and app.screen, "the toggles"
        )
        toggles = dialog.query_one(SelectionList)
        assert sorted(toggles.selected) == ["alpha", "beta"]
        toggles.highlighted = 1
        await pilot.press("space", "escape")
        await until(pilot, lambda: view.hidden == frozenset({"beta"}), "beta hidden")
        seen = len(view.kept)
        await until(pilot, lambda: len(view.kept) > seen + 4, "new lines while beta is hidden")
        await pilot.pause(0.2)
        assert view.rows and all(s.service == "alpha" for s in view.rows)
        assert all(t.startswith("alpha ") for t in view.rendered_rows())
        status = screen.query_one("#logs-status")
        await until(pilot, lambda: "hidden: beta" in str(status.render()), "the status line")

        # s: the visible lines to a file the operator names; default under the tree's temp/.
        await pilot.press("f")  # paused: what is visible stays put while saving
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, InputDialog), "the save dialog")
        default = app.screen.query_one("#answer", Input).value
        assert default.startswith(str(tree.root / "temp" / "runyard-logs-all-")), default
        target = root.parent / "saved.log"
        app.screen.query_one("#answer", Input).value = str(target)
        await pilot.press("enter")

        def saved() -> int:
            for n in notices(app):
                m = re.fullmatch(rf"saved (\d+) lines to {re.escape(str(target))}", n)
                if m:
                    return int(m.group(1))
            return 0

        count = await until(pilot, saved, "the notice")
        lines = target.read_text().splitlines()
        assert len(lines) == count and count > 10
        assert all(re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+ alpha out alpha \d+$", x) for x in lines)
        assert target.stat().st_mode & 0o777 == 0o600
        assert not [p for p in target.parent.iterdir() if p.name.startswith(".saved.log.")]
        # A path that cannot be written: one line naming the path and the cause.
        await pilot.press("s")
        await answer(pilot, app, "/nonexistent-runyard-dir/x.log")
        await until(
            pilot,
            lambda: any(
                n.startswith("cannot save to /nonexistent-runyard-dir/x.log: No such file")
                for n in notices(app)
            ),
            "the error",
        )

        # Back on: beta's lines show again.
        await pilot.press("v")
        dialog = await until(
            pilot, lambda: isinstance(app.screen, ServicesDialog) and app.screen, "the toggles"
        )
        dialog.query_one(SelectionList).highlighted = 1
        await pilot.press("space", "escape")
        await until(pilot, lambda: not view.hidden, "all shown")
        assert {s.service for s in view.rows} == {"alpha", "beta"}


def top_index(view: LogView) -> int:
    return int(view.scroll_offset.y)


async def test_logs_jump_to_a_time(root, daemons) -> None:
    tree = build_tree(root, {"alpha": ticker("alpha"), "beta": ticker("beta")})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_all_logs(pilot, app)
        view = screen.view
        await until(pilot, lambda: len(view.rows) > 60, "a few screens of lines")
        await pilot.press("f")  # paused, so the rows stay where they are
        view.flush()
        pick = view.rows[len(view.rows) // 3]
        iso = datetime.fromtimestamp(pick.line.ts).isoformat(timespec="microseconds")
        await pilot.press("g")
        await answer(pilot, app, iso)
        expected = first_at_or_after(view.rows, pick.line.ts)
        assert expected is not None and view.rows[expected].line.ts == pick.line.ts
        await until(
            pilot,
            lambda: top_index(view) == expected,
            "the view at the picked line",
        )
        assert not view.follow
        # HH:MM:SS: the first line of that second.
        middle = view.rows[len(view.rows) // 2].line.ts
        second = datetime.fromtimestamp(middle).replace(microsecond=0)
        await pilot.press("g")
        await answer(pilot, app, second.strftime("%H:%M:%S"))
        want = first_at_or_after(view.rows, second.timestamp())
        assert want is not None
        await until(pilot, lambda: top_index(view) == want, "HH:MM:SS")
        # Not a time: one line saying what is expected.
        await pilot.press("g")
        await answer(pilot, app, "25:00")
        await until(
            pilot,
            lambda: "'25:00' is not a time of day (HH:MM or HH:MM:SS)" in notices(app),
            "the error",
        )
        # Before the oldest kept line: the top, and a line saying how far back the view goes.
        await pilot.press("g")
        await answer(pilot, app, "2000-01-01T00:00:00")
        await until(pilot, lambda: top_index(view) == 0, "the top")
        assert any(n.startswith("the oldest kept line is at") for n in notices(app))
