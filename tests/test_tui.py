"""The TUI end to end: Pilot drives the real app against a real daemon with real services."""

from __future__ import annotations

import pytest
from daemonkit import SLEEPER, build_tree
from textual.widgets import DataTable
from tuikit import select, states, until

from runyard.tui.app import RunyardApp
from runyard.tui.banner import UNREACHABLE, Banner
from runyard.tui.dialogs import ConfirmDialog
from runyard.tui.logs_screen import LogsScreen
from runyard.tui.services_screen import STALE
from runyard.tui.services_table import ServicesTable

pytestmark = pytest.mark.timeout(60)

#: A service that prints a numbered line five times a second, on stdout and (every third) stderr.
TICKER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    if n % 3 == 0:
        print(f"warn {n}", file=sys.stderr, flush=True)
    time.sleep(0.2)
"""


def shown_state(app: RunyardApp, name: str) -> str:
    table = app.services_screen.query_one(ServicesTable)
    return str(table.get_cell(name, "state"))


async def test_table_reaches_running_and_x_confirm_stops(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER})
    d = daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: states(app) == {"alpha": "running", "beta": "running"},
            "both services running in the table",
        )
        assert shown_state(app, "alpha") == "running"  # the label, not only a colour
        await select(pilot, app, "beta")
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirm dialog")
        await pilot.press("y")
        with d.client() as c:
            await until(
                pilot,
                lambda: c.status(["beta"]).services[0].state == "stopped",
                "beta stopped in the daemon",
            )
            assert c.status(["alpha"]).services[0].state == "running"
        await until(pilot, lambda: states(app)["beta"] == "stopped", "beta stopped in the table")
        # Cancelling the dialog does nothing; `s` starts it again.
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirm dialog")
        await pilot.press("escape")
        await pilot.press("s")
        await until(pilot, lambda: states(app)["beta"] == "running", "beta running again")
        # `/` filters by name.
        await pilot.press("slash", "a", "l", "enter")
        table = app.services_screen.query_one(ServicesTable)
        await until(pilot, lambda: table.row_count == 1, "the filter to leave one row")
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 2, "the filter cleared")


async def test_logs_screen_tails_follows_and_searches(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "ticker": TICKER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("ticker") == "running", "ticker running")
        await select(pilot, app, "ticker")
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the logs screen"
        )
        assert isinstance(screen, LogsScreen) and screen.service == "ticker"
        view = screen.view
        await until(pilot, lambda: "tick 1" in view.plain_lines(), "the first line (tail)")
        seen = len(view.plain_lines())
        await until(pilot, lambda: len(view.plain_lines()) > seen + 3, "new lines (follow)")
        lines = view.plain_lines()
        numbers = [int(x.split()[1]) for x in lines if x.startswith("tick ")]
        assert numbers == list(range(1, len(numbers) + 1))  # no gap, no duplicate
        streams = {s.line.stream for s in view.kept}
        assert streams == {"out", "err"}
        # Search: a match count in the status line, next and previous.
        await pilot.press("slash", *"warn", "enter")
        await until(pilot, lambda: view.query_text == "warn", "the search to apply")
        assert len(view.matches) >= 1
        status = str(screen.query_one("#logs-status").render())
        assert f"/{len(view.matches)} matches" in status
        before = view.match_at
        await pilot.press("N")
        if len(view.matches) > 1:
            assert view.match_at != before
        assert view.follow is False  # a search stops following, to stay on the match
        await pilot.press("f")
        assert view.follow is True
        await pilot.press("t", "w")
        assert view.timestamps and view.wrap
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")
        await until(pilot, lambda: app.bridge._log_service is None, "the log unsubscribed")


async def test_banner_when_daemon_is_killed_and_gone_when_back(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})
    first = daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        banner = app.services_screen.query_one(Banner)
        stale = app.services_screen.query_one("#stale")
        table = app.services_screen.query_one(ServicesTable)
        assert not banner.display and not stale.display and not app.services_screen.stale
        first.kill9()
        await until(pilot, lambda: banner.display, "the banner", timeout=15)
        assert UNREACHABLE in str(banner.render())
        # The table keeps the last known state, greyed, with a line that says so.
        assert app.services_screen.stale and stale.display
        assert STALE in str(stale.render())
        assert table.styles.opacity < 1
        assert states(app)["alpha"] == "running"
        # The orphaned service dies with the old daemon's recorded pgids, then a new daemon.
        first.stop()
        daemons(tree).start()
        await until(pilot, lambda: not banner.display, "the banner to go", timeout=20)
        assert not app.services_screen.stale and not stale.display
        assert table.styles.opacity == 1
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running again")


async def test_read_only_disables_actions(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})
    d = daemons(tree).start()
    app = RunyardApp(tree.root, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        await pilot.press("r", "s")
        await pilot.pause(0.3)
        assert any("read-only" in n.message for n in app._notifications)
        with d.client() as c:
            (alpha,) = c.status(["alpha"]).services
            assert alpha.state == "running" and alpha.restarts == 0


async def test_help_and_quit(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpDialog", "the help")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "help closed")
        assert app.services_screen.query_one(DataTable).has_focus
        await pilot.press("q")
    assert app.return_code == 0 or app.return_code is None
