"""CPU% and RSS per service, sampled in the background so a status request never waits.

One read of ``/proc/PID/stat`` per service gives both (utime + stime, and resident pages), where
psutil took a ``Process`` object and two reads: 50 services cost well under a millisecond a
round, so sampling every ``STATS_INTERVAL`` keeps an idle daemon idle. A sample is tied to the
process's start time, so a recycled pid never inherits another process's CPU counter. The last ``HISTORY`` samples of each service are kept
(``SampleRings``, three minutes) for the ``stats`` request: the TUI's sparklines.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .service import ServiceRunner

__all__ = ["HISTORY", "STATS_INTERVAL", "SampleRings", "sample_stats"]

STATS_INTERVAL = 2.0
#: Samples kept per service: three minutes at STATS_INTERVAL.
HISTORY = 90
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _Sample(NamedTuple):
    start: int  # clock ticks after boot: this process, not a later one with its pid
    cpu_ticks: int  # utime + stime
    rss: int  # bytes
    at: float  # monotonic seconds


def read_sample(pid: int) -> _Sample | None:
    """CPU ticks and RSS of ``pid`` from its stat line; None when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # state is field 3 of proc(5)
    try:
        return _Sample(
            start=int(fields[19]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            rss=int(fields[21]) * _PAGE,
            at=time.monotonic(),
        )
    except (IndexError, ValueError):
        return None


def cpu_percent(before: _Sample, now: _Sample) -> float:
    """Percent of one CPU between two samples of one process (above 100 with many threads)."""
    wall = now.at - before.at
    if wall <= 0:
        return 0.0
    return round((now.cpu_ticks - before.cpu_ticks) / _TICK / wall * 100, 1)


class SampleRings:
    """(wall time, CPU %, RSS bytes) of each service, its last HISTORY samples, oldest first.
    A service with no process has no samples for that time (a gap, not zeros)."""

    def __init__(self) -> None:
        self.rings: dict[str, deque[tuple[float, float, int]]] = {}

    def add(self, name: str, cpu: float, rss: int, at: float | None = None) -> None:
        ring = self.rings.get(name)
        if ring is None:
            ring = self.rings[name] = deque(maxlen=HISTORY)
        ring.append((time.time() if at is None else at, cpu, rss))

    def keep(self, names: set[str]) -> None:
        """Forget the services that are gone (a reload removed them)."""
        for name in set(self.rings) - names:
            del self.rings[name]


async def sample_stats(
    runners: Callable[[], Iterable[ServiceRunner]], rings: SampleRings | None = None
) -> None:
    """Every STATS_INTERVAL, tell each runner its process's CPU% and RSS (``observe``), and
    keep the sample in ``rings``."""
    last: dict[int, _Sample] = {}
    while True:
        await asyncio.sleep(STATS_INTERVAL)
        seen: dict[int, _Sample] = {}
        if rings is not None:
            rings.keep({runner.name for runner in runners()})
        for runner in runners():
            handle = runner.handle
            now = read_sample(handle.pid) if handle is not None else None
            if now is None:
                if runner.cpu_percent is not None or runner.rss is not None:
                    runner.observe(None, None)
                continue
            assert handle is not None
            seen[handle.pid] = now
            before = last.get(handle.pid)
            if before is not None and before.start == now.start:
                cpu = cpu_percent(before, now)
                runner.observe(cpu, now.rss)
                if rings is not None:
                    rings.add(runner.name, cpu, now.rss)
            # else: the first sample of this process only primes its counter
        last = seen
