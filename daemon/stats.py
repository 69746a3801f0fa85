"""CPU% and RSS per service, sampled in the background while someone looks at them.

One read of ``/proc/PID/stat`` per service gives both (utime + stime, and resident pages), where
psutil took a ``Process`` object and two reads. A sample is tied to the process's start time, so
a recycled pid never inherits another process's CPU counter.

CPU and RSS reach a client only in a status reply, so a status request is what "someone looks"
means: it keeps the sampler going every ``STATS_INTERVAL`` for ``LINGER`` seconds (the TUI asks
every 2 s, so it keeps it going for as long as it is open). An idle daemon that nobody asks
reads nothing and wakes for nothing. The first status after a quiet spell samples inline before
it answers (under a millisecond for 50 services), so a one-shot ``runyard status`` shows fresh
figures: RSS now, and CPU% averaged over the process's life, as ``ps`` shows it, since there is
no earlier sample to take a difference from (none for a process younger than ``LIFETIME_MIN``:
its own start-up would dominate; the next round has a difference). Resource limits sample on their own
(``limit_watch``), only while a limited service runs. The last ``HISTORY`` differences of each
service are kept (``SampleRings``, three minutes while someone looks) for the ``stats`` request,
the TUI's sparklines; a ``stats`` request keeps the sampler going too.

Rounds keep their phase from the first request, so the last one comes up to ``LINGER +
STATS_INTERVAL`` after the last request: ``scripts/bench_daemon.py`` waits that long (and a
second) before it measures idle CPU. LINGER is 2.5 of the TUI's 2 s refreshes, so a refresh
that comes late under load does not stop the sampler (its next status would then show a
lifetime CPU% and leave a gap in the sparklines). After the TUI closes, or after a one-shot
status, at most three rounds follow that nobody reads (~4 ms with 50 services), once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .service import ServiceRunner

__all__ = ["HISTORY", "LINGER", "STATS_INTERVAL", "SampleRings", "StatsSampler"]

STATS_INTERVAL = 2.0
#: Samples kept per service: three minutes at STATS_INTERVAL.
HISTORY = 90
#: Seconds of sampling a status request buys.
LINGER = 5.0
#: A lifetime CPU% is shown for processes at least this old (seconds).
LIFETIME_MIN = 5.0
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: A stat line is 52 numbers and a command name of at most 64 bytes: one read takes it whole.
_STAT_MAX = 4096


class _Sample(NamedTuple):
    start: int  # clock ticks after boot: this process, not a later one with its pid
    cpu_ticks: int  # utime + stime
    rss: int  # bytes
    at: float  # monotonic seconds


def read_sample(pid: int) -> _Sample | None:
    """CPU ticks and RSS of ``pid`` from its stat line; None when it is gone or unreadable.

    One ``read`` of a raw fd: ``open()`` added a buffered reader's fstat, ioctl, two lseeks and
    a second read to see EOF, nine syscalls a service where three do (a round of 50 took
    0.5 ms of reads, 0.35 with these)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _STAT_MAX)
    except OSError:
        return None
    finally:
        os.close(fd)
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


def lifetime_percent(now: _Sample, uptime: float) -> float | None:
    """Percent of one CPU over the process's whole life (``ps``'s %CPU), from one sample and
    the seconds since boot; None for a process younger than LIFETIME_MIN."""
    alive = uptime - now.start / _TICK
    if alive < LIFETIME_MIN:
        return None
    return round(now.cpu_ticks / _TICK / alive * 100, 1)


def _uptime() -> float:
    with open("/proc/uptime", "rb") as f:
        return float(f.read().split()[0])


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


class StatsSampler:
    """Tells each runner its process's CPU% and RSS (``observe``) while someone looks."""

    def __init__(
        self, runners: Callable[[], Iterable[ServiceRunner]], rings: SampleRings | None = None
    ) -> None:
        self._runners = runners
        self.rings = rings if rings is not None else SampleRings()
        self._last: dict[int, _Sample] = {}
        self._wanted_until = 0.0
        self._task: asyncio.Task[None] | None = None
        #: Rounds taken (for tests and the curious).
        self.rounds = 0

    def want(self) -> None:
        """A status is asked: sample for the next LINGER seconds; after a quiet spell, once
        now, before the answer."""
        self._wanted_until = time.monotonic() + LINGER
        if self._task is None:
            self.sample(fresh=True)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while time.monotonic() < self._wanted_until:
                await asyncio.sleep(STATS_INTERVAL)
                self.sample()
        finally:
            self._task = None

    def sample(self, fresh: bool = False) -> None:
        """One round. ``fresh``: the last round is too old to take a difference from, so a CPU%
        is the process's lifetime average."""
        self.rounds += 1
        uptime = _uptime() if fresh else 0.0
        seen: dict[int, _Sample] = {}
        runners = list(self._runners())
        self.rings.keep({runner.name for runner in runners})
        for runner in runners:
            handle = runner.handle
            now = read_sample(handle.pid) if handle is not None else None
            if now is None:
                if runner.cpu_percent is not None or runner.rss is not None:
                    runner.observe(None, None)
                continue
            assert handle is not None
            seen[handle.pid] = now
            before = None if fresh else self._last.get(handle.pid)
            if before is not None and before.start == now.start:
                cpu = cpu_percent(before, now)
                runner.observe(cpu, now.rss)
                self.rings.add(runner.name, cpu, now.rss)
            elif fresh:
                runner.observe(lifetime_percent(now, uptime), now.rss)
            else:  # a process new since the last round: its counter is only primed
                runner.observe(None, now.rss)
        self._last = seen

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
