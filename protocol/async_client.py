"""``AsyncClient`` and its ``AsyncEventStream``: the asyncio twin of ``sync_client``.

An ``AsyncClient`` owns one zmq Context and destroys it on ``close()``. It is for one event loop,
where concurrent requests are fine: one reader task hands each reply to its waiter by id, and
ends every waiter at once when the socket's monitor says the daemon died or refused this client
(``link``). What it shares with ``Client`` lives in ``transport`` (control channel), ``link``,
``streams`` and ``gaps``.
"""

from __future__ import annotations

import asyncio
import signal as signal_module
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from .async_events import AsyncEventStream
from .errors import ClientError, DaemonUnreachable, ProtocolError
from .link import MONITORED_EVENTS, LinkFailure, LinkWatch
from .messages import (
    ActionReply,
    Du,
    DuReply,
    Ensure,
    EnsureReply,
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
    loose,
    no_reply,
    require_socket_file,
    resolve_endpoints,
    run_request,
    signal_name,
)

__all__ = ["AsyncClient", "AsyncEventStream"]  # the stream lives in async_events.py


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
        self._ctx = zmq.asyncio.Context()
        for option, value in curve.items():  # defaults for every socket of this context
            self._ctx.setsockopt(option, value)
        self._dealer: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        #: Each request in flight, by id: the future its reply goes to, and the request.
        self._waiters: dict[str, tuple[asyncio.Future[bytes], Request]] = {}
        self._link = LinkWatch()
        self._ids = RequestIds()
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
        require_socket_file(self.endpoint)
        if self._dealer is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # As in Client: a monitor (and heartbeats over tcp), so that a waiting request ends
            # within 2 s of the daemon's death (link.py), not at its timeout.
            if heartbeats_for(self.endpoint):
                sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
                sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * HEARTBEAT_MS)
            monitor = sock.get_monitor_socket(MONITORED_EVENTS)
            sock.connect(self.endpoint)
            self._dealer, self._link = sock, LinkWatch()
            reader = self._read_replies(sock, monitor)
            self._reader = asyncio.get_running_loop().create_task(reader)
        return self._dealer

    def _drop_control(self) -> asyncio.Task[None] | None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        if self._dealer is not None:
            self._dealer.close(linger=0)  # the monitor is closed by the reader as it ends
            self._dealer = None
        return reader

    async def _read_replies(self, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> None:
        """Hand each reply to the request waiting for its id; drop the rest (stale replies).
        A link failure ends every request waiting then (a drop with none waiting is no news)."""
        poller = zmq.asyncio.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while True:
                # poll, then recv without blocking: cancelling a poll can never lose a message.
                ready = dict(await poller.poll())
                if sock in ready:
                    await self._route_replies(sock)
                if monitor in ready:
                    await self._watch_link(sock, monitor)
        except zmq.ZMQError:
            return  # the socket was closed under us
        finally:
            monitor.close(linger=0)

    async def _watch_link(self, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> None:
        while True:
            try:
                frames = await monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(frames)
            failure = self._link.feed(event["event"], event["value"])
            if failure is None:
                continue
            await self._route_replies(sock)  # a reply that came before the drop still counts
            for waiter, req in self._waiters.values():
                if not waiter.done():
                    if failure is LinkFailure.REFUSED:
                        waiter.set_exception(key_refused(self.endpoint))
                    else:
                        waiter.set_exception(daemon_died(self.endpoint, req))

    async def _route_replies(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            try:
                data = await sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            routed = loose(data)
            found = None
            if routed is not None:
                found = self._waiters.get(routed.id)
                if found is None and routed.id == "" and len(self._waiters) == 1:
                    # An error the daemon could not address: with one request in
                    # flight it is that request's answer.
                    (found,) = self._waiters.values()
            if found is not None and not found[0].done():
                found[0].set_result(data)

    async def request(self, req: Request, timeout: float | None = None) -> Reply:
        """Send ``req`` (with a fresh id) and return its reply; raise RemoteError for an error."""
        req, data = self._ids.stamp(req)
        sock = self._control()
        waited = self.timeout if timeout is None else timeout
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters[req.id] = (waiter, req)
        try:
            await sock.send(data, zmq.NOBLOCK)
            raw = await asyncio.wait_for(waiter, waited)
        except (zmq.Again, TimeoutError, DaemonUnreachable) as exc:
            del self._waiters[req.id]
            handshake_failed = self._link.handshake_failed
            # Start afresh only when nobody else waits on this socket; otherwise their replies
            # would be lost, and a late reply to this request is dropped by id anyway.
            if not self._waiters:
                self._drop_control()
            if isinstance(exc, DaemonUnreachable):  # the link failed (_watch_link)
                raise exc from None
            raise no_reply(self.endpoint, waited, handshake_failed=handshake_failed) from None
        except BaseException:
            self._waiters.pop(req.id, None)
            raise
        del self._waiters[req.id]
        reply = interpret(raw, req.id, self.endpoint, sole=True)
        if reply is None:
            raise ProtocolError(f"cannot decode the reply from {self.endpoint}")
        return reply

    async def hello(self, *, timeout: float | None = None) -> HelloReply:
        return expect(await self.request(Hello(client=self.client_name), timeout), HelloReply)

    async def status(
        self, services: Iterable[str] = (), *, timeout: float | None = None
    ) -> StatusReply:
        return expect(await self.request(Status(services=list(services)), timeout), StatusReply)

    async def start(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        req = Start(services=list(services), all=all)
        return expect(await self.request(req, timeout), ActionReply)

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
        return expect(await self.request(req, timeout), ActionReply)

    async def restart(
        self, services: Iterable[str] = (), *, all: bool = False, timeout: float | None = None
    ) -> ActionReply:
        """``timeout`` defaults to at least SLOW_ACTION_TIMEOUT: a restart waits for the stop."""
        timeout = max(self.timeout, SLOW_ACTION_TIMEOUT) if timeout is None else timeout
        req = Restart(services=list(services), all=all)
        return expect(await self.request(req, timeout), ActionReply)

    async def signal(
        self, service: str, sig: str | int | signal_module.Signals, *, timeout: float | None = None
    ) -> ActionReply:
        req = Signal(service=service, signal=signal_name(sig))
        return expect(await self.request(req, timeout), ActionReply)

    async def reload(self, *, timeout: float | None = None) -> ActionReply:
        return expect(await self.request(Reload(), timeout), ActionReply)

    async def logs_tail(
        self,
        service: str,
        n: int = 100,
        after_seq: int | None = None,
        *,
        before_seq: int | None = None,
        timeout: float | None = None,
    ) -> LogsReply:
        req = LogsTail(service=service, n=n, after_seq=after_seq, before_seq=before_seq)
        return expect(await self.request(req, timeout), LogsReply)

    async def stats(
        self, services: list[str] | None = None, *, timeout: float | None = None
    ) -> StatsReply:
        """The last minutes of CPU/RSS samples of ``services`` (None: every service)."""
        return expect(await self.request(Stats(services=services or []), timeout), StatsReply)

    async def du(self, *, timeout: float | None = None) -> DuReply:
        return expect(await self.request(Du(), timeout), DuReply)

    async def ensure(
        self,
        name: str,
        version_spec: str = "latest",
        catalog: str | None = None,
        timeout: float = 300.0,
    ) -> EnsureReply:
        req = Ensure(name=name, version_spec=version_spec, catalog=catalog)
        return expect(await self.request(req, timeout), EnsureReply)

    async def shutdown(self, *, timeout: float | None = None) -> ActionReply:
        return expect(await self.request(Shutdown(), timeout), ActionReply)

    async def run(
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
        return expect(
            await self.request(req, run_timeout + 30 if timeout is None else timeout), RunReply
        )

    async def runs_list(
        self,
        engine: str | None = None,
        *,
        include_rejected: bool = True,
        timeout: float | None = None,
    ) -> RunsReply:
        req = RunsList(engine=engine, include_rejected=include_rejected)
        return expect(await self.request(req, timeout), RunsReply)

    async def runs_show(self, run_id: str, *, timeout: float | None = None) -> RunShowReply:
        return expect(await self.request(RunsShow(run_id=run_id), timeout), RunShowReply)

    async def verify(
        self, run_dir: str | Path, pubkey: str | Path | None = None, *, timeout: float = 120.0
    ) -> VerifyReply:
        req = VerifyRun(run_dir=str(run_dir), pubkey=str(pubkey) if pubkey else None)
        return expect(await self.request(req, timeout), VerifyReply)

    async def replay(
        self, run_dir: str | Path, *, run_timeout: float = 600.0, timeout: float | None = None
    ) -> ReplayReply:
        req = ReplayRun(run_dir=str(run_dir), timeout=run_timeout)
        return expect(
            await self.request(req, run_timeout + 30 if timeout is None else timeout), ReplayReply
        )

    def events(
        self, topics: Sequence[str] | str = ("",), *, timeout: float | None = None
    ) -> AsyncEventStream:
        """A stream of ``topics`` (prefixes); it opens on ``async with`` or ``await``."""
        return AsyncEventStream(self, topics, timeout)
