"""A snapshot of the process table read from ``/proc/PID/stat``: what ``process`` scans.

One read of a process's stat line gives its parent, group, state and start time together
(psutil exposes no process group), at a quarter of the cost of ``psutil.process_iter``. A stop
polls the table every few milliseconds while it waits, so a scan that recent is shared (see
``TABLE_MAX_AGE``). A process is named for good by its pid and its start in clock ticks:
``create_time_of`` turns those ticks into psutil's ``create_time`` (with ``boot_time``, read
from ``/proc/stat`` as psutil does), so values recorded by a daemon that used psutil compare.
psutil itself is not imported: these reads are all the daemon needed of it, and its import
cost 0.9 MiB of an idle daemon's memory (docs/ARCHITECTURE.md, "Idle footprint").

Pure reading: nothing here signals or waits; ``process`` does that.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "TABLE_MAX_AGE",
    "Proc",
    "boot_time",
    "create_time",
    "create_time_of",
    "pids",
    "proc_table",
    "read_stat",
    "subtree",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Proc(NamedTuple):
    """The fields of /proc/PID/stat that ``process`` needs, read together in one go."""

    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process for good
    zombie: bool


def read_stat(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # gone (or hidden from us)
        return None
    # The command name (field 2) may hold spaces and parentheses; what follows its last ')' is
    # fixed: state, ppid, pgrp, ... with starttime 19 fields after pgrp (proc(5)).
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return Proc(
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            start=int(fields[19]),
            zombie=fields[0] in (b"Z", b"X"),
        )
    except (IndexError, ValueError):
        return None


#: A scan younger than this is reused: 50 concurrent stops polling every few ms would otherwise
#: each read every /proc/PID/stat (a bench found 77% of a "stop 50" there). Callers poll again,
#: so a table this fresh never hides a process for good.
TABLE_MAX_AGE = 0.003
_table_cache: tuple[float, dict[int, Proc]] = (-1.0, {})


def proc_table(max_age: float = 0.0) -> dict[int, Proc]:
    """Every process's stat line; ``max_age`` > 0 accepts a scan that recent (stop polling)."""
    global _table_cache
    now = time.monotonic()
    taken, cached = _table_cache
    if max_age and now - taken < max_age:
        return cached
    table = {}
    for pid in pids():
        p = read_stat(pid)
        if p is not None:
            table[pid] = p
    _table_cache = (time.monotonic(), table)
    return table


def subtree(table: dict[int, Proc], roots: Iterable[int]) -> list[int]:
    """The roots present in ``table`` and all their descendants, each once, parents first."""
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    seen: set[int] = set()
    order: list[int] = []
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid in seen:  # a pid recycled during the scan can make a cycle
            continue
        seen.add(pid)
        order.append(pid)
        stack.extend(children.get(pid, ()))
    return order


def pids() -> list[int]:
    """Every pid in /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def boot_time() -> float:
    """The boot time in seconds since the epoch (``btime`` of /proc/stat, as psutil reads it;
    not cached: it moves when the wall clock is set)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime line in /proc/stat")


def create_time_of(start_ticks: int, boot: float) -> float:
    return float(start_ticks) / _CLK_TCK + boot  # psutil's own formula, so values compare


def create_time(pid: int) -> float | None:
    """psutil's ``Process(pid).create_time()``, or None when there is no such process."""
    p = read_stat(pid)
    return None if p is None else create_time_of(p.start, boot_time())
