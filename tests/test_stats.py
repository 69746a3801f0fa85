"""CPU% and RSS in status come from real processes (daemon/stats.py reads /proc/PID/stat)."""

from __future__ import annotations

import pytest
from daemonkit import build_tree, wait_for

from runyard.daemon.stats import cpu_percent, read_sample

pytestmark = pytest.mark.timeout(90)

BUSY = """
import time
block = bytearray(48 * 1024 * 1024)  # resident: every page written
for i in range(0, len(block), 4096):
    block[i] = 1
while True:
    pass
"""
IDLE = """
import time
while True:
    time.sleep(1000)
"""


def test_status_shows_a_busy_service_busy_and_an_idle_one_idle(root, daemons) -> None:
    tree = build_tree(root, {"busy": BUSY, "idle": IDLE})
    d = daemons(tree).start()
    with d.client() as c:

        def sampled():
            rows = {s.name: s for s in c.status().services}
            done = all(s.cpu_percent is not None and s.rss for s in rows.values())
            return rows if done and rows["busy"].rss > 48 * 1024 * 1024 else None

        rows = wait_for(sampled, 20, "cpu and rss of both services")
        busy, idle = rows["busy"], rows["idle"]
        assert busy.cpu_percent > 30, busy.cpu_percent  # one core spinning, on a shared box
        assert idle.cpu_percent < 5, idle.cpu_percent
        assert 0 < idle.rss < busy.rss
        c.stop(["busy", "idle"])
        wait_for(lambda: all(s.cpu_percent is None for s in c.status().services), 20, "cleared")


def test_a_sample_of_a_gone_pid_is_none_and_the_percent_follows_the_ticks() -> None:
    import os

    me = read_sample(os.getpid())
    assert me is not None and me.rss > 0
    assert read_sample(2**22 + 1) is None  # above pid_max: never a process
    later = me._replace(cpu_ticks=me.cpu_ticks + os.sysconf("SC_CLK_TCK"), at=me.at + 2.0)
    assert cpu_percent(me, later) == 50.0


def test_a_background_round_over_many_services_yields_to_the_loop_between_slices() -> None:
    """500 services' /proc reads were one 10-17 ms callback every 2 s under the scale bench: a
    status request waited for all of them. A background round now gives the loop back every
    SLICE services (counted in loop turns, not timed)."""
    import asyncio
    import os
    import types

    from runyard.daemon.stats import SLICE, StatsSampler

    order: list[str] = []

    class Runner:  # what the sampler reads of a ServiceRunner; the pid is a real process
        def __init__(self, i: int) -> None:
            self.name, self.handle = f"s{i}", types.SimpleNamespace(pid=os.getpid())
            self.cpu_percent = self.rss = None

        def observe(self, cpu: float | None, rss: int | None) -> None:
            order.append("o")
            self.cpu_percent, self.rss = cpu, rss

    runners = [Runner(i) for i in range(SLICE * 3 + 1)]
    sampler = StatsSampler(lambda: runners)

    async def main() -> None:
        async def ticker() -> None:
            for _ in range(10 * len(runners)):  # bounded: one mark per loop turn
                order.append("t")
                await asyncio.sleep(0)

        tick = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        await sampler.sample_sliced()
        tick.cancel()

    asyncio.run(main())
    observed = "".join(order)
    first, last = observed.index("o"), observed.rindex("o")
    runs = [len(run) for run in observed[first : last + 1].split("t") if run]
    assert len(runs) >= 4 and max(runs) <= SLICE, runs
    assert all(r.rss for r in runners)
