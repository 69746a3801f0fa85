"""What the benchmarks share: fixtures built once under .bench/, and rotating timed rounds."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_once", "time_rounds"]


def build_once(base: Path, what: str, stamp: str, build: Callable[[], None]) -> None:
    """Run ``build`` to fill ``base`` unless an earlier build completed there.

    ``base``/complete (holding ``stamp``) marks a finished build; anything else under ``base``
    is a build that was interrupted and is removed first. Put what changes the fixture (sizes,
    seed, layout version) in ``base``'s name so a changed fixture gets a new directory.
    """
    done = base / "complete"
    if done.is_file():
        return
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    print(f"building {what} under {base} ...", flush=True)
    started = time.monotonic()
    build()
    done.write_text(stamp + "\n")
    print(f"built in {time.monotonic() - started:.1f}s", flush=True)


def time_rounds(
    contenders: dict[str, Callable[[], Any]],
    runs: int,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Each contender once per round, rotating the order; round 0 warms up and is not kept.

    A contender may return a callable: cleanup, run untimed after it. Returns wall times; when
    ``cpu_times`` is given it is filled with this process's CPU time of the same rounds (on a
    box other jobs share, CPU time is what a contender costs, wall time also what it waited).
    """
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(runs + 1):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            cpu_started = time.process_time()
            started = time.perf_counter()
            cleanup = contenders[name]()
            elapsed = time.perf_counter() - started
            cpu_spent = time.process_time() - cpu_started
            if callable(cleanup):
                cleanup()
            if round_no:
                times[name].append(elapsed)
                if cpu_times is not None:
                    cpu_times.setdefault(name, []).append(cpu_spent)
    return times
