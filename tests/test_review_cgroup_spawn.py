"""Review finding: with the cgroup joined by the daemon *after* exec, whatever the program forks
first stays outside the service's cgroup for good (a child forked before the move keeps its
cgroup): ``sh -c 'sidecar & exec main'`` left the sidecar outside in 19 of 20 spawns here, out of
the cgroup's limits and of ``cgroup.kill``. Real processes, a real cgroup, removed after."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import psutil
import pytest
from test_containment import require_cgroup2

from runyard.daemon import cgroup as cg
from runyard.daemon.process import spawn, stop_process

pytestmark = pytest.mark.timeout(60)


def _first_child(pid: int) -> psutil.Process:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(pid).children()
            if kids:
                return kids[0]
        time.sleep(0.002)
    pytest.fail(f"pid {pid} forked nothing within 10 s")


@pytest.mark.parametrize("nnp", [False, True])
def test_what_a_service_forks_first_is_in_its_cgroup(tmp_path: Path, nnp: bool) -> None:
    mount = require_cgroup2()
    tree, why = cg.CgroupTree.create(tmp_path)
    assert tree is not None, why
    path = tree.service("first")
    want = "/" + str(path.relative_to(mount))
    outside: list[str] = []
    try:
        for _ in range(10):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                handle = spawn(
                    ["sh", "-c", "sleep 30 & exec sleep 31"],
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                    cwd="/",
                    stdout=null,
                    stderr=null,
                    cgroup=path,
                    service="first",
                    no_new_privileges=nnp,
                )
            finally:
                os.close(null)
            try:
                kid = _first_child(handle.pid)
                where = cg.cgroup_of(kid.pid)
                if where != want:
                    outside.append(f"{kid.pid} in {where}")
                kid.kill()
            finally:
                asyncio.run(stop_process(handle, stop_timeout=2))
    finally:
        cg.kill(path)
        asyncio.run(cg.wait_empty(path, time.monotonic() + 10))
        cg.remove(path)
        tree.close()
    assert outside == [], f"forked before the cgroup was joined: {outside}"


def test_a_cgroup_that_cannot_be_joined_fails_the_spawn_naming_it(tmp_path: Path) -> None:
    from runyard.daemon.process import SpawnError

    marker = tmp_path / "ran"
    with pytest.raises(SpawnError, match=r"^cannot start 'sh' in cgroup .*nope: No such file"):
        spawn(
            ["sh", "-c", f"touch {marker}"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd="/",
            stdout=2,
            stderr=2,
            cgroup=tmp_path / "nope",
        )
    assert not marker.exists()  # the program never ran
