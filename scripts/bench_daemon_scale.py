"""Benchmark `daemon`, the scale phase (see bench_daemon.py): 500 services under a log flood.

* scale phase: 500 services, all autostarted: 498 sleepers (``exec sleep 3600``) and 2 log
  writers, each writing 64 KiB blocks of 100-byte lines paced to 50 MB/s (100 MB/s in all; a
  writer that was held up catches up by at most 0.5 s, so it never bursts). Once every service
  runs and 2 s passed, ``--runs`` windows (2 with --quick; at most 3) of `status` calls made flat
  out by one client: 100 warm-up calls, then up to 1000 calls (200 with --quick) or 10 s (4 s),
  whichever comes first, with the driver's garbage collector off while it times. Each window
  gives p50 and p99, and the bytes the writers got out over it (each writer rewrites its total
  to a file every 0.25 s): the flood actually captured, as a supervisor that cannot keep up
  blocks its writers. Shown as median (min-max) over the
  windows, with the box's load in each.

Logs rotate at 50 MB with 2 backups, for every contender (Runyard ``log_max_bytes`` /
``log_backups``, supervisord ``*_logfile_maxbytes`` / ``*_logfile_backups``, Circus
``max_bytes`` / ``backup_count``), so the flood fills no disk. pm2 has no rotation of its own:
the bench truncates its logs from outside past 50 MB (``Contender.log_keeper``, see
bench_daemon_pm2.py), so pm2 pays nothing for rotation, and the notes under the table say so.
pm2's `status` is the same ``pm2.list()`` as in the fleet phase (`pm2 jlist`'s RPC), timed by
its node driver; V8's collector cannot be switched off there. A contender whose 500 services
are not all running within 240 s is skipped with a line saying so. The goal is Runyard's
p99 <= 5 ms.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import bench_daemon as bd
from bench_daemon_start import BoxLoad

__all__ = ["SCALE_KEYS", "measure_scale", "op_status_window", "scale_phase"]

SCALE = 500
WRITERS = 2
WRITER_RATE = 50_000_000  # bytes/s each
ROTATE_BYTES = 50_000_000
ROTATE_BACKUPS = 2
SCALE_KEYS = ("scale_status_p50", "scale_status_p99", "scale_flood_mbps")


def writer_program(rate: int, counter: Path) -> bytes:
    """A paced block writer: ``bd.LINE`` x 655 per ``write``, ``rate`` bytes/s, its running total
    rewritten to ``counter`` (temp + rename) every 0.25 s."""
    return (
        f"#!{sys.executable}\n".encode()
        + textwrap.dedent(
            f"""\
        import os, time
        os.set_blocking(1, True)
        chunk, write, rate, counter = {bd.LINE!r} * 655, os.write, {rate}, {str(counter)!r}
        t0 = last = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            due = (now - t0) * rate
            if due - sent > rate / 2:  # held up: catch up half a second at most
                t0 = now - (sent + rate / 2) / rate
            if sent >= due:
                time.sleep((sent - due) / rate + 0.0005)
                continue
            write(1, chunk)
            sent += len(chunk)
            if now - last >= 0.25:
                with open(counter + ".tmp", "w") as f:
                    f.write(str(sent))
                os.replace(counter + ".tmp", counter)
                last = now
        """
        ).encode()
    )


def scale_phase(base: Path) -> bd.Phase:
    """498 sleepers and 2 paced writers (``w0``, ``w1``), all autostarted, logs rotated."""
    programs = {f"s{i:03d}": bd.SLEEPER for i in range(SCALE - WRITERS)}
    for i in range(WRITERS):
        programs[f"w{i}"] = writer_program(WRITER_RATE, base / "scale" / f"w{i}.count")
    bins = bd.build_tree(base / "scale" / "rt", programs)
    return bd.Phase(
        "scale",
        base / "scale" / "rt",
        tuple(
            bd.Program(name, path, autostart=True, rotate=(ROTATE_BYTES, ROTATE_BACKUPS))
            for name, path in bins.items()
        ),
    )


def op_status_window(api: Any, calls: int, warmup: int, max_secs: float) -> list[int]:
    """The driver's side: ns per `status` call, ``calls`` of them or ``max_secs``, if sooner.

    The driver's own garbage collector is off while it times (as ``timeit`` does): each reply
    of 500 services is 500 decoded structs, and the driver ran a full collection of 6-21 ms
    every ~70 calls, 1.5% of the calls: the p99 measured the driver, not the supervisor
    (found with a gc.callbacks log in every process of the phase).
    """
    for _ in range(warmup):
        api.status()
    out: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        end = clock() + int(max_secs * 1e9)
        while len(out) < calls:
            t0 = clock()
            api.status()
            t1 = clock()
            out.append(t1 - t0)
            if t1 > end:
                break
    finally:
        gc.enable()
    return out


def _written(phase: bd.Phase) -> int:
    total = 0
    for i in range(WRITERS):
        with contextlib.suppress(OSError, ValueError):
            total += int((phase.tree_root.parent / f"w{i}.count").read_text() or 0)
    return total


def measure_scale(
    contender: bd.Contender, phase: bd.Phase, settings: bd.Settings
) -> dict[str, Any]:
    """The scale figures of one contender: lists over the windows; ``n/a (why)`` or
    ``skipped (why)`` when it could not be measured."""
    started = time.monotonic()
    print(f"  {contender.name}: scale phase ({SCALE} services) ...", end="", flush=True)
    windows = max(2, min(settings.rounds, 3))
    calls, secs = (200, 4.0) if settings.status_calls < 1000 else (1000, 10.0)
    out: dict[str, Any] = {key: [] for key in SCALE_KEYS}
    loads = []
    try:
        with contender.log_keeper(phase), bd.serving(contender, phase) as session:
            names = [p.name for p in phase.programs]
            try:
                session.driver.call("wait_running", names=names, within=240.0, timeout=300.0)
            except bd.BenchError as exc:
                print(f" skipped: not all {SCALE} running within 240 s ({str(exc)[:80]})")
                return {key: "skipped (slow start)" for key in SCALE_KEYS}
            time.sleep(settings.settle_secs)
            for _ in range(windows):
                load, bytes0, t0 = BoxLoad(), _written(phase), time.monotonic()
                ns = session.driver.call(
                    "status_window", calls=calls, warmup=100, max_secs=secs, timeout=secs + 120
                )
                mbps = (_written(phase) - bytes0) / (time.monotonic() - t0) / 1e6
                loads.append(f"{len(ns)} calls, {mbps:.0f} MB/s, {load.end()}")
                out["scale_status_p50"].append(bd.percentile(ns, 50) / 1e6)
                out["scale_status_p99"].append(bd.percentile(ns, 99) / 1e6)
                out["scale_flood_mbps"].append(mbps)
        print(f" {time.monotonic() - started:.1f}s")
    except Exception as exc:
        print(f" FAILED: {exc}")
        return {key: f"n/a ({type(exc).__name__})" for key in SCALE_KEYS}
    out["loads"] = {"scale": loads}
    if contender.keeper_note:
        out["notes"] = [contender.keeper_note]
    return out
