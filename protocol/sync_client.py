"""``Client`` and its ``EventStream``: the synchronous client of one daemon.

A ``Client`` owns one zmq Context (one I/O thread) and destroys it on ``close()``, so no socket
outlives it. It is for one thread. What it shares with ``AsyncClient`` lives in ``transport``
(control channel), ``streams`` and ``gaps`` (event streams).
"""

from __future__ import annotations

import math
import signal as signal_module
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import zmq
from zmq.utils.monitor import parse_monitor_message

from .errors import ClientError
from .gaps import StreamCore
from .link import MONITORED_EVENTS, LinkFailure, LinkWatch
from .messages import (
    ActionReply,
    Du,
    DuReply,
    Ensure,
    EnsureReply,
    Event,
    Hello,
    HelloReply,
    LogsReply,
    LogsTail,
    Reload,
    ReplayReply,
    ReplayRun,
    Reply,
    Request,
    Restart,
    RunReply,
    RunShowReply,
    RunsList,
    RunsReply,
    RunsShow,
    Shutdown,
    Signal,
    Start,
    Stats,
    StatsReply,
    Status,
    StatusReply,
    Stop,
    VerifyReply,
    VerifyRun,
)
from .streams import StreamBase, StreamState, subscribe
from .transport import (
    HEARTBEAT_MS,
    SLOW_ACTION_TIMEOUT,
    RequestIds,
    curve_options,
    daemon_died,
    expect,
    heartbeats_for,
    interpret,
    key_refused,
    no_connection,
    no_reply,
    remaining_ms,
    require_socket_file,
    resolve_endpoints,
    run_request,
    signal_name,
)

__all__ = ["Client", "EventStream"]

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


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
        curve_server_key: str | bytes | Path | None = None,
        curve_client_keys: str | Path | tuple[bytes, bytes] | None = None,
    ) -> None:
        self.root, self.endpoint, self.events_endpoint = resolve_endpoints(
            root, endpoint, events_endpoint
        )
        curve = curve_options(
            (self.endpoint, self.events_endpoint), curve_server_key, curve_client_keys
        )
        self.timeout = timeout
        self.client_name = client_name
        self._ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        for option, value in curve.items():  # defaults for every socket of this context
            self._ctx.setsockopt(option, value)
        self._dealer: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        #: Waits on both for every request of this DEALER (made with it, not per request).
        self._poller = zmq.Poller()
        self._link = LinkWatch()
        self._ids = RequestIds()
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
        require_socket_file(self.endpoint)
        if self._dealer is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # A daemon that dies closes the connection (ipc, tcp); one whose host vanishes
            # stops answering heartbeats (tcp only: heartbeats_for). Either way the monitor
            # reports a disconnect, so a request stops waiting within 2 s of the death, not at
            # its timeout (link.py).
            if heartbeats_for(self.endpoint):
                sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
            self._monitor = sock.get_monitor_socket(MONITORED_EVENTS)
            self._link = LinkWatch()
            sock.connect(self.endpoint)
            self._dealer = sock
            self._poller = zmq.Poller()
            self._poller.register(sock, zmq.POLLIN)
            self._poller.register(self._monitor, zmq.POLLIN)
        return self._dealer

    def _drop_control(self) -> None:
        if self._dealer is not None:
            if self._monitor is not None:
                self._dealer.disable_monitor()
                self._monitor.close(linger=0)
                self._monitor = None
            self._dealer.close(linger=0)
            self._dealer = None

    def _link_failure(self) -> LinkFailure | None:
        """What the monitor reported since the last look (drains it); the worst of it."""
        worst = None
        # ZMQ_EVENTS, not poll(0): the same answer without a syscall (once per request); ints,
        # not zmq's enum.Flag members, whose ``&`` is a Python call.
        while self._monitor is not None and self._monitor.getsockopt(_EVENTS) & _POLLIN:
            event = parse_monitor_message(self._monitor.recv_multipart())
            failure = self._link.feed(event["event"], event["value"])
            if failure is LinkFailure.REFUSED or worst is None:
                worst = failure
        return worst

    def request(self, req: Request, timeout: float | None = None) -> Reply:
        """Send ``req`` (with a fresh id) and return its reply; raise RemoteError for an error."""
        req, data = self._ids.stamp(req)
        sock = self._control()
        waited = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + waited
        if self._link_failure() is LinkFailure.REFUSED:  # libzmq gave up reconnecting
            self._drop_control()
            sock = self._control()
        # (a drop before this request, a daemon restarted, is no news)
        try:
            sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self._drop_control()
            raise no_reply(self.endpoint, waited) from None
        failure: LinkFailure | None = None
        while True:
            ms = remaining_ms(deadline)
            ready = dict(self._poller.poll(ms)) if ms else {}
            if sock in ready:
                # One request at a time per socket (a timeout replaces the socket): an id-less
                # error can only be this request's.
                reply = interpret(sock.recv(), req.id, self.endpoint, sole=True)
                if reply is not None:
                    return reply
            elif ready:
                failure = self._link_failure() or failure
            if ready and (failure is None or sock.poll(0, zmq.POLLIN)):
                continue  # nothing failed yet, or a reply came before the drop: read it
            handshake_failed = self._link.handshake_failed
            self._drop_control()
            if failure is LinkFailure.REFUSED:
                raise key_refused(self.endpoint)
            if failure is LinkFailure.DIED:
                raise daemon_died(self.endpoint, req)
            raise no_reply(self.endpoint, waited, handshake_failed=handshake_failed)

    def hello(self, *, timeout: float | None = None) -> HelloReply:
        return expect(self.request(Hello(client=self.client_name), timeout), HelloReply)

    def status(self, services: Iterable[str] = (), *, timeout: float | None = None) -> StatusReply:
        return expect(self.request(Status(services=list(services)), timeout), StatusReply)

    def start(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        req = Start(services=list(services), all=all)
        return expect(self.request(req, timeout), ActionReply)

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
        return expect(self.request(req, timeout), ActionReply)

    def restart(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT: a restart waits for the stop."""
        timeout = max(self.timeout, SLOW_ACTION_TIMEOUT) if timeout is None else timeout
        req = Restart(services=list(services), all=all)
        return expect(self.request(req, timeout), ActionReply)

    def signal(
        self, service: str, sig: str | int | signal_module.Signals, *, timeout: float | None = None
    ) -> ActionReply:
        req = Signal(service=service, signal=signal_name(sig))
        return expect(self.request(req, timeout), ActionReply)

    def reload(self, *, timeout: float | None = None) -> ActionReply:
        return expect(self.request(Reload(), timeout), ActionReply)

    def logs_tail(
        self,
        service: str,
        n: int = 100,
        after_seq: int | None = None,
        *,
        before_seq: int | None = None,
        timeout: float | None = None,
    ) -> LogsReply:
        req = LogsTail(service=service, n=n, after_seq=after_seq, before_seq=before_seq)
        return expect(self.request(req, timeout), LogsReply)

    def stats(
        self, services: list[str] | None = None, *, timeout: float | None = None
    ) -> StatsReply:
        """The last minutes of CPU/RSS samples of ``services`` (None: every service)."""
        return expect(self.request(Stats(services=services or []), timeout), StatsReply)

    def du(self, *, timeout: float | None = None) -> DuReply:
        return expect(self.request(Du(), timeout), DuReply)

    def ensure(
        self,
        name: str,
        version_spec: str = "latest",
        catalog: str | None = None,
        timeout: float = 300.0,
    ) -> EnsureReply:
        req = Ensure(name=name, version_spec=version_spec, catalog=catalog)
        return expect(self.request(req, timeout), EnsureReply)

    def shutdown(self, *, timeout: float | None = None) -> ActionReply:
        return expect(self.request(Shutdown(), timeout), ActionReply)

    def run(
        self,
        engine: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        project_id: str = "default",
        from_runs: Sequence[str] = (),
        sign_key: str | Path | None = None,
        run_timeout: float = 600.0,
        timeout: float | None = None,
    ) -> RunReply:
        """Execute ``engine`` in the daemon and seal the run; a rejection is ``status``
        "rejected" with its reason in ``result``."""
        req = run_request(
            engine, inputs, parameters, context, project_id, from_runs, sign_key, run_timeout
        )
        return expect(self.request(req, run_timeout + 30 if timeout is None else timeout), RunReply)

    def runs_list(
        self,
        engine: str | None = None,
        *,
        include_rejected: bool = True,
        timeout: float | None = None,
    ) -> RunsReply:
        req = RunsList(engine=engine, include_rejected=include_rejected)
        return expect(self.request(req, timeout), RunsReply)

    def runs_show(self, run_id: str, *, timeout: float | None = None) -> RunShowReply:
        return expect(self.request(RunsShow(run_id=run_id), timeout), RunShowReply)

    def verify(
        self, run_dir: str | Path, pubkey: str | Path | None = None, *, timeout: float = 120.0
    ) -> VerifyReply:
        req = VerifyRun(run_dir=str(run_dir), pubkey=str(pubkey) if pubkey else None)
        return expect(self.request(req, timeout), VerifyReply)

    def replay(
        self, run_dir: str | Path, *, run_timeout: float = 600.0, timeout: float | None = None
    ) -> ReplayReply:
        req = ReplayRun(run_dir=str(run_dir), timeout=run_timeout)
        return expect(
            self.request(req, run_timeout + 30 if timeout is None else timeout), ReplayReply
        )

    def events(
        self, topics: Sequence[str] | str = ("",), *, timeout: float | None = None
    ) -> EventStream:
        """Subscribe to ``topics`` (prefixes), take the snapshot, return the open stream."""
        stream = EventStream(self, topics, timeout)
        stream._open()
        self._streams.add(stream)
        return stream


class EventStream(StreamBase):
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
        require_socket_file(client.events_endpoint)
        sub = client._ctx.socket(zmq.SUB)
        try:
            subscribe(sub, self.topics)
            # Wait for the connection, so that the subscription reaches the daemon before the
            # snapshot is taken: what is published after it then reaches us.
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            try:
                sub.connect(client.events_endpoint)
                if not monitor.poll(math.ceil(client.timeout * 1000), zmq.POLLIN):
                    raise no_connection(client.events_endpoint, client.timeout)
            finally:
                sub.disable_monitor()
                monitor.close(linger=0)
            self._core = StreamCore(client.status())
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
            if not self._sub.poll(remaining_ms(deadline), zmq.POLLIN):
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

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
