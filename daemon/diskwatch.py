"""Disk usage as events: watch the tree, publish the per-service report on topic ``du``.

A :class:`DiskWatch` watches ``bin/``, ``data/``, ``logs/``, ``config/`` and ``cache/`` (never
``temp/``: FIFOs, sockets and state.json churn there and count in ``other`` only) with
``watchfiles`` and publishes a :class:`~protocol.messages.DuEvent` whose ``report`` is
``runtime.core.du.disk_usage(...)`` as a ``protocol.payloads.DiskReport``, so a client never walks the disk itself.

Cost and rate:

- one full report at start, then at most one event per :data:`INTERVAL` seconds however many
  files change (a service writing its log non-stop changes ``logs/`` all the time); changes
  that arrive while a scan runs wait for the next one: one scan in flight at most;
- nothing is scanned while nothing changes;
- a change strictly inside ``<category>/<name>/`` (category bin, data, logs or config, name a
  service of the last report or the reserved ``runyard``) rescans only that directory and
  merges the result into the last report; anything else (cache/, a service directory appearing
  or going, a stray file) rescans everything. So a flooding log costs a scan of
  ``logs/<svc>/`` (a handful of rotated files) per interval, not of the whole tree;
- a merged report can differ from a full one only for files with several hard links across
  units (``disk_usage`` places such a file with the unit whose path sorts first, a partial
  rescan counts it in the unit it rescans) and by what changed between a full scan and the
  baseline of ``other``'s parts; a full rescan, at most every :data:`RESYNC` seconds and only
  when something changed, resets both;
- scans run in a thread (``asyncio.to_thread``): the event loop never waits on the disk;
- when nobody wants topic ``du`` (``EventBus.wants``) the batch is not scanned; the next one
  then scans everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import msgspec
from watchfiles import awatch

from runyard.protocol import payloads as wire
from runyard.protocol.messages import DuEvent
from runyard.runtime.acquisition.cache import cache_owner
from runyard.runtime.core.du import CATEGORIES, DiskReport, Usage, disk_usage, scan_usage
from runyard.runtime.core.tree import RESERVED_NAMES, RuntimeTree

from .events import EventBus

__all__ = ["DEBOUNCE_MS", "INTERVAL", "RESYNC", "DiskWatch", "with_free_disk"]

#: Seconds between two du events, at least.
INTERVAL = 2.0
#: watchfiles gathers changes for this long (ms) before it hands a batch over.
DEBOUNCE_MS = 500
#: A change batch older than this since the last full scan gets a full scan (seconds).
RESYNC = 60.0
#: The watch thread wakes up this often (ms) even when nothing changes.
RUST_TIMEOUT_MS = 1_000

#: Directories whose service subdirectories are rescanned alone: category -> tree attribute.
_UNIT_DIRS = {c: f"{c}_dir" for c in CATEGORIES if c != "cache"}

Unit = tuple[str, str]  # (category, name)


class DiskWatch:
    def __init__(
        self,
        tree: RuntimeTree,
        bus: EventBus,
        log: logging.Logger,
        *,
        interval: float = INTERVAL,
        debounce_ms: int = DEBOUNCE_MS,
    ) -> None:
        self.tree = tree
        self.bus = bus
        self.log = log
        self.interval = interval
        self.debounce_ms = debounce_ms
        self.report: DiskReport | None = None
        #: Usage of the reserved directories (part of ``other``) at the last scan.
        self._other_parts: dict[Unit, Usage] = {}
        self._pending: set[Unit] = set()
        self._full_pending = True
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_event = float("-inf")
        self._last_full = float("-inf")
        self._tasks: list[asyncio.Task[None]] = []
        self._roots: dict[str, str] = {}  # real path of a category dir -> category
        for category in (*_UNIT_DIRS, "cache"):
            path = getattr(tree, f"{category}_dir")
            self._roots[os.path.realpath(path)] = category
        #: Scans done, full and partial (for tests and the curious).
        self.scans = {"full": 0, "partial": 0}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._publish_loop(), name="diskwatch-publish"),
            loop.create_task(self._watch_loop(), name="diskwatch-watch"),
        ]

    async def close(self) -> None:
        """Stop watching; returns once the watch thread has let go (within ~50 ms)."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # --- watching ----------------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        roots = [p for p in self._roots if os.path.isdir(p)]
        if not roots:
            return
        try:
            async for changes in awatch(
                *roots,
                watch_filter=None,  # every file counts, editor swap files included
                debounce=self.debounce_ms,
                rust_timeout=RUST_TIMEOUT_MS,
                stop_event=self._stop,
                ignore_permission_denied=True,
            ):
                for _, path in changes:
                    self._note(path)
                self._dirty.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the daemon goes on without live disk usage
            self.log.warning("disk watch stopped: %s", exc)

    def _note(self, path: str) -> None:
        """Record what a changed path means: one unit to rescan, or a full scan."""
        if self._full_pending:
            return
        for root, category in self._roots.items():
            if path.startswith(root + os.sep):
                parts = path[len(root) + 1 :].split(os.sep, 1)
                if category in _UNIT_DIRS and len(parts) == 2 and self._known(category, parts[0]):
                    self._pending.add((category, parts[0]))
                    return
                break
        self._full_pending = True
        self._pending.clear()

    def _known(self, category: str, name: str) -> bool:
        if name in RESERVED_NAMES:
            return (category, name) in self._other_parts
        return self.report is not None and any(s.name == name for s in self.report.services)

    # --- scanning and publishing -------------------------------------------------------------

    async def _publish_loop(self) -> None:
        self._dirty.set()  # the initial report
        while True:
            await self._dirty.wait()
            delay = self._last_event + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # changes keep piling up meanwhile
            self._dirty.clear()
            units, full = self._pending, self._full_pending
            self._pending, self._full_pending = set(), False
            if not self.bus.wants("du"):
                self._full_pending = True  # the report is stale from here on
                continue
            if time.monotonic() - self._last_full >= RESYNC:
                full = True
            try:
                report = await asyncio.to_thread(self._measure, units, full)
            except Exception as exc:
                self.log.warning("disk usage scan failed: %s", exc)
                self._full_pending = True
                self._last_event = time.monotonic()  # do not retry in a tight loop
                continue
            self._last_event = time.monotonic()
            self.bus.publish(
                "du", lambda seq, ts, r=report: DuEvent(topic="du", seq=seq, ts=ts, report=r)
            )

    def _measure(self, units: set[Unit], full: bool) -> wire.DiskReport:
        """In a worker thread: update ``self.report`` and return it as the wire struct."""
        if full or self.report is None:
            self._last_full = time.monotonic()
            self.report = disk_usage(self.tree, cache_owner(self.tree).get)
            self._other_parts = {
                (category, name): scan_usage(self._unit_path(category, name), parallel=False)
                for category in _UNIT_DIRS
                for name in RESERVED_NAMES
            }
            self.scans["full"] += 1
        else:
            self._merge(units)
            self.scans["partial"] += 1
        return with_free_disk(wire.from_runtime(self.report, wire.DiskReport), self.tree.root)

    def _unit_path(self, category: str, name: str) -> str:
        return os.path.join(getattr(self.tree, _UNIT_DIRS[category]), name)

    def _merge(self, units: set[Unit]) -> None:
        report = self.report
        assert report is not None
        by_name = {s.name: s for s in report.services}
        for category, name in sorted(units):
            usage = scan_usage(self._unit_path(category, name), parallel=False)
            if name in by_name:
                service = by_name[name]
                setattr(service, category, usage)
                service.total = sum((getattr(service, c) for c in CATEGORIES), start=Usage())
            elif (category, name) in self._other_parts:
                old = self._other_parts[(category, name)]
                self._other_parts[(category, name)] = usage
                report.other = Usage(
                    report.other.bytes - old.bytes + usage.bytes,
                    report.other.files - old.files + usage.files,
                )
        total = report.other
        for service in report.services:
            total += service.total
        report.total = total


def with_free_disk(report: wire.DiskReport, root: os.PathLike[str] | str) -> wire.DiskReport:
    """``report`` with the free and total bytes of the filesystem ``root`` is on (the box's
    free disk, for the disk panel); as it is when statvfs fails."""
    try:
        fs = os.statvfs(root)
    except OSError:
        return report
    return msgspec.structs.replace(
        report, disk_free=fs.f_bavail * fs.f_frsize, disk_size=fs.f_blocks * fs.f_frsize
    )
