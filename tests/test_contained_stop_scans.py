"""A contained stop asks the cgroup, not the whole process table (issue 16: "stop 50" read every
/proc/PID/stat of the box about five times per service). Real processes, a real cgroup, removed
after; the stop still catches a descendant that left the group and the tree."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_containment import require_cgroup2

from runyard.daemon import cgroup as cg
from runyard.daemon import proctable, sweep
from runyard.daemon.process import spawn, stop_process

pytestmark = pytest.mark.timeout(60)

#: Leaves the group and the tree (setsid in a double fork), writes its pid, then waits.
ESCAPER = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "        time.sleep(60)\n"
    "    os._exit(0)\n"
    "time.sleep(60)\n"
)


def test_a_contained_stop_reads_no_full_process_table(tmp_path: Path, monkeypatch) -> None:
    """Regression: every poll of a contained stop scanned all of /proc (``proc_table``): five
    scans or more per stop, 77% of a "stop 50" on a box with 300 processes. The cgroup's own
    member list is the kernel's answer to "what did this service fork": no scan is needed."""
    require_cgroup2()
    tree, why = cg.CgroupTree.create(tmp_path)
    assert tree is not None, why
    path = tree.service("esc")
    pidfile = tmp_path / "escaped.pid"
    scans = []
    real = proctable.proc_table

    def counted(max_age: float = 0.0):  # type: ignore[no-untyped-def]
        scans.append(max_age)
        return real(max_age)

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            handle = spawn(
                [sys.executable, "-c", ESCAPER, str(pidfile)],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                cwd="/",
                stdout=null,
                stderr=null,
                cgroup=path,
                service="esc",
            )
        finally:
            os.close(null)
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline, "the grandchild never wrote its pid"
            time.sleep(0.01)
        escaped = int(pidfile.read_text())
        assert os.getpgid(escaped) != handle.pgid  # out of the group, and out of the tree:
        assert psutil.Process(escaped).ppid() != handle.pid
        monkeypatch.setattr(sweep, "proc_table", counted)
        result = asyncio.run(stop_process(handle, stop_timeout=5))
        assert not psutil.pid_exists(escaped) or (
            psutil.Process(escaped).status() == psutil.STATUS_ZOMBIE
        )
        assert result.survivors == []
        assert scans == [], f"{len(scans)} full /proc scans for one contained stop"
    finally:
        cg.kill(path)
        asyncio.run(cg.wait_empty(path, time.monotonic() + 10))
        cg.remove(path)
        tree.close()
