"""The client library: what the TUI and scripts use to talk to a daemon (sync and asyncio).

    control   Client DEALER --[Request JSON]--> daemon ROUTER --[Reply JSON, same id]--> DEALER
    events    daemon PUB --[topic, Event JSON]--> EventStream SUB (zmq prefix subscriptions)

Errors, all one line:

    RunyardError
    └── ClientError                 anything this library refuses or cannot do
        ├── DaemonUnreachable       no socket file, or no reply before the deadline
        ├── ProtocolError           the daemon answered something this client cannot read
        └── RemoteError             an ErrorReply; ``code`` and ``message`` as the daemon sent them
            ├── BadRequest          bad_request
            ├── UnsupportedVersion  unsupported_version
            ├── NotFound            not_found
            ├── Conflict            conflict
            ├── TooLarge            too_large
            ├── OperationFailed     failed
            └── InternalError       internal
    (an unknown code, from a newer daemon, is a plain RemoteError)

Requests get a fresh ``id``; a reply with another id (left over from a request that timed out) is
discarded. After a timeout the DEALER is closed with LINGER 0 and made anew, so a request queued
for a dead daemon is never delivered to the next one that starts.

An event stream subscribes first, waits until its SUB is connected, then takes a ``status``
snapshot; ``GapTracker`` then drops what the snapshot already holds and reports gaps, which are
backfilled (``logs.tail`` for log events, ``status`` for state events) before the live event.
Log topics are numbered by line (a log event's seq is its last line's): a log event follows on
when its first line is the one after the last line seen.

Each client owns one zmq Context (one I/O thread) and destroys it on ``close()``, so no socket
outlives its client. A ``Client`` is for one thread; an ``AsyncClient`` for one event loop,
where concurrent requests are fine (one reader task hands each reply to its waiter by id).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import math
import os
import signal as signal_module
import time
import uuid
from collections import deque
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import msgspec
import zmq
import zmq.asyncio

from runtime.errors import RunyardError
from runtime.tree import resolve_root

from .endpoints import endpoints_for
from .messages import (
    ActionReply,
    Du,
    DuReply,
    Ensure,
    EnsureReply,
    ErrorReply,
    Event,
    Hello,
    HelloReply,
    LogEvent,
    LogsReply,
    LogsTail,
    Reload,
    Reply,
    Request,
    Restart,
    Shutdown,
    Signal,
    Start,
    StateEvent,
    Status,
    StatusReply,
    Stop,
    decode_event,
    decode_reply,
    encode,
)

__all__ = [
    "REMOTE_ERRORS",
    "AsyncClient",
    "AsyncEventStream",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "DaemonUnreachable",
    "EventStream",
    "Gap",
    "GapTracker",
    "InternalError",
    "NotFound",
    "OperationFailed",
    "ProtocolError",
    "RemoteError",
    "StreamState",
    "TooLarge",
    "UnsupportedVersion",
    "Verdict",
    "parse_event",
    "remote_error",
]

#: Stopping waits for the service's stop timeout; a 5 s default would give up too early.
SLOW_ACTION_TIMEOUT = 60.0
#: The most log lines one gap backfill asks for (keeps the reply well under MAX_MESSAGE_BYTES).
BACKFILL_MAX_LINES = 1000

# --- errors ------------------------------------------------------------------------------------


class ClientError(RunyardError):
    """Base of the errors the client library raises."""


class DaemonUnreachable(ClientError):
    """No daemon listens at the endpoint, or it did not answer before the deadline."""


class ProtocolError(ClientError):
    """The daemon's answer cannot be decoded, or is not the reply the request calls for."""


class RemoteError(ClientError):
    """The daemon refused or failed the request (an ErrorReply)."""

    #: The ErrorReply code this class stands for ("" on the base class).
    CODE = ""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class BadRequest(RemoteError):
    CODE = "bad_request"


class UnsupportedVersion(RemoteError):
    CODE = "unsupported_version"


class NotFound(RemoteError):
    CODE = "not_found"


class Conflict(RemoteError):
    CODE = "conflict"


class TooLarge(RemoteError):
    CODE = "too_large"


class OperationFailed(RemoteError):
    CODE = "failed"


class InternalError(RemoteError):
    CODE = "internal"


REMOTE_ERRORS: Mapping[str, type[RemoteError]] = {
    cls.CODE: cls
    for cls in (
        BadRequest,
        UnsupportedVersion,
        NotFound,
        Conflict,
        TooLarge,
        OperationFailed,
        InternalError,
    )
}


def remote_error(code: str, message: str) -> RemoteError:
    return REMOTE_ERRORS.get(code, RemoteError)(code, message)


# --- gap tracking (pure) -----------------------------------------------------------------------


class Verdict(enum.Enum):
    DROP = "drop"  # at or below what the client already has (snapshot or an earlier event)
    OK = "ok"  # the next one of its topic


@dataclass(frozen=True)
class Gap:
    """Events ``first..last`` (inclusive) of ``topic`` never arrived."""

    topic: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class GapTracker:
    """The last seq seen per topic; says of each new (topic, seq) whether it is new and whole.

    Starts from a snapshot's ``seqs``; a topic the snapshot does not name starts at 0.
    """

    def __init__(self, seqs: Mapping[str, int] | None = None) -> None:
        self._last: dict[str, int] = dict(seqs or {})

    def last(self, topic: str) -> int:
        return self._last.get(topic, 0)

    def observe(self, topic: str, seq: int, first: int | None = None) -> Verdict | Gap:
        """An event that covers seqs ``first..seq``: a log event is numbered by its lines (its
        seq is its last line's), any other event covers its own seq alone."""
        first = seq if first is None else first
        last = self.last(topic)
        if seq <= last:
            return Verdict.DROP
        self._last[topic] = seq
        if first <= last + 1:
            return Verdict.OK
        return Gap(topic, last + 1, first - 1)

    def advance(self, topic: str, seq: int) -> None:
        """Everything up to ``seq`` is known (a fresher snapshot of the topic came in)."""
        self._last[topic] = max(self.last(topic), seq)


# --- what both clients share -------------------------------------------------------------------


class _LooseReply(msgspec.Struct):
    """Just enough of a reply to route it, or to read an error code this client does not know."""

    id: str = ""
    reply: str = ""
    code: str = ""
    message: str = ""


_loose_decoder = msgspec.json.Decoder(_LooseReply)
R = TypeVar("R", bound=Reply)


def _loose(data: bytes) -> _LooseReply | None:
    try:
        return _loose_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def _interpret(data: bytes, want_id: str, endpoint: str) -> Reply | None:
    """The reply to ``want_id`` in ``data``; None when ``data`` answers some other request."""
    try:
        reply = decode_reply(data)
    except msgspec.DecodeError as exc:
        loose = _loose(data)
        if loose is None or loose.id != want_id:
            return None
        if loose.reply == "error":
            raise remote_error(loose.code, loose.message) from None
        raise ProtocolError(f"cannot decode the reply from {endpoint}: {exc}") from None
    if reply.id != want_id:
        return None
    if isinstance(reply, ErrorReply):
        raise remote_error(reply.code, reply.message)
    return reply


def _expect(reply: Reply, kind: type[R]) -> R:
    if not isinstance(reply, kind):
        raise ProtocolError(f"expected a {kind.__name__}, the daemon sent a {type(reply).__name__}")
    return reply


class _Ids:
    """Request ids: a random prefix per client, then a counter (unique, cheap, readable in logs)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._count = itertools.count(1)

    def stamp(self, req: Request) -> tuple[Request, bytes]:
        req = msgspec.structs.replace(req, id=f"{self._prefix}-{next(self._count)}")
        return req, encode(req)


def _require_socket_file(endpoint: str) -> None:
    """Fail at once when an ipc endpoint has no socket file: nobody listens, no need to wait."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if path and not path.startswith("@") and not os.path.exists(path):
            raise DaemonUnreachable(
                f"no daemon at {endpoint} (no socket file): is the daemon running? (runyard up)"
            )


def _no_reply(endpoint: str, waited: float) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"no reply from {endpoint} within {waited:g}s: is the daemon running? (runyard up)"
    )


def _no_connection(endpoint: str, waited: float) -> DaemonUnreachable:
    return DaemonUnreachable(
        f"could not connect to {endpoint} within {waited:g}s: is the daemon running? (runyard up)"
    )


def _resolve_endpoints(
    root: str | os.PathLike[str] | None, endpoint: str | None, events_endpoint: str | None
) -> tuple[Path | None, str, str]:
    if endpoint is not None and events_endpoint is not None:
        return (Path(root).absolute() if root is not None else None), endpoint, events_endpoint
    tree_root = resolve_root(root)
    eps = endpoints_for(tree_root)
    return tree_root, endpoint or eps.control, events_endpoint or eps.events


def _signal_name(sig: str | int | signal_module.Signals) -> str:
    if isinstance(sig, signal_module.Signals):
        return sig.name.removeprefix("SIG")
    return str(sig)


def _remaining_ms(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


def _subscribe(sub: zmq.Socket[Any], topics: Sequence[str]) -> None:
    sub.setsockopt(zmq.LINGER, 0)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())


def _topics(topics: Sequence[str] | str) -> tuple[str, ...]:
    # A bare string is one prefix, not a sequence of one-letter prefixes.
    return (topics,) if isinstance(topics, str) else tuple(topics)


def parse_event(frames: Sequence[bytes]) -> Event | None:
    """The event in ``[topic, JSON]``; None when the frames are not a well-formed event."""
    if len(frames) != 2:
        return None
    try:
        event = decode_event(frames[1])
    except msgspec.DecodeError:
        return None
    if frames[0] != event.topic.encode():
        return None
    return event


class StreamState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class _StreamCore:
    """Snapshot, gap tracking and backfill bookkeeping of an event stream, free of I/O."""

    def __init__(self, snapshot: StatusReply) -> None:
        self.snapshot = snapshot
        self.tracker = GapTracker(snapshot.seqs)
        self.pending: deque[Event] = deque()
        self.malformed = 0
        self.gaps = 0
        self.unfilled = 0

    def take(self, frames: Sequence[bytes]) -> tuple[Event, Gap | None] | None:
        """(event, gap before it) to deliver, or None to skip the frames."""
        event = parse_event(frames)
        if event is None:
            self.malformed += 1
            return None
        first = event.seq
        if isinstance(event, LogEvent) and event.lines:
            first = event.lines[0].seq
        before = self.tracker.last(event.topic)
        verdict = self.tracker.observe(event.topic, event.seq, first)
        if verdict is Verdict.DROP:
            return None
        if isinstance(event, LogEvent) and first <= before:
            # Part of it is already known: keep only the new lines.
            lines = [ln for ln in event.lines if ln.seq > before]
            event = msgspec.structs.replace(event, lines=lines)
        if verdict is Verdict.OK:
            return event, None
        assert isinstance(verdict, Gap)
        self.gaps += 1
        return event, verdict

    @staticmethod
    def backfill_request(gap: Gap, live: Event) -> Request | None:
        if isinstance(live, LogEvent):
            n = min(gap.size, BACKFILL_MAX_LINES)
            return LogsTail(service=live.service, after_seq=gap.first - 1, n=n)
        if isinstance(live, StateEvent):
            return Status(services=[live.service.name])
        # du events carry a whole report; daemon events have no history to ask for.
        return None

    def fill(self, gap: Gap, live: Event, reply: Reply | None) -> None:
        """Queue what the backfill ``reply`` recovered, then (unless superseded) the live event."""
        if isinstance(live, LogEvent):
            upper = live.lines[0].seq if live.lines else live.seq + 1
            lines = []
            if isinstance(reply, LogsReply):
                lines = [ln for ln in reply.lines if gap.first <= ln.seq < upper]
            if len(lines) < gap.size:
                self.unfilled += 1
            if lines:
                self.pending.append(
                    LogEvent(
                        topic=live.topic,
                        seq=lines[-1].seq,
                        ts=lines[-1].ts,
                        service=live.service,
                        lines=lines,
                    )
                )
        elif isinstance(live, StateEvent):
            name = live.service.name
            fresh = None
            if isinstance(reply, StatusReply):
                fresh = next((s for s in reply.services if s.name == name), None)
            if fresh is None:
                self.unfilled += 1
            else:
                # The status was taken after the live event was published: it is at least as
                # new, so it replaces the live event, and events it covers are dropped.
                seq = max(reply.seqs.get(live.topic, 0), live.seq)
                self.tracker.advance(live.topic, seq)
                self.pending.append(
                    StateEvent(topic=live.topic, seq=seq, ts=time.time(), service=fresh)
                )
                return
        self.pending.append(live)


class _StreamBase:
    def __init__(self, topics: Sequence[str] | str, timeout: float | None) -> None:
        self.topics = _topics(topics)
        #: How long one step of iteration waits for an event (None: forever).
        self.timeout = timeout
        self.state = StreamState.NEW
        self._core: _StreamCore | None = None

    def _require_core(self) -> _StreamCore:
        if self.state is StreamState.CLOSED:
            raise ClientError("the event stream is closed")
        if self._core is None:
            raise ClientError("the event stream is not open yet")
        return self._core

    @property
    def snapshot(self) -> StatusReply:
        """The ``status`` taken after subscribing: the state every event builds on."""
        return self._require_core().snapshot

    @property
    def malformed(self) -> int:
        """Event frames skipped because they could not be decoded."""
        return self._core.malformed if self._core else 0

    @property
    def gaps(self) -> int:
        """Gaps seen in the per-topic sequence numbers."""
        return self._core.gaps if self._core else 0

    @property
    def unfilled(self) -> int:
        """Log or state gaps that the backfill could not (wholly) recover."""
        return self._core.unfilled if self._core else 0


# --- synchronous -------------------------------------------------------------------------------


class Client:
    """A synchronous client of one daemon. Not thread-safe: use one per thread."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        endpoint: str | None = None,
        events_endpoint: str | None = None,
        timeout: float = 5.0,
        client_name: str = "runyard-client",
    ) -> None:
        self.root, self.endpoint, self.events_endpoint = _resolve_endpoints(
            root, endpoint, events_endpoint
        )
        self.timeout = timeout
        self.client_name = client_name
        self._ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        self._dealer: zmq.Socket[Any] | None = None
        self._ids = _Ids()
        self._streams: set[EventStream] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket of this client (event streams included). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        self._drop_control()
        self._ctx.destroy(linger=0)

    def _require_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed")

    def _control(self) -> zmq.Socket[Any]:
        self._require_open()
        _require_socket_file(self.endpoint)
        if self._dealer is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._dealer = sock
        return self._dealer

    def _drop_control(self) -> None:
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None

    def request(self, req: Request, timeout: float | None = None) -> Reply:
        """Send ``req`` (with a fresh id) and return its reply; raise RemoteError for an error."""
        sock = self._control()
        req, data = self._ids.stamp(req)
        waited = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + waited
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self._drop_control()
            raise _no_reply(self.endpoint, waited) from None
        while True:
            ms = _remaining_ms(deadline)
            if not ms or not sock.poll(ms, zmq.POLLIN):
                self._drop_control()
                raise _no_reply(self.endpoint, waited)
            reply = _interpret(sock.recv(), req.id, self.endpoint)
            if reply is not None:
                return reply

    def hello(self, *, timeout: float | None = None) -> HelloReply:
        return _expect(self.request(Hello(client=self.client_name), timeout), HelloReply)

    def status(self, services: Iterable[str] = (), *, timeout: float | None = None) -> StatusReply:
        return _expect(self.request(Status(services=list(services)), timeout), StatusReply)

    def start(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        req = Start(services=list(services), all=all)
        return _expect(self.request(req, timeout), ActionReply)

    def stop(
        self,
        services: Iterable[str] = (),
        *,
        all: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT when waiting for the stop."""
        if timeout is None and wait:
            timeout = max(self.timeout, SLOW_ACTION_TIMEOUT)
        req = Stop(services=list(services), all=all, wait=wait)
        return _expect(self.request(req, timeout), ActionReply)

    def restart(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT: a restart waits for the stop."""
        timeout = max(self.timeout, SLOW_ACTION_TIMEOUT) if timeout is None else timeout
        req = Restart(services=list(services), all=all)
        return _expect(self.request(req, timeout), ActionReply)

    def signal(
        self, service: str, sig: str | int | signal_module.Signals, *, timeout: float | None = None
    ) -> ActionReply:
        req = Signal(service=service, signal=_signal_name(sig))
        return _expect(self.request(req, timeout), ActionReply)

    def reload(self, *, timeout: float | None = None) -> ActionReply:
        return _expect(self.request(Reload(), timeout), ActionReply)

    def logs_tail(
        self,
        service: str,
        n: int = 100,
        after_seq: int | None = None,
        *,
        timeout: float | None = None,
    ) -> LogsReply:
        req = LogsTail(service=service, n=n, after_seq=after_seq)
        return _expect(self.request(req, timeout), LogsReply)

    def du(self, *, timeout: float | None = None) -> DuReply:
        return _expect(self.request(Du(), timeout), DuReply)

    def ensure(
        self,
        name: str,
        version_spec: str = "latest",
        catalog: str | None = None,
        timeout: float = 300.0,
    ) -> EnsureReply:
        req = Ensure(name=name, version_spec=version_spec, catalog=catalog)
        return _expect(self.request(req, timeout), EnsureReply)

    def shutdown(self, *, timeout: float | None = None) -> ActionReply:
        return _expect(self.request(Shutdown(), timeout), ActionReply)

    def events(
        self, topics: Sequence[str] | str = ("",), *, timeout: float | None = None
    ) -> EventStream:
        """Subscribe to ``topics`` (prefixes), take the snapshot, return the open stream."""
        stream = EventStream(self, topics, timeout)
        stream._open()
        self._streams.add(stream)
        return stream


class EventStream(_StreamBase):
    """Live events after a snapshot, gaps backfilled. Iterate, or ``get(timeout)``.

    Iteration waits up to ``timeout`` per event (None: forever) and raises TimeoutError when
    none comes; ``get`` returns None instead. Ends (StopIteration) once closed.
    """

    def __init__(self, client: Client, topics: Sequence[str] | str, timeout: float | None) -> None:
        super().__init__(topics, timeout)
        self._client = client
        self._sub: zmq.Socket[Any] | None = None

    def _open(self) -> None:
        client = self._client
        client._require_open()
        _require_socket_file(client.events_endpoint)
        sub = client._ctx.socket(zmq.SUB)
        try:
            _subscribe(sub, self.topics)
            # Wait for the connection, so that the subscription reaches the daemon before the
            # snapshot is taken: what is published after it then reaches us.
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            try:
                sub.connect(client.events_endpoint)
                if not monitor.poll(math.ceil(client.timeout * 1000), zmq.POLLIN):
                    raise _no_connection(client.events_endpoint, client.timeout)
            finally:
                sub.disable_monitor()
                monitor.close(linger=0)
            self._core = _StreamCore(client.status())
        except BaseException:
            sub.close(linger=0)
            raise
        self._sub = sub
        self.state = StreamState.OPEN

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None when none came within ``timeout`` seconds (None: wait forever)."""
        core = self._require_core()
        assert self._sub is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not core.pending:
            if not self._sub.poll(_remaining_ms(deadline), zmq.POLLIN):
                return None
            step = core.take(self._sub.recv_multipart(zmq.NOBLOCK))
            if step is None:
                continue
            live, gap = step
            if gap is None:
                return live
            req = core.backfill_request(gap, live)
            reply = None
            if req is not None:
                try:
                    reply = self._client.request(req)
                except ClientError:
                    reply = None  # counted in .unfilled; the live event still goes out
            core.fill(gap, live, reply)
        return core.pending.popleft()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        if self.state is StreamState.CLOSED:
            raise StopIteration
        event = self.get(self.timeout)
        if event is None:
            raise TimeoutError(f"no event within {self.timeout:g}s")
        return event

    def close(self) -> None:
        self.state = StreamState.CLOSED
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        self._client._streams.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --- asyncio -----------------------------------------------------------------------------------


class AsyncClient:
    """The asyncio twin of Client. Use it from one event loop; concurrent requests are fine."""

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        endpoint: str | None = None,
        events_endpoint: str | None = None,
        timeout: float = 5.0,
        client_name: str = "runyard-client",
    ) -> None:
        self.root, self.endpoint, self.events_endpoint = _resolve_endpoints(
            root, endpoint, events_endpoint
        )
        self.timeout = timeout
        self.client_name = client_name
        self._ctx = zmq.asyncio.Context()
        self._dealer: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: dict[str, asyncio.Future[bytes]] = {}
        self._ids = _Ids()
        self._streams: set[AsyncEventStream] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.endpoint!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every socket of this client (event streams included). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        reader = self._drop_control()
        if reader is not None:
            await asyncio.wait([reader])
        self._ctx.destroy(linger=0)

    def _require_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed")

    def _control(self) -> zmq.asyncio.Socket:
        self._require_open()
        _require_socket_file(self.endpoint)
        if self._dealer is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            self._dealer = sock
            self._reader = asyncio.get_running_loop().create_task(self._read_replies(sock))
        return self._dealer

    def _drop_control(self) -> asyncio.Task[None] | None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None
        return reader

    async def _read_replies(self, sock: zmq.asyncio.Socket) -> None:
        """Hand each reply to the request waiting for its id; drop the rest (stale replies)."""
        try:
            while True:
                # poll, then recv without blocking: cancelling a poll can never lose a message.
                await sock.poll(None, zmq.POLLIN)
                while True:
                    try:
                        data = await sock.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    loose = _loose(data)
                    waiter = self._waiters.get(loose.id) if loose is not None else None
                    if waiter is not None and not waiter.done():
                        waiter.set_result(data)
        except zmq.ZMQError:
            return  # the socket was closed under us

    async def request(self, req: Request, timeout: float | None = None) -> Reply:
        """Send ``req`` (with a fresh id) and return its reply; raise RemoteError for an error."""
        sock = self._control()
        req, data = self._ids.stamp(req)
        waited = self.timeout if timeout is None else timeout
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[req.id] = waiter
        try:
            await sock.send(data, zmq.NOBLOCK)
            raw = await asyncio.wait_for(waiter, waited)
        except (zmq.Again, TimeoutError):
            del self._waiters[req.id]
            # Start afresh only when nobody else waits on this socket; otherwise their replies
            # would be lost, and a late reply to this request is dropped by id anyway.
            if not self._waiters:
                self._drop_control()
            raise _no_reply(self.endpoint, waited) from None
        except BaseException:
            self._waiters.pop(req.id, None)
            raise
        del self._waiters[req.id]
        reply = _interpret(raw, req.id, self.endpoint)
        if reply is None:
            raise ProtocolError(f"cannot decode the reply from {self.endpoint}")
        return reply

    async def hello(self, *, timeout: float | None = None) -> HelloReply:
        return _expect(await self.request(Hello(client=self.client_name), timeout), HelloReply)

    async def status(
        self, services: Iterable[str] = (), *, timeout: float | None = None
    ) -> StatusReply:
        return _expect(await self.request(Status(services=list(services)), timeout), StatusReply)

    async def start(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        req = Start(services=list(services), all=all)
        return _expect(await self.request(req, timeout), ActionReply)

    async def stop(
        self,
        services: Iterable[str] = (),
        *,
        all: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT when waiting for the stop."""
        if timeout is None and wait:
            timeout = max(self.timeout, SLOW_ACTION_TIMEOUT)
        req = Stop(services=list(services), all=all, wait=wait)
        return _expect(await self.request(req, timeout), ActionReply)

    async def restart(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT: a restart waits for the stop."""
        timeout = max(self.timeout, SLOW_ACTION_TIMEOUT) if timeout is None else timeout
        req = Restart(services=list(services), all=all)
        return _expect(await self.request(req, timeout), ActionReply)

    async def signal(
        self, service: str, sig: str | int | signal_module.Signals, *, timeout: float | None = None
    ) -> ActionReply:
        req = Signal(service=service, signal=_signal_name(sig))
        return _expect(await self.request(req, timeout), ActionReply)

    async def reload(self, *, timeout: float | None = None) -> ActionReply:
        return _expect(await self.request(Reload(), timeout), ActionReply)

    async def logs_tail(
        self,
        service: str,
        n: int = 100,
        after_seq: int | None = None,
        *,
        timeout: float | None = None,
    ) -> LogsReply:
        req = LogsTail(service=service, n=n, after_seq=after_seq)
        return _expect(await self.request(req, timeout), LogsReply)

    async def du(self, *, timeout: float | None = None) -> DuReply:
        return _expect(await self.request(Du(), timeout), DuReply)

    async def ensure(
        self,
        name: str,
        version_spec: str = "latest",
        catalog: str | None = None,
        timeout: float = 300.0,
    ) -> EnsureReply:
        req = Ensure(name=name, version_spec=version_spec, catalog=catalog)
        return _expect(await self.request(req, timeout), EnsureReply)

    async def shutdown(self, *, timeout: float | None = None) -> ActionReply:
        return _expect(await self.request(Shutdown(), timeout), ActionReply)

    def events(
        self, topics: Sequence[str] | str = ("",), *, timeout: float | None = None
    ) -> AsyncEventStream:
        """A stream of ``topics`` (prefixes); it opens on ``async with`` or ``await``."""
        return AsyncEventStream(self, topics, timeout)


class AsyncEventStream(_StreamBase):
    """The asyncio twin of EventStream: ``async with client.events() as s: async for e in s``.

    ``stream = await client.events()`` opens it too; close it with ``close()`` from the task
    that reads it (closing a socket cancels the reads pending on it).
    """

    def __init__(
        self, client: AsyncClient, topics: Sequence[str] | str, timeout: float | None
    ) -> None:
        super().__init__(topics, timeout)
        self._client = client
        self._sub: zmq.asyncio.Socket | None = None

    def __await__(self) -> Generator[Any, None, Self]:
        return self.open().__await__()

    async def open(self) -> Self:
        """Subscribe, wait for the connection, take the snapshot. Idempotent."""
        if self.state is StreamState.OPEN:
            return self
        if self.state is StreamState.CLOSED:
            raise ClientError("the event stream is closed")
        client = self._client
        client._require_open()
        _require_socket_file(client.events_endpoint)
        sub = client._ctx.socket(zmq.SUB)
        try:
            _subscribe(sub, self.topics)
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            try:
                sub.connect(client.events_endpoint)
                if not await monitor.poll(math.ceil(client.timeout * 1000), zmq.POLLIN):
                    raise _no_connection(client.events_endpoint, client.timeout)
            finally:
                sub.disable_monitor()
                monitor.close(linger=0)
            self._core = _StreamCore(await client.status())
        except BaseException:
            sub.close(linger=0)
            raise
        self._sub = sub
        self.state = StreamState.OPEN
        client._streams.add(self)
        return self

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None when none came within ``timeout`` seconds (None: wait forever)."""
        core = self._require_core()
        assert self._sub is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not core.pending:
            if not await self._sub.poll(_remaining_ms(deadline), zmq.POLLIN):
                return None
            step = core.take(await self._sub.recv_multipart(zmq.NOBLOCK))
            if step is None:
                continue
            live, gap = step
            if gap is None:
                return live
            req = core.backfill_request(gap, live)
            reply = None
            if req is not None:
                try:
                    reply = await self._client.request(req)
                except ClientError:
                    reply = None  # counted in .unfilled; the live event still goes out
            core.fill(gap, live, reply)
        return core.pending.popleft()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self.state is StreamState.CLOSED:
            raise StopAsyncIteration
        event = await self.get(self.timeout)
        if event is None:
            raise TimeoutError(f"no event within {self.timeout:g}s")
        return event

    def close(self) -> None:
        self.state = StreamState.CLOSED
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        self._client._streams.discard(self)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
