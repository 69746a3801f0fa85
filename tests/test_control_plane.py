"""The control plane's request path (issue 16): counted and checked, never timed (the speed is in
``scripts/bench daemon``). A status is answered inside the loop callback that read it, with no
task; nothing is lost on ZMQ's edge-triggered FD; slow requests still run beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from daemonkit import build_tree, wait_for

from runyard.daemon import loop_socket
from runyard.daemon.events import EventBus
from runyard.daemon.handlers import HANDLERS, INLINE, Context
from runyard.daemon.loop_socket import LoopSocket
from runyard.daemon.server import ControlServer
from runyard.daemon.status_wire import EncodedStatusReply
from runyard.daemon.supervisor import Supervisor
from runyard.protocol import messages as m
from runyard.protocol.client import Client
from runyard.protocol.endpoints import endpoints_for
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(120)

IDLE = "import time\nwhile True:\n    time.sleep(1000)\n"
#: Ignores SIGTERM: a stop with wait takes its whole stop_timeout.
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\nwhile True:\n    time.sleep(1000)\n"
)
LOG = logging.getLogger("test_control_plane")


@contextlib.asynccontextmanager
async def serving(tree: RuntimeTree) -> AsyncIterator[ControlServer]:
    """The daemon's supervisor and control server in this process, on this loop (what
    daemon/main.py wires up, without the process around it)."""
    sup = Supervisor(tree, tree.root.parent / "runyard.toml", EventBus(), LOG)
    eps = endpoints_for(tree.root)
    ctx = Context(
        tree=tree, supervisor=sup, events_endpoint=eps.events, version="0", started_at=time.time()
    )
    server = ControlServer(eps, ctx, LOG)
    server.bind()
    server.start()
    try:
        await sup.boot()
        yield server
    finally:
        await sup.close()
        await server.close()


def idle_tree(root: Path, n: int = 3) -> RuntimeTree:
    """``n`` services that do not autostart: statuses with nothing running."""
    names = [f"s{i}" for i in range(n)]
    project = "".join(f"[services.{name}]\nautostart = false\n" for name in names)
    return build_tree(root, dict.fromkeys(names, IDLE), project)


async def test_a_status_is_answered_in_the_callback_that_read_it_with_no_task(root: Path) -> None:
    """zmq.asyncio made each request a Future, a task wake-up and another Future for the reply
    (110-150 us of the ~240 us a status took). A status now creates no task, and its reply
    leaves from inside the reader callback that read it."""
    tree = idle_tree(root)
    loop = asyncio.get_running_loop()
    tasks: list[str] = []

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
        tasks.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop)

    sent_from_a_round: list[bool] = []
    real_send = LoopSocket.send

    def send(self: LoopSocket, frames: Any) -> None:
        sent_from_a_round.append(self._draining)
        real_send(self, frames)

    async with serving(tree):
        with Client(tree.root, timeout=10) as client:
            await asyncio.to_thread(client.status)  # the sampler's task starts here (stats.py)
            loop.set_task_factory(counting_factory)
            LoopSocket.send = send  # type: ignore[method-assign]
            try:
                replies = await asyncio.to_thread(lambda: [client.status() for _ in range(50)])
            finally:
                LoopSocket.send = real_send  # type: ignore[method-assign]
                loop.set_task_factory(None)
    assert [len(r.services) for r in replies] == [3] * 50
    assert tasks == []
    assert sent_from_a_round == [True] * 50


async def test_the_encoded_status_reply_is_the_status_reply_on_the_wire(root: Path) -> None:
    tree = idle_tree(root)
    async with serving(tree) as server:
        sup = server.ctx.supervisor
        reply = INLINE[m.Status](server.ctx, m.Status())
        assert isinstance(reply, EncodedStatusReply)
        reply.id = "x-1"
        decoded = m.decode_reply(msgspec.json.encode(reply))
        assert decoded == m.StatusReply(
            id="x-1",
            services=sup.status(),
            seqs=dict(sup.bus.seqs),
            daemon_pid=decoded.daemon_pid,
            daemon_started_at=server.ctx.started_at,
            epoch=sup.bus.epoch,
        )
        # The same fields, names and defaults (derived, so a field added to StatusReply is sent).
        fields = {f.name: f for f in msgspec.structs.fields(m.StatusReply)}
        assert fields.keys() == {f.name for f in msgspec.structs.fields(EncodedStatusReply)}
        # A sample that changes no figure keeps the runner's encoded status; one that does, not.
        runner = sup.runners["s0"]
        shown = runner.shown()
        runner.observe(runner.cpu_percent, runner.rss)
        assert runner.shown() is shown
        runner.observe(1.5, 4096)
        assert runner.shown() is not shown


def test_every_request_type_has_exactly_one_handler() -> None:
    requests = set(m.RequestUnion.__args__)  # type: ignore[attr-defined]
    assert not INLINE.keys() & HANDLERS.keys()
    assert INLINE.keys() | HANDLERS.keys() == requests
    for handler in INLINE.values():
        assert not asyncio.iscoroutinefunction(handler), handler


async def test_a_request_queued_when_a_task_replies_is_still_read(tmp_path: Path) -> None:
    """ZMQ_FD is edge-triggered: a send processes the socket's pending commands, and with them
    the signal that a request arrived, so the FD stays quiet while the request waits. A reply
    sent from a task (outside a round) must look at ZMQ_EVENTS afterwards, or that request is
    read only when some later request arrives, which may be never."""
    endpoint = f"ipc://{tmp_path}/router"
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"peer")
    got: list[bytes] = []
    link = LoopSocket(router, lambda _link, parts: got.append(parts[1].bytes), LOG.error, LOG)
    try:
        router.bind(endpoint)
        dealer.connect(endpoint)
        link.start()
        dealer.send(b"first")
        await wait_until(lambda: got == [b"first"])
        for round_no in range(20):
            # All in one callback, so the loop cannot look at the FD in between: a request
            # arrives (its signal pending on the FD), then a reply is sent outside a round.
            dealer.send(b"next %d" % round_no)
            assert select.select([link._fd], [], [], 10)[0], "the request never arrived"
            time.sleep(0.002)  # past libzmq's 1 ms throttle: this send processes commands
            link.send([b"peer", b"reply"])
            await wait_until(lambda n=round_no: len(got) == n + 2)
            assert dealer.recv() == b"reply"
        assert got[-1] == b"next 19"
    finally:
        link.stop()
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


async def test_a_full_round_schedules_the_next_one(tmp_path: Path, monkeypatch) -> None:
    """A round reads at most BATCH messages; what is left raises no new edge, so the round
    schedules the next itself."""
    monkeypatch.setattr(loop_socket, "BATCH", 4)
    endpoint = f"ipc://{tmp_path}/router"
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    got: list[bytes] = []
    link = LoopSocket(router, lambda _link, parts: got.append(parts[1].bytes), LOG.error, LOG)
    try:
        router.bind(endpoint)
        dealer.connect(endpoint)
        for i in range(30):
            dealer.send(b"%d" % i)
        link.start()
        await wait_until(lambda: len(got) == 30)
        assert got == [b"%d" % i for i in range(30)]
        assert link.rounds >= 30 // 4
    finally:
        link.stop()
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


async def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_200_concurrent_clients_all_get_their_status(root: Path, daemons) -> None:
    """200 connections each send a status at once: every one is answered (over several rounds
    of at most BATCH messages), none is lost or answered twice."""
    tree = idle_tree(root)
    daemons(tree).start()
    ctx = zmq.Context()
    socks = []
    try:
        for _ in range(200):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoints_for(tree.root).control)
            socks.append(sock)
        for i, sock in enumerate(socks):
            sock.send(m.encode(m.Status(id=f"c{i}")))
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        answers: dict[int, list[str]] = {}
        deadline = time.monotonic() + 30
        while len(answers) < 200 and time.monotonic() < deadline:
            for sock, _ in poller.poll(1000):
                reply = m.decode_reply(sock.recv())
                assert isinstance(reply, m.StatusReply)
                answers.setdefault(socks.index(sock), []).append(reply.id)
        assert answers == {i: [f"c{i}"] for i in range(200)}
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()


def test_a_status_is_answered_while_a_stop_waits(root: Path, daemons) -> None:
    """A stop that waits (the service ignores SIGTERM for its stop_timeout) runs as a task: a
    status asked meanwhile is answered while that stop still waits."""
    tree = build_tree(root, {"stubborn": STUBBORN}, "[services.stubborn]\nstop_timeout = 5\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status().services[0].state == "running", 20, "running")
    stopped = threading.Event()

    def stop() -> None:
        with d.client(timeout=30) as c:
            c.stop(["stubborn"], wait=True)
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        with d.client() as c:
            wait_for(lambda: c.status().services[0].state == "stopping", 10, "stopping")
            assert c.status().services[0].state == "stopping"
            assert not stopped.is_set()
    finally:
        stopper.join(30)
    assert stopped.is_set()
