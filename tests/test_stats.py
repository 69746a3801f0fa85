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


def _syscr() -> int:
    """Read-family syscalls of this process so far (/proc/self/io)."""
    import os

    fd = os.open("/proc/self/io", os.O_RDONLY)
    try:
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return int(data.split(b"syscr:")[1].split()[0])


def test_a_sample_costs_one_read_syscall_a_stats_round_of_50_read_each_stat_twice() -> None:
    """``open(...).read()`` read each /proc/PID/stat twice (the second read to see EOF) and
    added an fstat, an ioctl and two lseeks: nine syscalls a service in every stats round."""
    import os

    pid = os.getpid()
    _syscr(), _syscr()  # warm: the probe itself is one read
    probe = -(_syscr() - _syscr())
    before = _syscr()
    for _ in range(100):
        assert read_sample(pid) is not None
    reads = _syscr() - before - probe
    assert reads == 100, reads
