"""The client library against a protocol peer: real ROUTER and XPUB sockets on ipc endpoints.

The peer is a thread that answers requests from a dict of handlers (op -> answers) and publishes
what a test hands it. It speaks the wire protocol and nothing else: no supervision behind it.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import zmq

from runyard.protocol.client import (
    REMOTE_ERRORS,
    AsyncClient,
    BadRequest,
    Client,
    ClientError,
    Conflict,
    DaemonUnreachable,
    Gap,
    GapTracker,
    InternalError,
    NotFound,
    OperationFailed,
    ProtocolError,
    RemoteError,
    TooLarge,
    UnsupportedVersion,
    Verdict,
)
from runyard.protocol.endpoints import RELAY_MARK, endpoints_for, prepare_socket_dir
from runyard.protocol.messages import (
    DuReply,
    ErrorReply,
    Event,
    HelloReply,
    LogEvent,
    LogLine,
    LogsReply,
    LogsTail,
    Reply,
    Request,
    ServiceStatus,
    StateEvent,
    Status,
    StatusReply,
    decode_request,
    encode,
)
from runyard.protocol.transport import heartbeats_for

pytestmark = pytest.mark.timeout(30)

# --- the protocol peer -------------------------------------------------------------------------


@dataclass
class Late:
    """An answer the peer sends ``delay`` seconds after the request came in."""

    delay: float
    answer: Reply | bytes


Answer = Reply | bytes | Late
Handler = Callable[["Peer", Request], list[Answer]]


class Peer:
    """A ROUTER + XPUB in a thread, answering each request with what its op's handler returns.

    A Reply without an id gets the request's id; bytes go out as they are.
    """

    def __init__(self, root: Path, handlers: dict[str, Handler]) -> None:
        self.endpoints = endpoints_for(root)
        prepare_socket_dir(self.endpoints)
        self.handlers = handlers
        self.requests: list[Request] = []
        self.identities: list[bytes] = []
        self.errors: list[BaseException] = []
        self._outbox: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._subscribed = False
        self._xpub: zmq.Socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "peer did not bind"

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()
        if self.errors:
            raise self.errors[0]

    def publish(self, event: Event) -> None:
        self._outbox.put([event.topic.encode(), encode(event)])

    def publish_raw(self, frames: list[bytes]) -> None:
        self._outbox.put(frames)

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        """For handlers (peer thread): wait until a SUB has subscribed, as a snapshot must."""
        assert self._xpub is not None
        deadline = time.monotonic() + timeout
        while not self._subscribed:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "nobody subscribed"
            if self._xpub.poll(int(remaining * 1000) + 1):
                self._take_subscription()

    def _take_subscription(self) -> None:
        assert self._xpub is not None
        frame = self._xpub.recv()
        if frame[:1] == b"\x01":
            self._subscribed = True

    def _run(self) -> None:
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        xpub = ctx.socket(zmq.XPUB)
        for sock in (router, xpub):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind(self.endpoints.control)
        xpub.bind(self.endpoints.events)
        self._xpub = xpub
        self._ready.set()
        later: list[tuple[float, bytes, bytes]] = []
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                while True:
                    try:
                        xpub.send_multipart(self._outbox.get_nowait())
                    except queue.Empty:
                        break
                now = time.monotonic()
                for item in [x for x in later if x[0] <= now]:
                    later.remove(item)
                    router.send_multipart([item[1], item[2]])
                ready = dict(poller.poll(10))
                if xpub in ready:
                    self._take_subscription()
                if router in ready:
                    identity, payload = router.recv_multipart()
                    self._answer(router, identity, payload, later)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            router.close(0)
            xpub.close(0)
            ctx.term()

    def _answer(
        self,
        router: zmq.Socket,
        identity: bytes,
        payload: bytes,
        later: list[tuple[float, bytes, bytes]],
    ) -> None:
        req = decode_request(payload)
        self.requests.append(req)
        self.identities.append(identity)
        for answer in self.handlers[type(req).__struct_config__.tag](self, req):
            delay = 0.0
            if isinstance(answer, Late):
                delay, answer = answer.delay, answer.answer
            if isinstance(answer, Reply):
                if not answer.id:
                    answer = msgspec.structs.replace(answer, id=req.id)
                answer = encode(answer)
            if delay:
                later.append((time.monotonic() + delay, identity, answer))
            else:
                router.send_multipart([identity, answer])


# --- message makers ----------------------------------------------------------------------------


def svc(name: str = "web", state: str = "running") -> ServiceStatus:
    return ServiceStatus(name=name, state=state, wanted="up")


def status_reply(
    seqs: dict[str, int] | None = None, services: list[ServiceStatus] | None = None, id: str = ""
) -> StatusReply:
    return StatusReply(
        id=id,
        services=services if services is not None else [svc()],
        seqs=seqs or {},
        daemon_pid=1,
        daemon_started_at=0.0,
    )


def state_event(seq: int, state: str = "running", name: str = "web") -> StateEvent:
    return StateEvent(topic=f"state.{name}", seq=seq, ts=0.0, service=svc(name, state))


def log_line(seq: int) -> LogLine:
    return LogLine(seq, float(seq), "stdout", f"line {seq}")


def log_event(*seqs: int, name: str = "web") -> LogEvent:
    """Numbered by line, as the daemon does: the event's seq is its last line's."""
    return LogEvent(
        topic=f"log.{name}",
        seq=seqs[-1],
        ts=0.0,
        service=name,
        lines=[log_line(s) for s in seqs],
    )


def snapshot_handler(seqs: dict[str, int], before: list[Event] = ()) -> Handler:
    """status: a full one waits for the subscription and publishes ``before`` (all at or below
    ``seqs``) ahead of its reply, as a daemon may between subscription and snapshot."""

    def handle(peer: Peer, req: Request) -> list[Answer]:
        assert isinstance(req, Status)
        if not req.services:
            peer.wait_subscribed()
            for event in before:
                peer.publish(event)
        return [status_reply(seqs)]

    return handle


def hello_reply() -> HelloReply:
    return HelloReply(protocol=1, daemon_version="0-test", pid=1, root="/r", events="ipc://e")


def lines_of(event: Event | None) -> list[int]:
    assert isinstance(event, LogEvent), event
    return [ln.seq for ln in event.lines]


@pytest.fixture
def root() -> Iterator[Path]:
    # A short path: ipc socket paths are limited to ~100 bytes and tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ry"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- GapTracker --------------------------------------------------------------------------------


def test_gap_tracker_drops_what_the_snapshot_holds() -> None:
    tracker = GapTracker({"state.web": 3})
    assert tracker.observe("state.web", 2) is Verdict.DROP
    assert tracker.observe("state.web", 3) is Verdict.DROP
    assert tracker.observe("state.web", 4) is Verdict.OK
    assert tracker.observe("state.web", 4) is Verdict.DROP
    assert tracker.last("state.web") == 4


def test_gap_tracker_reports_a_gap_and_moves_past_it() -> None:
    tracker = GapTracker({"state.web": 3})
    assert tracker.observe("state.web", 7) == Gap("state.web", 4, 6)
    assert Gap("state.web", 4, 6).size == 3
    assert tracker.observe("state.web", 5) is Verdict.DROP
    assert tracker.observe("state.web", 8) is Verdict.OK


def test_gap_tracker_unseen_topic_starts_at_zero() -> None:
    tracker = GapTracker({})
    assert tracker.observe("du", 1) is Verdict.OK
    assert tracker.observe("daemon", 3) == Gap("daemon", 1, 2)


def test_gap_tracker_log_events_cover_their_lines() -> None:
    tracker = GapTracker({"log.web": 2})
    assert tracker.observe("log.web", 5, first=3) is Verdict.OK
    assert tracker.observe("log.web", 9, first=8) == Gap("log.web", 6, 7)
    # Overlapping what we have is still whole (the known lines are trimmed by the stream).
    assert tracker.observe("log.web", 11, first=9) is Verdict.OK


def test_gap_tracker_advance_never_goes_back() -> None:
    tracker = GapTracker({"state.web": 5})
    tracker.advance("state.web", 3)
    assert tracker.last("state.web") == 5
    tracker.advance("state.web", 9)
    assert tracker.observe("state.web", 9) is Verdict.DROP


# --- requests (sync) ---------------------------------------------------------------------------


def test_request_reply_correlation(root: Path) -> None:
    handlers: dict[str, Handler] = {
        "hello": lambda peer, req: [hello_reply()],
        "status": lambda peer, req: [status_reply({"state.web": 4})],
    }
    with Peer(root, handlers) as peer, Client(root, timeout=5, client_name="t") as client:
        assert client.hello().daemon_version == "0-test"
        assert client.status(["web"]).seqs == {"state.web": 4}
        assert client.status().services[0].name == "web"
    ids = [req.id for req in peer.requests]
    assert len(set(ids)) == 3 and all(ids)
    assert peer.requests[0].client == "t"
    assert peer.requests[1].services == ["web"]


def test_reply_with_another_id_is_discarded(root: Path) -> None:
    handlers: dict[str, Handler] = {
        "status": lambda peer, req: [
            status_reply(services=[svc("stale")], id="not-yours"),
            b"\xff not json at all",
            status_reply(services=[svc("mine")]),
        ]
    }
    with Peer(root, handlers), Client(root, timeout=5) as client:
        assert [s.name for s in client.status().services] == ["mine"]


def test_stale_reply_after_a_timeout_is_discarded(root: Path) -> None:
    calls = iter([svc("first"), svc("second")])

    def late_status(peer: Peer, req: Request) -> list[Answer]:
        # The first answer comes after the client gave up but before the second one.
        return [Late(0.6, status_reply(services=[next(calls)]))]

    with Peer(root, {"status": late_status}) as peer, Client(root, timeout=5) as client:
        with pytest.raises(DaemonUnreachable, match=r"within 0\.3s"):
            client.status(timeout=0.3)
        assert [s.name for s in client.status().services] == ["second"]
    # The DEALER was made anew: the late reply went to a socket that no longer exists.
    assert peer.identities[0] != peer.identities[1]


def test_unreachable_fast_without_socket_file(root: Path) -> None:
    with Client(root, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable, match=r"is the daemon running\? \(runyard up\)"):
            client.status()
        with pytest.raises(DaemonUnreachable, match=r"events\.sock"):
            client.events()
        assert time.monotonic() - started < 1.0


def test_unreachable_on_timeout_when_nobody_answers(root: Path) -> None:
    with Peer(root, {"status": lambda peer, req: []}) as peer, Client(root, timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable) as info:
            c.status()
        assert 0.3 <= time.monotonic() - started < 3
        assert peer.endpoints.control in str(info.value)
        assert "is the daemon running? (runyard up)" in str(info.value)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("bad_request", BadRequest),
        ("unsupported_version", UnsupportedVersion),
        ("not_found", NotFound),
        ("conflict", Conflict),
        ("too_large", TooLarge),
        ("failed", OperationFailed),
        ("internal", InternalError),
    ],
)
def test_error_reply_raises_its_class(root: Path, code: str, cls: type[RemoteError]) -> None:
    handlers: dict[str, Handler] = {
        "start": lambda peer, req: [ErrorReply(code=code, message="no service 'x'")]
    }
    with Peer(root, handlers), Client(root, timeout=5) as client, pytest.raises(cls) as info:
        client.start(["x"])
    assert type(info.value) is cls and REMOTE_ERRORS[code] is cls
    assert (info.value.code, info.value.message) == (code, "no service 'x'")
    assert isinstance(info.value, ClientError)


def test_unknown_error_code_is_a_plain_remote_error(root: Path) -> None:
    def newer_daemon(peer: Peer, req: Request) -> list[Answer]:
        return [
            msgspec.json.encode(
                {"reply": "error", "id": req.id, "code": "quota", "message": "over quota"}
            )
        ]

    with (
        Peer(root, {"du": newer_daemon}),
        Client(root, timeout=5) as client,
        pytest.raises(RemoteError) as info,
    ):
        client.du()
    assert type(info.value) is RemoteError
    assert (info.value.code, info.value.message) == ("quota", "over quota")


def test_wrong_reply_kind_is_a_protocol_error(root: Path) -> None:
    handlers: dict[str, Handler] = {"status": lambda peer, req: [DuReply(report={})]}
    with (
        Peer(root, handlers),
        Client(root, timeout=5) as client,
        pytest.raises(ProtocolError, match="StatusReply"),
    ):
        client.status()


def test_helpers_send_the_right_requests(root: Path) -> None:
    handlers: dict[str, Handler] = {
        "logs.tail": lambda peer, req: [LogsReply(service="web", lines=[log_line(9)], last_seq=9)],
        "signal": lambda peer, req: [ErrorReply(code="not_found", message="x")],
    }
    with Peer(root, handlers) as peer, Client(root, timeout=5) as client:
        reply = client.logs_tail("web", n=5, after_seq=8)
        assert [ln.line for ln in reply.lines] == ["line 9"]
        with pytest.raises(NotFound):
            client.signal("web", 15)
    tail, sig = peer.requests
    assert (tail.service, tail.n, tail.after_seq) == ("web", 5, 8)
    assert (sig.service, sig.signal) == ("web", "15")


def test_closed_client_refuses_and_closes_its_streams(root: Path) -> None:
    with Peer(root, {"status": snapshot_handler({})}):
        client = Client(root, timeout=5)
        stream = client.events()
        client.close()
        client.close()
        assert list(stream) == []
        with pytest.raises(ClientError, match="closed"):
            client.status()


# --- events (sync) -----------------------------------------------------------------------------


def test_events_snapshot_then_live_and_older_events_dropped(root: Path) -> None:
    seqs = {"state.web": 3, "log.web": 2}
    old = [state_event(2, "starting"), state_event(3, "running"), log_event(1, 2)]
    with (
        Peer(root, {"status": snapshot_handler(seqs, old)}) as peer,
        Client(root, timeout=5) as client,
        client.events(timeout=5) as stream,
    ):
        assert stream.snapshot.seqs == seqs
        assert stream.snapshot.services[0].state == "running"
        peer.publish(state_event(4, "stopping"))
        peer.publish(log_event(3, 4))
        first = stream.get(5)
        assert isinstance(first, StateEvent) and (first.seq, first.service.state) == (
            4,
            "stopping",
        )
        assert lines_of(next(stream)) == [3, 4]
        assert stream.gaps == 0 and stream.malformed == 0
    assert [r.services for r in peer.requests] == [[]]


def test_log_gap_is_backfilled_in_order_before_the_live_event(root: Path) -> None:
    def tail(peer: Peer, req: Request) -> list[Answer]:
        # The ring has moved on: it holds the live line too, which must not come out twice.
        lines = [log_line(s) for s in (6, 7, 8)]
        return [LogsReply(service="web", lines=lines, last_seq=8)]

    handlers: dict[str, Handler] = {"status": snapshot_handler({"log.web": 2}), "logs.tail": tail}
    with (
        Peer(root, handlers) as peer,
        Client(root, timeout=5) as client,
        client.events(["log.web"], timeout=5) as stream,
    ):
        # 2..3 straddles the snapshot: only line 3 is new.
        for event in (log_event(2, 3), log_event(4, 5), log_event(8, 9)):
            peer.publish(event)
        got = [next(stream) for _ in range(4)]
        assert [lines_of(e) for e in got] == [[3], [4, 5], [6, 7], [8, 9]]
        assert [e.seq for e in got] == [3, 5, 7, 9]
        assert (stream.gaps, stream.unfilled) == (1, 0)
    backfill = peer.requests[-1]
    assert isinstance(backfill, LogsTail)
    assert (backfill.service, backfill.after_seq, backfill.n) == ("web", 5, 2)


def test_state_gap_is_refreshed_with_status(root: Path) -> None:
    def status(peer: Peer, req: Request) -> list[Answer]:
        if not req.services:
            peer.wait_subscribed()
            return [status_reply({"state.web": 1})]
        assert req.services == ["web"]
        return [status_reply({"state.web": 6}, [svc("web", "backoff")])]

    with (
        Peer(root, {"status": status}) as peer,
        Client(root, timeout=5) as client,
        client.events("state.", timeout=5) as stream,
    ):
        for event in (state_event(2, "starting"), state_event(5, "running")):
            peer.publish(event)
        peer.publish(state_event(6, "exited"))  # already in the refreshed status
        peer.publish(state_event(7, "starting"))
        got = [next(stream) for _ in range(3)]
        assert all(isinstance(e, StateEvent) for e in got)
        assert [(e.seq, e.service.state) for e in got] == [
            (2, "starting"),
            (6, "backoff"),
            (7, "starting"),
        ]
        assert stream.get(0.2) is None


def test_failed_backfill_still_delivers_the_live_event(root: Path) -> None:
    handlers: dict[str, Handler] = {
        "status": snapshot_handler({"log.web": 1}),
        "logs.tail": lambda peer, req: [ErrorReply(code="not_found", message="gone")],
    }
    with (
        Peer(root, handlers) as peer,
        Client(root, timeout=5) as client,
        client.events(timeout=5) as stream,
    ):
        peer.publish(log_event(5))
        assert lines_of(stream.get(5)) == [5]
        assert (stream.gaps, stream.unfilled) == (1, 1)


def test_malformed_event_frames_are_skipped(root: Path) -> None:
    with (
        Peer(root, {"status": snapshot_handler({})}) as peer,
        Client(root, timeout=5) as client,
        client.events(timeout=5) as stream,
    ):
        peer.publish_raw([b"state.web", b"{not json"])
        peer.publish_raw([b"state.web"])
        peer.publish_raw([b"state.web", encode(state_event(1, name="db"))])  # topic mismatch
        peer.publish_raw([b"state.web", b'{"event": "from-the-future", "topic": "state.web"}'])
        peer.publish(state_event(1))
        event = stream.get(5)
        assert isinstance(event, StateEvent) and event.seq == 1
        assert stream.malformed == 4


def test_event_timeouts(root: Path) -> None:
    with (
        Peer(root, {"status": snapshot_handler({})}),
        Client(root, timeout=5) as client,
        client.events(timeout=0.1) as stream,
    ):
        started = time.monotonic()
        assert stream.get(0.1) is None
        with pytest.raises(TimeoutError):
            next(stream)
        assert time.monotonic() - started < 2
    with pytest.raises(StopIteration):
        next(stream)


# --- asyncio -----------------------------------------------------------------------------------


async def test_async_request_errors_and_unreachable(root: Path) -> None:
    async with AsyncClient(root, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable, match="is the daemon running"):
            await client.hello()
        assert time.monotonic() - started < 1.0
    handlers: dict[str, Handler] = {
        "hello": lambda peer, req: [hello_reply()],
        "stop": lambda peer, req: [ErrorReply(code="conflict", message="shutting down")],
        "du": lambda peer, req: [],
    }
    with Peer(root, handlers) as peer:
        async with AsyncClient(root, timeout=0.3) as client:
            assert (await client.hello()).pid == 1
            with pytest.raises(Conflict, match="shutting down"):
                await client.stop(["web"], wait=False)
            with pytest.raises(DaemonUnreachable, match=r"within 0\.3s"):
                await client.du()
            assert (await client.hello()).pid == 1
    assert peer.requests[1].wait is False
    assert peer.identities[2] != peer.identities[3]  # a fresh DEALER after the timeout


async def test_async_concurrent_requests_get_their_own_replies(root: Path) -> None:
    def status(peer: Peer, req: Request) -> list[Answer]:
        name = req.services[0]
        return [Late(0.4 if name == "slow" else 0.0, status_reply(services=[svc(name)]))]

    with Peer(root, {"status": status}):
        async with AsyncClient(root, timeout=5) as client:
            slow, fast = await asyncio.gather(client.status(["slow"]), client.status(["fast"]))
    assert (slow.services[0].name, fast.services[0].name) == ("slow", "fast")


async def test_async_stale_reply_after_a_timeout_is_discarded(root: Path) -> None:
    calls = iter([svc("first"), svc("second")])

    def late_status(peer: Peer, req: Request) -> list[Answer]:
        return [Late(0.6, status_reply(services=[next(calls)]))]

    with Peer(root, {"status": late_status}):
        async with AsyncClient(root, timeout=5) as client:
            with pytest.raises(DaemonUnreachable):
                await client.status(timeout=0.3)
            assert [s.name for s in (await client.status()).services] == ["second"]


async def test_async_events_snapshot_gap_backfill_and_malformed(root: Path) -> None:
    def tail(peer: Peer, req: Request) -> list[Answer]:
        return [LogsReply(service="web", lines=[log_line(4), log_line(5)], last_seq=6)]

    seqs = {"log.web": 2, "state.web": 1}
    handlers: dict[str, Handler] = {
        "status": snapshot_handler(seqs, [state_event(1), log_event(2)]),
        "logs.tail": tail,
    }
    with Peer(root, handlers) as peer:
        async with (
            AsyncClient(root, timeout=5) as client,
            client.events(["log.", "state."], timeout=5) as stream,
        ):
            assert stream.snapshot.seqs == seqs
            peer.publish_raw([b"log.web", b"garbage"])
            for event in (log_event(3), log_event(6), state_event(2, "stopping")):
                peer.publish(event)
            got = []
            async for event in stream:
                got.append(event)
                if len(got) == 4:
                    break
            assert [lines_of(e) for e in got[:3]] == [[3], [4, 5], [6]]
            assert isinstance(got[3], StateEvent) and got[3].service.state == "stopping"
            assert (stream.malformed, stream.gaps, stream.unfilled) == (1, 1, 0)
            assert await stream.get(0.1) is None
        assert stream.state.value == "closed"
    assert isinstance(peer.requests[-1], LogsTail) and peer.requests[-1].after_seq == 3


async def test_async_events_open_by_await_and_close_with_client(root: Path) -> None:
    with Peer(root, {"status": snapshot_handler({"du": 4})}) as peer:
        client = AsyncClient(root, timeout=5)
        stream = await client.events("du")
        assert stream.snapshot.seqs == {"du": 4}
        await client.close()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        with pytest.raises(ClientError, match="closed"):
            await client.status()
    assert len(peer.requests) == 1


def test_a_new_daemon_epoch_resets_the_seqs() -> None:
    """After a daemon restart seqs start at 1 again: they must not be dropped as old."""
    from runyard.protocol.gaps import StreamCore
    from runyard.protocol.messages import DaemonEvent, StatusReply, encode

    core = StreamCore(
        StatusReply(
            services=[], seqs={"daemon": 7}, daemon_pid=1, daemon_started_at=100.0, epoch=100.0
        )
    )
    old = DaemonEvent(topic="daemon", seq=7, ts=1.0, kind="started", epoch=100.0)
    assert core.take([b"daemon", encode(old)]) is None  # in the snapshot
    new = DaemonEvent(topic="daemon", seq=1, ts=2.0, kind="started", epoch=200.0)
    taken = core.take([b"daemon", encode(new)])
    assert taken is not None and taken[0].seq == 1 and taken[1] is None


def test_a_request_over_the_size_limit_is_refused_before_sending(tmp_path) -> None:
    from runyard.protocol.client import Client, TooLarge
    from runyard.protocol.messages import MAX_MESSAGE_BYTES

    with Client(tmp_path, timeout=0.2) as client, pytest.raises(TooLarge, match="over"):
        client.status(["x" * (MAX_MESSAGE_BYTES + 1)])


def test_an_error_without_id_answers_the_only_request_in_flight() -> None:
    """An older daemon that cannot read a new op answers bad_request with no id: the client
    must raise at once, not wait out its timeout."""
    import tempfile
    import threading
    import time

    import zmq

    from runyard.protocol.client import BadRequest, Client

    root = Path(tempfile.mkdtemp(prefix="ry-"))
    (root / "temp").mkdir(mode=0o700)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(f"ipc://{root}/temp/control.sock")

    def answer() -> None:
        if router.poll(10_000):
            identity, _ = router.recv_multipart()
            router.send_multipart(
                [identity, b'{"reply":"error","code":"bad_request","message":"unknown op","id":""}']
            )

    peer = threading.Thread(target=answer)
    peer.start()
    try:
        with Client(root, timeout=20) as client:
            started = time.monotonic()
            with pytest.raises(BadRequest, match="unknown op"):
                client.status()
            assert time.monotonic() - started < 5
    finally:
        peer.join(timeout=15)
        router.close(linger=0)
        ctx.term()
        shutil.rmtree(root, ignore_errors=True)


def test_a_failed_handshake_is_not_a_dead_daemon_and_a_refused_key_says_so() -> None:
    """The link watch: a disconnect counts as a death only after the link was up; a Curve
    refusal is its own verdict (it used to read as "the daemon went away")."""
    from runyard.protocol.link import LinkFailure, LinkWatch

    watch = LinkWatch()
    assert watch.feed(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32) is None
    assert watch.feed(zmq.EVENT_DISCONNECTED) is None  # never up: nothing died
    assert watch.handshake_failed
    assert watch.feed(zmq.EVENT_HANDSHAKE_SUCCEEDED) is None
    assert not watch.handshake_failed
    assert watch.feed(zmq.EVENT_DISCONNECTED) is LinkFailure.DIED
    assert watch.feed(zmq.EVENT_DISCONNECTED) is None  # said once
    assert LinkWatch().feed(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400) is LinkFailure.REFUSED


def _reply_then_die(endpoint: str, ready: threading.Event) -> None:
    """A daemon that answers one request and is gone at once."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    ready.set()
    if router.poll(5000):
        identity, payload = router.recv_multipart()
        reply = msgspec.structs.replace(hello_reply(), id=decode_request(payload).id)
        router.send_multipart([identity, encode(reply)])
    router.close(linger=1000)  # the reply leaves, then the connection drops
    ctx.term()


async def test_a_reply_sent_just_before_the_daemon_dies_is_read_not_called_a_death(
    tmp_path: Path,
) -> None:
    """The dead-daemon watch sees the reply and the drop at about the same moment: the reply
    wins (a shutdown's reply, then the daemon exits), in both clients, every time."""
    for i in range(60):
        endpoint = f"ipc://{tmp_path}/c{i}"
        ready = threading.Event()
        peer = threading.Thread(target=_reply_then_die, args=(endpoint, ready), daemon=True)
        peer.start()
        assert ready.wait(5)
        if i % 2:
            with Client(endpoint=endpoint, events_endpoint=endpoint + "e", timeout=5) as c:
                assert c.hello().pid == 1
        else:
            async with AsyncClient(
                endpoint=endpoint, events_endpoint=endpoint + "e", timeout=5
            ) as ac:
                assert (await ac.hello()).pid == 1
        peer.join(5)


def test_heartbeats_go_where_a_peer_can_vanish_with_its_connection_open(tmp_path: Path) -> None:
    """tcp (a host can vanish) and a --host relay's sockets (heartbeats run end to end to the
    box's daemon) heartbeat; a daemon's own ipc socket does not: a dead daemon's end closes by
    itself, and each PING woke the idle daemon's zmq I/O thread (issue 16)."""
    eps = endpoints_for(tmp_path / "tree")
    prepare_socket_dir(eps)
    assert heartbeats_for("tcp://127.0.0.1:5555")
    assert not heartbeats_for(eps.control) and not heartbeats_for(eps.events)
    (eps.directory / RELAY_MARK).touch()
    assert heartbeats_for(eps.control)
    assert not heartbeats_for("inproc://control")
    # no directory to hold a mark (the current one is not looked at)
    assert not heartbeats_for("ipc://control.sock") and not heartbeats_for("ipc://@abstract")
