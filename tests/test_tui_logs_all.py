"""Every service's log interleaved in one view (`L`), against a real daemon with real services:
tags, per-service order, stdout/stderr, search, filter, timestamps, wrap, batching, reconnect."""

from __future__ import annotations

import itertools
import re

import pytest
from daemonkit import build_tree
from tuikit import LOGS, scripted_app, states, until

from runyard.tui.app import RunyardApp
from runyard.tui.banner import Banner
from runyard.tui.bridge import ALL_LOGS
from runyard.tui.log_view import LogView
from runyard.tui.logs_screen import LogsScreen

pytestmark = pytest.mark.timeout(120)


def ticker(name: str) -> str:
    """A service printing ``NAME N`` five times a second, and ``NAME warn N`` on stderr (every
    third line)."""
    return f"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    n += 1
    print("{name} " + str(n), flush=True)
    if n % 3 == 0:
        print("{name} warn " + str(n), file=sys.stderr, flush=True)
    time.sleep(0.2)
"""


#: 20,000 numbered lines as fast as the pipe takes them, then idle.
FLOOD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
out = sys.stdout
for n in range(1, 20001):
    out.write(f"flood {n}\\n")
out.flush()
while True:
    time.sleep(0.05)
"""


def numbers(view: LogView, service: str) -> list[int]:
    """The N of each ``SERVICE N`` stdout line the view holds, in order."""
    pattern = re.compile(rf"^{service} (\d+)$")
    out = []
    for s in view.kept:
        m = pattern.match(s.line.line)
        if m:
            assert s.service == service, (s.service, s.line.line)  # the tag is the source
            out.append(int(m.group(1)))
    return out


def rendered(view: LogView) -> list[str]:
    return view.rendered_rows()


async def open_all(pilot, app: RunyardApp) -> LogsScreen:  # type: ignore[no-untyped-def]
    await pilot.press("L")
    screen = await until(
        pilot, lambda: isinstance(app.screen, LogsScreen) and app.screen, "the all-logs screen"
    )
    assert isinstance(screen, LogsScreen) and screen.service == ALL_LOGS
    return screen


async def test_all_services_interleaved_tagged_searchable_filterable(root, daemons) -> None:
    tree = build_tree(root, {"alpha": ticker("alpha"), "beta": ticker("beta")})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: states(app) == {"alpha": "running", "beta": "running"},
            "both services running",
        )
        await until(pilot, lambda: app.screen.query_one("#services"), "the table")
        screen = await open_all(pilot, app)
        assert "all services" in str(screen.query_one("#logs-title").render())
        view = screen.view
        assert view.tagged
        await until(
            pilot,
            lambda: len(numbers(view, "alpha")) > 5 and len(numbers(view, "beta")) > 5,
            "lines of both services",
        )
        # Each service's lines in order, none lost or doubled (tail, then live events).
        for name in ("alpha", "beta"):
            got = numbers(view, name)
            assert got == list(range(got[0], got[0] + len(got))), (name, got)
        # Interleaved by arrival: the services alternate, not one block after the other.
        sources = [s.service for s in view.kept]
        switches = sum(1 for a, b in itertools.pairwise(sources) if a != b)
        assert switches >= 4, sources
        # The tag reads without colour: each rendered line starts with its service's name.
        await until(pilot, lambda: len(rendered(view)) >= 10, "rendered lines")
        for text in rendered(view)[-10:]:
            assert re.match(r"^(alpha |beta  )(out|err)│", text), text
        assert {s.line.stream for s in view.kept} == {"out", "err"}
        assert any(
            t.startswith(("alpha err│alpha warn", "beta  err│beta warn")) for t in rendered(view)
        )

        # Search: matches in both services, a count in the status line.
        status = screen.query_one("#logs-status")
        await pilot.press("slash", *"warn", "enter")
        await until(pilot, lambda: view.query_text == "warn", "the search")
        assert len(view.matches) >= 2
        await until(
            pilot, lambda: "matches" in str(status.render()), "the match count in the status"
        )
        await pilot.press("n")
        assert view.follow is False

        # Filter: only beta's lines; then the inverse.
        await pilot.press("F")
        await until(pilot, lambda: type(app.screen).__name__ == "InputDialog", "the dialog")
        app.screen.query_one("#answer").value = r"^beta "  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: view.filter_re is not None, "the filter")
        seen = len(view.kept)
        await until(pilot, lambda: len(view.kept) > seen + 4, "new lines while filtered")
        await pilot.pause(0.2)
        assert view.visible_lines() and all(x.startswith("beta ") for x in view.visible_lines())
        assert all(t.startswith("beta ") for t in rendered(view))
        await pilot.press("I")
        await until(pilot, lambda: view.filter_invert, "the inverse")
        await pilot.pause(0.2)
        assert all(x.startswith("alpha ") for x in view.visible_lines())

        # Timestamps and wrap re-render the tagged lines.
        await pilot.press("f", "t", "w")
        assert view.follow and view.timestamps and view.wrap
        await pilot.pause(0.2)
        assert all(
            re.match(r"^\d\d:\d\d:\d\d\.\d{3} alpha (out|err)│", t)
            for t in rendered(view)
            if re.match(r"^\d\d:", t)
        )
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.services_screen, "back to services")
        await until(pilot, lambda: app.bridge._log_service is None, "the logs unsubscribed")


async def test_a_flood_is_written_in_batches_not_per_line(root, daemons) -> None:
    tree = build_tree(root, {"flood": FLOOD, "beta": ticker("beta")})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: states(app).get("flood") == "running", "flood running")
        screen = await open_all(pilot, app)
        view = screen.view
        # The daemon's ring keeps the last 1,000 lines: the tail has at most that many.
        await until(pilot, lambda: "flood 20000" in view.plain_lines(), "the flood's last line")
        await until(pilot, lambda: len(numbers(view, "beta")) > 3, "beta's lines too")
        flood = numbers(view, "flood")
        assert flood == list(range(flood[0], 20001))
        assert view.writes * 20 < len(view.kept), (view.writes, len(view.kept))


async def test_all_logs_go_on_after_the_daemon_comes_back(root, daemons) -> None:
    tree = build_tree(root, {"alpha": ticker("alpha"), "beta": ticker("beta")})
    first = daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: states(app) == {"alpha": "running", "beta": "running"},
            "both services running",
        )
        screen = await open_all(pilot, app)
        view = screen.view
        await until(pilot, lambda: len(numbers(view, "beta")) > 3, "beta's lines")
        first.kill9()
        banner = screen.query_one(Banner)
        await until(pilot, lambda: banner.display, "the banner", timeout=20)
        first.stop()  # kills the orphaned services: the new daemon starts them afresh
        daemons(tree).start()
        await until(pilot, lambda: not banner.display, "the banner to go", timeout=30)

        def restarted(name: str) -> bool:
            got = numbers(view, name)
            return any(b < a for a, b in itertools.pairwise(got)) and got[-1] >= 3

        await until(
            pilot,
            lambda: restarted("alpha") and restarted("beta"),
            "both services' new lines after the reconnect",
            timeout=30,
        )
        assert isinstance(app.screen, LogsScreen) and app.screen.service == ALL_LOGS


async def test_lines_for_a_closing_logs_screen_are_dropped_not_a_crash() -> None:
    """Regression: log lines reached a logs screen whose widgets were already gone (the app
    shutting down under a flood) and query_one raised NoMatches out of the message handler."""
    app = scripted_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = LogsScreen("api")
        await app.push_screen(screen)
        await until(pilot, lambda: screen.query(LogView), "the log view mounted")
        await screen.view.remove()
        screen.add_lines(LOGS["api"], reset=False)  # must not raise
        await pilot.pause()
        assert app.screen is screen and app.is_running
