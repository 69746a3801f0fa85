"""Live disk usage: a real daemon watches its tree and publishes ``du`` events."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import msgspec
import psutil
import pytest
from daemonkit import SLEEPER, build_tree, wait_for

from runyard.daemon.diskwatch import INTERVAL, DiskWatch
from runyard.daemon.events import EventBus
from runyard.protocol.payloads import DiskReport
from runyard.runtime.core.du import disk_usage
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024

#: Writes its log without pause (about 20k lines a second): logs/flood/ changes all the time.
FLOOD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
n = 0
while True:
    for _ in range(200):
        n += 1
        print("flood line", n, "x" * 60)
    sys.stdout.flush()
    time.sleep(0.01)
"""


def service(report: DiskReport, name: str) -> dict:
    return next(s for s in msgspec.to_builtins(report)["services"] if s["name"] == name)


def states(client) -> dict[str, str]:
    return {s.name: s.state for s in client.status().services}


def usage(report: object) -> dict:  # type: ignore[type-arg]
    """The report without the box's free disk (the daemon adds it; it changes by the second)."""
    data = msgspec.to_builtins(report)
    return {k: v for k, v in data.items() if k not in ("disk_free", "disk_size")}


def test_a_new_file_shows_up_in_a_du_event(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c, c.events(["du"]) as stream:
        wait_for(lambda: set(states(c).values()) == {"running"}, what="running")
        before = service(c.du().report, "a")["data"]["bytes"]
        (tree.data_dir / "a" / "blob.bin").write_bytes(b"\0" * MIB)
        written = time.monotonic()
        deadline = written + 10
        seen = None
        while time.monotonic() < deadline:
            event = stream.get(timeout=max(0.0, deadline - time.monotonic()))
            if event is None:
                break
            assert event.topic == "du"
            if service(event.report, "a")["data"]["bytes"] >= before + MIB:
                seen = event
                break
        assert seen is not None, "no du event showed data/a grow by 1 MiB within 10 s"
        # The merged report agrees with a full scan for every service.
        full = c.du().report
        for name in ("a", "b"):
            assert service(seen.report, name) == service(full, name)
        assert seen.report.total.bytes >= full.total.bytes - 64 * 1024


def test_a_flood_of_changes_is_capped_at_one_event_per_interval(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER, "flood": FLOOD})
    d = daemons(tree).start()
    with d.client() as c, c.events(["du"]) as stream:
        wait_for(lambda: set(states(c).values()) == {"running"}, what="running")
        daemon = psutil.Process(d.proc.pid)
        daemon.cpu_percent()
        window = 4 * INTERVAL + 1.0
        events = []
        end = time.monotonic() + window
        i = 0
        while (now := time.monotonic()) < end:
            # Our own flood on top of the service's log: a new file every few ms.
            (tree.data_dir / "a" / f"f{i % 50}").write_bytes(b"y" * 4096)
            i += 1
            event = stream.get(timeout=min(0.005, end - now))
            if event is not None:
                events.append((time.monotonic(), event))
        cpu = daemon.cpu_percent()
        print(f"daemon CPU over {window:.0f}s of flood: {cpu:.0f}%; {len(events)} du events")
        assert 2 <= len(events) <= window / INTERVAL + 1
        stamps = [e.ts for _, e in events]
        assert all(b - a >= INTERVAL * 0.9 for a, b in itertools.pairwise(stamps))
        # The flood shows: the log directory grows from one event to the next.
        logs = [service(e.report, "flood")["logs"]["bytes"] for _, e in events]
        assert logs[-1] > logs[0]


def test_partial_rescans_merge_into_what_a_full_scan_says(tmp_path) -> None:
    """In process: a change inside data/<svc>/ rescans that directory only, a new service
    directory rescans everything, and both agree with ``disk_usage``."""
    tree = RuntimeTree(tmp_path / "rt")
    init_tree(tree)
    for category in ("data", "logs"):
        (getattr(tree, f"{category}_dir") / "a").mkdir(parents=True)
    (tree.logs_dir / "runyard").mkdir(exist_ok=True)

    async def scenario() -> None:
        bus = EventBus()
        got: asyncio.Queue = asyncio.Queue()
        bus.attach(lambda topic, event: got.put_nowait(event))
        watch = DiskWatch(tree, bus, logging.getLogger("test"), interval=0.2, debounce_ms=50)
        watch.start()
        try:
            first = await asyncio.wait_for(got.get(), 10)
            assert first.seq == 1 and watch.scans == {"full": 1, "partial": 0}

            (tree.data_dir / "a" / "x").write_bytes(b"1" * 1000)
            (tree.logs_dir / "runyard" / "extra.log").write_bytes(b"2" * 300)
            event = await asyncio.wait_for(got.get(), 10)
            while service(event.report, "a")["data"]["bytes"] < 1000:
                event = await asyncio.wait_for(got.get(), 10)
            assert watch.scans["full"] == 1 and watch.scans["partial"] >= 1
            assert usage(event.report) == usage(disk_usage(tree))

            (tree.data_dir / "b").mkdir()
            (tree.data_dir / "b" / "y").write_bytes(b"3" * 10)
            while not any(s.name == "b" for s in event.report.services):
                event = await asyncio.wait_for(got.get(), 10)
            assert watch.scans["full"] == 2
            while service(event.report, "b")["data"]["bytes"] < 10:
                event = await asyncio.wait_for(got.get(), 10)
            assert usage(event.report) == usage(disk_usage(tree))
        finally:
            await watch.close()
        assert all(t.done() for t in watch._tasks) and not watch._tasks

    asyncio.run(scenario())
