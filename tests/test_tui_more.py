"""More of the TUI against a real daemon: the logs' regex filter and its inverse, `e` ensure, and
events the screens do not expect."""

from __future__ import annotations

import time

import pytest
from daemonkit import SLEEPER, build_tree
from textual.pilot import Pilot
from tuikit import select, states, until

from runyard.protocol.messages import LogEvent, LogLine, ServiceStatus, StateEvent
from runyard.tui.app import RunyardApp
from runyard.tui.dialogs import EnsureDialog, InputDialog
from runyard.tui.logs_screen import LogsScreen

pytestmark = pytest.mark.timeout(90)

#: A service that prints "even N" / "odd N" lines, five times a second.
PARITY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    n += 1
    print(f"{'even' if n % 2 == 0 else 'odd'} {n}", flush=True)
    time.sleep(0.2)
"""


def notices(app: RunyardApp) -> list[str]:
    return [n.message for n in app._notifications]


async def answer(pilot: Pilot, app: RunyardApp, text: str | None) -> None:
    """Fill the open InputDialog with ``text`` and press enter (None: leave it as it is)."""
    dialogs = (InputDialog, EnsureDialog)
    await until(pilot, lambda: isinstance(app.screen, dialogs), "the input dialog")
    if text is not None:
        box = app.screen.query_one("#answer")
        box.value = text  # type: ignore[attr-defined]
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, dialogs), "the dialog closed")


async def test_logs_regex_filter_and_inverse(root, daemons) -> None:
    tree = build_tree(root, {"parity": PARITY})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("parity") == "running", "parity running")
        await select(pilot, app, "parity")
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the logs screen"
        )
        assert isinstance(screen, LogsScreen)
        view = screen.view
        status = screen.query_one("#logs-status")
        await until(pilot, lambda: len(view.plain_lines()) >= 4, "some lines")

        # F: only the matching lines show, from the scrollback and as new lines come.
        await pilot.press("F")
        await answer(pilot, app, r"^even \d+$")
        assert view.filter_label == r"/^even \d+$/"
        seen = len(view.plain_lines())
        await until(pilot, lambda: len(view.plain_lines()) > seen + 3, "new lines while filtered")
        visible = view.visible_lines()
        assert visible and all(x.startswith("even ") for x in visible)
        assert any(x.startswith("odd ") for x in view.plain_lines())  # kept, only hidden
        assert len(view.rows) == len(visible)  # the view has only the shown lines
        await until(pilot, lambda: "filter: /^even" in str(status.render()), "the status line")

        # I: the inverse.
        await pilot.press("I")
        await until(pilot, lambda: view.filter_invert, "the inverse")
        seen = len(view.plain_lines())
        await until(pilot, lambda: len(view.plain_lines()) > seen + 3, "new lines while inverted")
        visible = view.visible_lines()
        assert visible and all(x.startswith("odd ") for x in visible)
        assert len(view.rows) == len(visible)
        await until(pilot, lambda: "filter: !/^even" in str(status.render()), "the ! status")

        # A bad regex: a notice, and the filter stays as it was.
        await pilot.press("F")
        await answer(pilot, app, "(unclosed")
        await until(pilot, lambda: any("bad regex" in m for m in notices(app)), "the notice")
        assert view.filter_label == r"!/^even \d+$/"

        # An empty regex clears it: every line shows again.
        await pilot.press("F")
        await answer(pilot, app, "")
        assert view.filter_re is None and not view.filter_invert
        await pilot.pause(0.2)
        assert view.visible_lines() == view.plain_lines()
        assert {x.split()[0] for x in view.visible_lines()} == {"even", "odd"}
        await until(pilot, lambda: "filter:" not in str(status.render()), "no filter in status")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")


async def test_e_ensures_the_installed_version(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        await select(pilot, app, "alpha")
        await pilot.press("e")
        # The ensure dialog (issue 15: with a catalog field, empty: the last one used).
        await until(pilot, lambda: isinstance(app.screen, EnsureDialog), "the ensure dialog")
        assert app.screen.query_one("#answer").value == "latest"  # type: ignore[attr-defined]
        await answer(pilot, app, "1.0.0")
        await until(
            pilot,
            lambda: any("already installed" in m for m in notices(app)),
            "already installed",
            timeout=30,
        )
        assert any("1.0.0" in m and "already installed" in m for m in notices(app))
        # A version the catalog does not have: the error, and the app goes on.
        await pilot.press("e")
        await answer(pilot, app, "9.9.9")
        await until(
            pilot,
            lambda: any(m.startswith("ensure alpha 9.9.9:") for m in notices(app)),
            "the error",
            timeout=30,
        )
        assert states(app)["alpha"] == "running"


async def test_e_is_disabled_read_only(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("alpha") == "running", "alpha running")
        await pilot.press("e")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, InputDialog)
        assert any("read-only" in m for m in notices(app))


async def test_unexpected_events_do_not_crash(root, daemons) -> None:
    """Malformed frames never reach the TUI (the client's stream counts and skips them), so
    this feeds the bridge's own path events it does not expect: a state for a service the table
    never had, and log lines for a service whose logs are not open."""
    tree = build_tree(root, {"alpha": SLEEPER, "beta": SLEEPER})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: states(app) == {"alpha": "running", "beta": "running"},
            "both running",
        )
        now = time.time()
        app.bridge._forward(
            StateEvent(
                topic="state.ghost",
                seq=1,
                ts=now,
                service=ServiceStatus(name="ghost", state="running"),
            )
        )
        app.bridge._log_service = "beta"  # as if beta's log were wanted, with no screen open
        app.bridge._forward(
            LogEvent(
                topic="log.beta", seq=1, ts=now, service="beta", lines=[LogLine(1, now, "out", "x")]
            )
        )
        app.bridge._post_log_batch()
        app.bridge._log_service = None
        app.bridge._forward(
            LogEvent(
                topic="log.nobody",
                seq=1,
                ts=now,
                service="nobody",
                lines=[LogLine(1, now, "out", "y")],
            )
        )
        app.bridge._post_log_batch()
        await pilot.pause(0.3)
        assert app.is_running and app.screen is app.services_screen
        # The table still works: the next refresh drops the ghost, and `x` stops beta.
        await until(pilot, lambda: "ghost" not in states(app), "the ghost gone", timeout=10)
        await select(pilot, app, "beta")
        await pilot.press("x", "y")
        await until(pilot, lambda: states(app)["beta"] == "stopped", "beta stopped in the table")
