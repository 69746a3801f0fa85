"""CPU/RSS over the last minutes: the daemon's rings of samples (the ``stats`` request), the
details pane's sparklines drawn from them, and the box's free disk in the disk panel."""

from __future__ import annotations

import os

import pytest
from daemonkit import SLEEPER, build_tree, wait_for
from tuikit import select, states, until

from runyard.daemon.stats import HISTORY, SampleRings
from runyard.protocol.client import NotFound
from runyard.tui.app import RunyardApp
from runyard.tui.disk_screen import DiskScreen
from runyard.tui.service_detail import ServiceDetail
from runyard.tui.sparkline import BARS, sparkline

pytestmark = pytest.mark.timeout(60)

#: Busy for a second, then idle: its CPU goes up and down.
BUSY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    end = time.monotonic() + 1
    while time.monotonic() < end:
        pass
    time.sleep(1)
"""


def test_sample_rings_keep_the_last_minutes_and_forget_removed_services() -> None:
    rings = SampleRings()
    for i in range(HISTORY + 10):
        rings.add("api", float(i), 1000 + i, at=float(i))
    rings.add("gone", 1.0, 1)
    assert len(rings.rings["api"]) == HISTORY
    assert rings.rings["api"][0] == (10.0, 10.0, 1010)
    rings.keep({"api"})
    assert set(rings.rings) == {"api"}


def test_sparkline_scales_from_zero_to_the_top_and_shows_gaps() -> None:
    assert sparkline([0, 50, 100]) == BARS[0] + BARS[4] + BARS[-1]
    assert sparkline([None, 1.0], top=2.0) == " " + BARS[4]
    assert sparkline([0.0, 0.0]) == BARS[0] * 2


def test_stats_request_returns_each_services_samples(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "busy": BUSY})
    d = daemons(tree).start()
    with d.client() as c:
        reply = wait_for(
            lambda: (
                (r := c.stats())
                and all(len(r.samples.get(n, [])) >= 2 for n in ("alpha", "busy"))
                and r
            ),
            what="two samples of each service",
        )
        busy = reply.samples["busy"]
        assert all(s.rss > 0 for s in busy) and all(s.cpu_percent >= 0 for s in busy)
        assert [s.ts for s in busy] == sorted(s.ts for s in busy)
        assert set(c.stats(["alpha"]).samples) == {"alpha"}
        with pytest.raises(NotFound):
            c.stats(["nope"])


async def test_details_show_cpu_rss_sparklines_and_disk_shows_free_space(root, daemons) -> None:
    tree = build_tree(root, {"alpha": SLEEPER, "busy": BUSY})
    daemons(tree).start()
    app = RunyardApp(tree.root)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: states(app).get("busy") == "running", "busy running")
        await select(pilot, app, "busy")
        pane = app.services_screen.query_one(ServiceDetail)

        def spark_rows() -> list[str]:
            return [x for x in pane.text.splitlines() if x.strip().startswith(("cpu", "rss"))]

        rows = await until(pilot, lambda: len(spark_rows()) == 2 and spark_rows(), "sparklines")
        cpu, rss = rows
        assert any(ch in cpu for ch in BARS) and cpu.rstrip().endswith("%")
        assert any(ch in rss for ch in BARS)
        assert "peak" in pane.text
        # The disk panel: the box's free disk, as the filesystem says.
        await pilot.press("d")
        screen = await until(
            pilot, lambda: isinstance(app.screen, DiskScreen) and app.screen, "the disk panel"
        )
        status = screen.query_one("#disk-status")
        await until(pilot, lambda: "disk free" in str(status.render()), "the free disk")
        fs = os.statvfs(tree.root)
        pct = fs.f_bavail * fs.f_frsize * 100 // (fs.f_blocks * fs.f_frsize)
        assert abs(int(str(status.render()).split("(")[-1].split("%")[0]) - pct) <= 1
