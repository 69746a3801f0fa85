"""memory_max and tasks_max enforced by the daemon's own sampling, where no cgroup controller does.

Every `LIMIT_INTERVAL` the watch measures each limited service that runs: its processes are the
leader, its process group and every descendant of those (the same set a stop reaches,
``proctable.subtree``); memory is their RSS summed, tasks their threads summed (``pids.max``
counts threads too). A service over a limit is told ``exceed_limit(reason)``: the runner kills
the whole tree and its restart policy decides what follows, the reason being
``memory limit 64 MiB exceeded (rss 71 MiB)`` or ``tasks limit 20 exceeded (27 tasks)``.

Why sampling and not a kernel mechanism: without a memory or pids controller the kernel offers
nothing per service (RLIMIT_AS counts address space, not memory, and breaks runtimes that
reserve large mappings; RLIMIT_NPROC counts a whole uid). The limits are therefore soft by up
to one interval of growth, and RSS sums count shared pages once per process (a service of many
forked workers is charged more than a cgroup would charge it). One stat line per process gives
both figures, so a sample of a 500-process tree is ~500 small reads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from runyard.runtime.config.limits import Limits, format_size

from .proctable import proc_table, subtree

__all__ = ["LIMIT_INTERVAL", "TreeUsage", "measure", "over_limit", "watch_limits"]

#: Crossing a limit to the kill takes at most this plus one scan; the target is under 1 s.
LIMIT_INTERVAL = 0.2
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: One round measures every limited service from one scan of the process table.
_SHARED_SCAN = 0.05


class TreeUsage(NamedTuple):
    rss: int  # bytes, summed over the service's processes
    tasks: int  # threads of those processes, summed


class Limited(Protocol):
    """What the watch needs of a runner (daemon/service.py)."""

    @property
    def name(self) -> str: ...
    def limits_to_sample(self) -> tuple[Limits, frozenset[str]]: ...
    def limited_pids(self) -> tuple[int, int] | None: ...
    def exceed_limit(self, reason: str) -> None: ...


def _rss_and_threads(pid: int) -> tuple[int, int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0, 0
    fields = data[data.rfind(b")") + 2 :].split()
    try:  # proc(5): num_threads is field 20, rss (pages) field 24; fields[0] is field 3
        return int(fields[21]) * _PAGE, int(fields[17])
    except (IndexError, ValueError):
        return 0, 0


def measure(pid: int, pgid: int) -> TreeUsage:
    """RSS and tasks of the leader ``pid``, its group ``pgid`` and all their descendants."""
    table = proc_table(_SHARED_SCAN)
    roots = [p for p, proc in table.items() if proc.pgid == pgid]
    roots.append(pid)
    rss = tasks = 0
    for member in subtree(table, roots):
        if table[member].zombie:
            continue
        r, t = _rss_and_threads(member)
        rss += r
        tasks += t
    return TreeUsage(rss, tasks)


def over_limit(limits: Limits, usage: TreeUsage, sampled: Iterable[str]) -> str | None:
    """The reason a service over one of its ``sampled`` limits is stopped; None when within."""
    sampled = set(sampled)
    memory, tasks = limits.memory_max, limits.tasks_max
    if "memory_max" in sampled and memory is not None and usage.rss > memory:
        return f"memory limit {format_size(memory)} exceeded (rss {format_size(usage.rss)})"
    if "tasks_max" in sampled and tasks is not None and usage.tasks > tasks:
        return f"tasks limit {tasks} exceeded ({usage.tasks} tasks)"
    return None


def check_limits(runners: Iterable[Limited]) -> int:
    """One round: measure each limited, running service and stop the ones over a limit.
    Returns how many were measured."""
    measured = 0
    for runner in runners:
        limits, sampled = runner.limits_to_sample()
        pids = runner.limited_pids()
        if not sampled or pids is None:
            continue
        measured += 1
        reason = over_limit(limits, measure(*pids), sampled)
        if reason is not None:
            runner.exceed_limit(reason)
    return measured


async def watch_limits(runners: Callable[[], Iterable[Limited]], wake: asyncio.Event) -> None:
    """Every LIMIT_INTERVAL, `check_limits`, while some running service has a sampled limit;
    otherwise asleep until ``wake`` is set (the supervisor sets it when such a service starts):
    a daemon with no sampled limit wakes up for none."""
    while True:
        await asyncio.sleep(LIMIT_INTERVAL)
        if not check_limits(runners()):
            wake.clear()
            await wake.wait()
