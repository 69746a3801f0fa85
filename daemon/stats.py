"""CPU% and RSS per service, sampled in the background so a status request never waits on psutil."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import psutil

from .service import ServiceRunner

__all__ = ["STATS_INTERVAL", "sample_stats"]

STATS_INTERVAL = 2.0


async def sample_stats(runners: Callable[[], Iterable[ServiceRunner]]) -> None:
    """Every STATS_INTERVAL, tell each runner its process's CPU% and RSS (``observe``)."""
    procs: dict[int, psutil.Process] = {}
    while True:
        await asyncio.sleep(STATS_INTERVAL)
        live = set()
        for runner in runners():
            handle = runner.handle
            if handle is None:
                if runner.cpu_percent is not None or runner.rss is not None:
                    runner.observe(None, None)
                continue
            live.add(handle.pid)
            try:
                proc = procs.get(handle.pid)
                if proc is None:
                    proc = procs[handle.pid] = psutil.Process(handle.pid)
                    proc.cpu_percent(None)  # the first call only primes the counter
                    continue
                with proc.oneshot():
                    runner.observe(proc.cpu_percent(None), proc.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                procs.pop(handle.pid, None)
        for pid in [p for p in procs if p not in live]:
            procs.pop(pid)
