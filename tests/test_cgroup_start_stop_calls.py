"""What a start and a stop cost in cgroupfs calls (issue 16: start 50 97 -> 120 ms and stop 50
24 -> 40 ms once every service got a cgroup). Counted, never timed. Real cgroups, removed after."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest
from test_containment import require_cgroup2

from runyard.daemon import cgroup as cg
from runyard.daemon import containment as containment_mod
from runyard.daemon.cgroup_limits import apply_cgroup_limits
from runyard.daemon.containment import Containment
from runyard.daemon.process import spawn, stop_process
from runyard.runtime.config.limits import Limits

pytestmark = pytest.mark.timeout(60)


def test_a_fresh_cgroup_is_not_checked_and_an_emptied_one_goes_after_the_stop(
    tmp_path: Path, monkeypatch
) -> None:
    """Regression: each start read ``cgroup.events`` of the cgroup it had just made, and each
    stop removed its cgroup (rmdir) before the stop could be answered. Now a cgroup made by the
    start is known empty, and the emptied ones are removed in one batch just after."""
    require_cgroup2()
    checked: list[Path] = []
    real = cg.populated

    def counted(path: Path) -> bool:
        checked.append(path)
        return real(path)

    async def run() -> None:
        box = Containment(tmp_path, logging.getLogger("test"))
        assert box.tree is not None, box.why_not
        try:
            monkeypatch.setattr(cg, "populated", counted)
            path, _ = box.place("svc", "auto")
            assert path is not None and checked == []  # made now: nothing to check
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                handle = spawn(
                    ["sleep", "30"],
                    env=dict(os.environ),
                    cwd="/",
                    stdout=null,
                    stderr=null,
                    cgroup=path,
                    service="svc",
                )
            finally:
                os.close(null)
            await stop_process(handle, stop_timeout=5)
            box.release(handle)
            assert path.exists(), "removed on the stop's path"
            deadline = time.monotonic() + 10
            while path.exists():
                assert time.monotonic() < deadline, "the emptied cgroup was never removed"
                await asyncio.sleep(containment_mod._REMOVE_AFTER)
        finally:
            await box.close()
            leftover = box.tree.path / "svc"
            if leftover.exists():  # a failed assertion above: leave nothing behind
                cg.kill(leftover)
                await cg.wait_empty(leftover, time.monotonic() + 10)
                cg.remove(leftover)
                box.tree.close()
        assert not box.tree.path.exists()

    asyncio.run(run())


def test_no_limit_set_reads_no_controller_file(tmp_path: Path, monkeypatch) -> None:
    """Regression: every start read ``cgroup.controllers`` even for a service with no limit."""
    from runyard.daemon import cgroup_limits

    reads: list[Path] = []
    monkeypatch.setattr(cgroup_limits, "enabled_controllers", lambda p: reads.append(p) or set())
    got = apply_cgroup_limits(tmp_path, Limits())
    assert got.applied == frozenset() and got.not_applied == {}
    assert reads == []


def test_a_new_daemon_removes_the_empty_cgroups_a_killed_one_left(tmp_path: Path) -> None:
    """An emptied cgroup is removed just after its stop: a daemon killed in between leaves it
    empty; the next daemon on the tree removes it at once (a populated one stays, to adopt)."""
    require_cgroup2()
    first, why = cg.CgroupTree.create(tmp_path)
    assert first is not None, why
    stale = first.service("stale")
    busy = first.service("busy")
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        handle = spawn(
            ["sleep", "30"],
            env=dict(os.environ),
            cwd="/",
            stdout=null,
            stderr=null,
            cgroup=busy,
            service="busy",
        )
    finally:
        os.close(null)
    try:
        deadline = time.monotonic() + 10  # the shell step joins after the spawn returned
        while cg.members(busy) != [handle.pid]:
            assert time.monotonic() < deadline, "the service never joined its cgroup"
            time.sleep(0.005)
        second, why = cg.CgroupTree.create(tmp_path)
        assert second is not None, why
        assert not stale.exists()
        assert busy.exists() and cg.members(busy) == [handle.pid]
    finally:
        asyncio.run(stop_process(handle, stop_timeout=5))
        for path in (stale, busy):
            cg.kill(path)
            asyncio.run(cg.wait_empty(path, time.monotonic() + 10))
            cg.remove(path)
        first.close()
    assert not first.path.exists()
