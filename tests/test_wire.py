"""The wire: typed replies and events a newer daemon cannot break, one set of operations for both
clients, a daemon bounded under abuse, and request fields that name things checked as names."""

from __future__ import annotations

import contextlib
import inspect
import json
import random
import threading
import time
from pathlib import Path

import psutil
import pytest
import zmq
from daemonkit import SLEEPER, Daemon, build_tree, wait_for

from protocol.client import AsyncClient, BadRequest, Client
from protocol.endpoints import endpoints_for
from protocol.messages import Status, encode
from runtime.tree import RuntimeTree

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def empty_daemon(root: Path, daemons) -> Daemon:
    tree = RuntimeTree(root)
    tree.init()
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n')
    return daemons(tree).start()


# --- runs.list takes an engine name, not a path ----------------------------------------------


def test_runs_list_engine_is_a_name_not_a_path(empty_daemon: Daemon) -> None:
    # A run bundle outside the tree's data/ that a path-like engine would reach.
    outside = empty_daemon.tree.root.parent / "elsewhere" / "runs" / "20260101T000000.000000Z-aaaa"
    outside.mkdir(parents=True)
    with empty_daemon.client() as c:
        for bad in ("../elsewhere", "../../tmp", "/etc", "a\x00b", "", "A/B"):
            with pytest.raises(BadRequest) as err:
                c.runs_list(bad)
            line = str(err.value)
            assert "\n" not in line and "invalid engine name" in line, line
        assert c.runs_list("heat1d").runs == []  # a good name of an engine with no runs
        assert c.status().daemon_pid == empty_daemon.proc.pid  # still serving


# --- both clients expose the same operations ---------------------------------------------------


def _operations(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_") and name not in {"close", "request", "events"}
    }


def test_client_and_async_client_have_the_same_operations() -> None:
    sync_ops, async_ops = _operations(Client), _operations(AsyncClient)
    assert sorted(sync_ops) == sorted(async_ops)
    assert len(sync_ops) >= 16  # every request type has its method
    for name, sig in sync_ops.items():
        assert str(sig) == str(async_ops[name]), f"{name}: {sig} != {async_ops[name]}"
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name
    # request / events / close exist on both, with the same parameters.
    for name in ("close", "request", "events"):
        s, a = (
            inspect.signature(getattr(Client, name)),
            inspect.signature(getattr(AsyncClient, name)),
        )
        assert list(s.parameters.values()) == list(a.parameters.values()), name


# --- bounded under abuse -----------------------------------------------------------------------

MiB = 1024 * 1024
#: The daemon's RSS must stay under this through the whole abuse test.
RSS_LIMIT = 64 * MiB


def _random_frames(rng: random.Random) -> list[bytes]:
    """One multipart message of the kinds a broken or hostile peer sends."""
    kind = rng.randrange(6)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 4096))]
    if kind == 1:
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(2, 5))]
    if kind == 2:  # JSON that is not a request
        return [b"[" * rng.randrange(1, 5000) + b"]" * rng.randrange(0, 5000)]
    if kind == 3:  # an op nobody knows, with an id
        return [json.dumps({"op": f"x{rng.random()}", "id": "r"}).encode()]
    if kind == 4:  # a known op with wrong types
        return [json.dumps({"op": "logs.tail", "service": [1, 2], "n": "many"}).encode()]
    return [b""]


class RssPeak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.start_rss = self.peak
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_daemon_bounded_under_abuse(root: Path, daemons) -> None:
    """10,000 random frames, 50 frames of 10-100 MiB and 20 clients bursting status (most of them
    never reading a reply) for 30 s: the daemon keeps its pid, answers status, stays < 64 MiB."""
    tree = build_tree(root, {f"s{i}": SLEEPER for i in range(5)})
    d = daemons(tree).start()
    pid = d.proc.pid
    with d.client() as c:
        wait_for(lambda: all(s.state == "running" for s in c.status().services), what="running")
    endpoint = endpoints_for(tree.root).control
    rng = random.Random(10)
    zctx = zmq.Context()
    big = memoryview(bytearray(100 * MiB))
    sampler = RssPeak(pid)
    sampler.start()
    status = encode(Status(id="burst"))
    try:
        bursters = []
        for i in range(20):
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 0)  # queue as much as the daemon will take
            s.connect(endpoint)
            bursters.append((s, i % 4 == 0))  # one in four reads its replies, the rest never do
        noisy = []
        for _ in range(8):
            s = zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            noisy.append(s)
        random_left, big_left = 10_000, 50
        started = time.monotonic()
        next_check = started + 2
        checks = 0
        while (elapsed := time.monotonic() - started) < 30 or random_left or big_left:
            for s, reads in bursters:
                for _ in range(50):
                    with contextlib.suppress(zmq.Again):
                        s.send(status, zmq.NOBLOCK)
                while reads and s.poll(0, zmq.POLLIN):
                    s.recv()
            # Spread the random and the huge frames over the 30 s.
            due = min(10_000, int(10_000 * elapsed / 28) + 1)
            while random_left and 10_000 - random_left < due:
                with contextlib.suppress(zmq.Again):
                    rng.choice(noisy).send_multipart(_random_frames(rng), zmq.NOBLOCK)
                random_left -= 1
            if big_left and 50 - big_left < int(50 * elapsed / 28) + 1:
                s = zctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(endpoint)
                s.send(big[: rng.randrange(10 * MiB, 100 * MiB + 1)], copy=False)
                s.close()
                big_left -= 1
            if time.monotonic() >= next_check:
                with Client(tree.root, timeout=10) as good:
                    assert good.status().daemon_pid == pid
                checks += 1
                next_check = time.monotonic() + 2
        assert checks >= 10
        with Client(tree.root, timeout=10) as good:
            reply = good.status()
            assert reply.daemon_pid == pid and len(reply.services) == 5
        assert d.proc.poll() is None
    finally:
        sampler.done.set()
        sampler.join()
        zctx.destroy(linger=0)
    print(
        f"daemon RSS {sampler.start_rss / MiB:.1f} MiB at start, peak {sampler.peak / MiB:.1f} MiB"
    )
    assert sampler.peak < RSS_LIMIT, f"peak RSS {sampler.peak / MiB:.1f} MiB"
