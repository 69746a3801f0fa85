"""One stop's view of a service: what must be gone before the stop is done, and the sweep
that signals it.

A stop (``process.stop_process``) snapshots the leader's group and tree before any signal and
keeps rescanning while it waits, signalling newcomers too; a contained service adds its cgroup's
members (or the orphans it left to the subreaper daemon) to what is scanned, and a cgroup ends
the stop with ``cgroup.kill`` (``empty_cgroup``). Every process signalled one by one is pinned
with a pidfd and checked against its start time first (``signal_exact``), so a recycled pid is
never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from . import cgroup as cg
from .handle import ProcessHandle
from .proctable import (
    TABLE_MAX_AGE,
    Proc,
    boot_time,
    create_time_of,
    proc_table,
    read_stat,
    subtree,
)
from .subreaper import orphans_of

__all__ = ["FIRST_POLL", "MAX_POLL", "SAME_START", "Sweep", "empty_cgroup", "signal_exact"]

# Two readings of one process's create_time may differ by float rounding (and psutil adds the
# boot time, re-read each call); a recycled pid starts at least one clock tick (10 ms) later.
SAME_START = 0.01
FIRST_POLL = 0.005
MAX_POLL = 0.1


async def empty_cgroup(
    path: Path, gone: bool, killed: bool, kill_timeout: float
) -> tuple[bool, bool]:
    """The end of a contained stop: ``cgroup.kill`` whatever is left, wait until unpopulated."""
    if not cg.populated(path):
        return gone, killed
    cg.kill(path)
    return await cg.wait_empty(path, time.monotonic() + kill_timeout), True


class Sweep:
    """What one stop must see gone: the leader's group and its tree, tracked by start time."""

    def __init__(self, handle: ProcessHandle, unreaped: bool, spawned: Callable[[], set[int]]):
        self.handle = handle
        self._spawned = spawned
        self.tracked: dict[int, int] = {}  # pid -> start ticks
        self._members: list[int] = []  # the cgroup's, as the last table() read them
        table = self.table()
        leader = table.get(handle.pid)
        if leader is None:
            self.leader_start: int | None = None
        elif unreaped:
            self.leader_start = leader.start  # our unreaped child: the pid cannot be recycled
        elif abs(create_time_of(leader.start, boot_time()) - handle.create_time) < SAME_START:
            self.leader_start = leader.start
        else:  # the pid was recycled: never follow a stranger's children
            self.leader_start = None
        self._discover(table)

    def broadcast(self, sig: int) -> None:
        """``sig`` to the group, and one by one to every tracked process outside it."""
        with contextlib.suppress(PermissionError, ProcessLookupError):  # none ours / none left
            os.killpg(self.handle.pgid, sig)
        table = self.table()
        for pid, start in self.tracked.items():
            p = table.get(pid)
            if p is not None and p.start == start and p.pgid != self.handle.pgid:
                signal_exact(pid, start, sig)

    async def settle(self, leader: asyncio.Future[int | None], sig: int, deadline: float) -> bool:
        """Wait until everything is gone (True) or the deadline passes (False).

        Processes that appear meanwhile are tracked and sent ``sig``: they missed the broadcast.
        """
        delay = FIRST_POLL
        while True:
            table = self.table()
            for pid, start in self._discover(table):
                signal_exact(pid, start, sig)
                if sig not in (signal.SIGKILL, signal.SIGCONT):
                    signal_exact(pid, start, signal.SIGCONT)
            if leader.done() and not self._alive(table):
                return True
            # Not held across the wait: a stop of 50 services kept up to 50 snapshots of the
            # whole process table alive at once (~100 KB each on a busy box), and the memory
            # that peak took stayed with the idle daemon (pymalloc keeps its arenas).
            del table
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if leader.done():
                await asyncio.sleep(min(delay, remaining))
            else:  # wakes at once when the leader exits
                await asyncio.wait((leader,), timeout=min(delay, remaining))
            delay = min(delay * 2, MAX_POLL)

    def table(self) -> dict[int, Proc]:
        """The processes this stop looks at. With a cgroup, the kernel's list of its members
        (everything the service forked, wherever it moved in the tree or the groups) and the
        processes already tracked, each stat read alone; else every process on the box (a scan
        shared by the stops polling at the same moment, proctable). A stop of 50 read every
        /proc/PID/stat about five times per service: 77% of a "stop 50" on a box with 300
        processes, where a sleeper's cgroup holds one."""
        self._members = []
        if self.handle.cgroup is None:
            return proc_table(TABLE_MAX_AGE)
        try:
            with open(Path(self.handle.cgroup) / "cgroup.procs", "rb") as f:
                self._members = [int(pid) for pid in f.read().split()]
        except OSError:  # gone, or not ours to read: fall back to the whole table
            return proc_table(TABLE_MAX_AGE)
        table = {}
        for pid in {*self._members, *self.tracked, self.handle.pid}:
            p = read_stat(pid)
            if p is not None:
                table[pid] = p
        return table

    def survivors(self, leader_gone: bool) -> list[int]:
        alive = set(self._alive(proc_table()))
        if not leader_gone:
            alive.add(self.handle.pid)
        return sorted(alive)

    def _discover(self, table: dict[int, Proc]) -> list[tuple[int, int]]:
        """Track the group and the trees below the leader, the group and every tracked process.

        Returns the processes tracked for the first time.
        """
        roots = [pid for pid, p in table.items() if p.pgid == self.handle.pgid]
        roots += [pid for pid in self.tracked if self._is_live(table, pid)]
        roots += self._contained(table)
        leader = table.get(self.handle.pid)
        if leader is not None and leader.start == self.leader_start:
            roots.append(self.handle.pid)
        new = []
        for pid in subtree(table, roots):
            p = table[pid]
            if pid == self.handle.pid or p.zombie or self.tracked.get(pid) == p.start:
                continue
            self.tracked[pid] = p.start
            new.append((pid, p.start))
        return new

    def _contained(self, table: dict[int, Proc]) -> list[int]:
        """The cgroup's members (all in ``table``), or the orphans the subreaper daemon
        inherited from the service."""
        if self.handle.cgroup is not None:
            return self._members
        return (
            orphans_of(self.handle.service, table, self._spawned()) if self.handle.service else []
        )

    def _alive(self, table: dict[int, Proc]) -> list[int]:
        alive = [pid for pid in self.tracked if self._is_live(table, pid)]
        alive += [
            pid
            for pid, p in table.items()
            if p.pgid == self.handle.pgid and not p.zombie and pid not in self.tracked
        ]
        return alive

    def _is_live(self, table: dict[int, Proc], pid: int) -> bool:
        p = table.get(pid)
        return p is not None and not p.zombie and p.start == self.tracked[pid]


def signal_exact(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        p = read_stat(pid)
        if p is None or p.start != start:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)
