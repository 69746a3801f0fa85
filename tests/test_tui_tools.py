"""The operator's tools of issue 15 against a real daemon: column sorting in the services table,
per-service toggles and saving in the all-services log view, jump to a time."""

from __future__ import annotations

import pytest
from daemonkit import SLEEPER, build_tree
from tuikit import states, until

from runyard.tui.app import RunyardApp
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
            lambda: states(app).get("alpha") == "running"
            and states(app).get("zeta") not in (None, "starting", "running"),
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
