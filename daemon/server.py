"""The control plane: a ROUTER for requests and an XPUB for events, on ipc sockets.

With ``[daemon] tcp = "HOST:PORT"`` a second ROUTER and XPUB listen on tcp://HOST:PORT (control)
and tcp://HOST:PORT+1 (events), CurveZMQ only: the sockets are Curve servers with the daemon's
key pair, and a ZAP authenticator lets in only the client public keys found (at start) in
``curve_authorized_dir``. The same handlers serve both routers; events go out on both XPUBs.

The sockets are plain zmq sockets read by the event loop itself (``LoopSocket``, loop_socket.py
says why not zmq.asyncio): the callback that reads a status request (or hello, stats, a logs
tail, a signal: ``handlers.INLINE``) answers it at once, with no task. Slow operations (stop
with wait, restart, reload, ensure, du) run as their own tasks, so a status request is never
stuck behind them. Every frame is checked before it is trusted: wrong frame count, oversized,
undecodable or of an unknown op gets an ErrorReply (or is dropped when it cannot even be
addressed), and reading goes on. The XPUB tells us which topics have subscribers, so log
events are built only when someone follows that log.

Every request that changes something is recorded in the audit trail once: by the action itself
when it records itself (an ensure, a run, a replay: runtime/ops/audit_action.py), else here, in
``_dispatch`` (handlers/audited.py says what each records), with who asked: the daemon's uid (the ipc sockets
sit in a 0700 directory, so only their owner or root can connect), the name the client gave in
``hello`` on the same connection, and for a CurveZMQ client the authorized key file it proved
it holds (the ZAP User-Id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import zmq
import zmq.asyncio

from runyard.protocol import messages as m
from runyard.protocol.endpoints import Endpoints, prepare_socket_dir
from runyard.runtime.core.errors import InvariantBroken, RunyardError, ShuttingDown, UnknownService
from runyard.runtime.ops.audit_action import request_scope

from .handlers import HANDLERS, INLINE, Context, HandlerError
from .handlers.audited import AUDITED, describe
from .loop_socket import LoopSocket
from .tcp_control import TcpListener, tcp_listener

if TYPE_CHECKING:
    from .tcp_auth import NamingAuthenticator

__all__ = ["ControlServer", "TcpListener", "error_reply", "peer_of", "tcp_listener"]


_encoder = msgspec.json.Encoder()
_ERROR_CODES = frozenset(m.ErrorCode)


class _JustId(msgspec.Struct):
    id: str = ""


_id_decoder = msgspec.json.Decoder(_JustId)
#: Per peer: replies queued for it, requests read ahead from it (zmq high-water marks).
REPLY_QUEUE = 32
REQUEST_QUEUE = 32
#: Client names remembered per connection (from hello), at most this many.
MAX_KNOWN_CLIENTS = 1024


def error_reply(exc: Exception) -> m.ErrorReply:
    """The one answer to what a handler raised: a typed refusal, or ``internal`` for a bug."""
    match exc:
        case HandlerError() if exc.code in _ERROR_CODES:
            return m.ErrorReply(code=m.ErrorCode(exc.code), message=exc.message)
        case UnknownService():
            return m.ErrorReply(code=m.ErrorCode.NOT_FOUND, message=str(exc))
        case ShuttingDown():  # queued behind shutdown
            return m.ErrorReply(code=m.ErrorCode.CONFLICT, message=str(exc))
        # A code the protocol lacks, a broken invariant: RunyardErrors, but bugs, not refusals.
        case HandlerError() | InvariantBroken():
            pass
        case RunyardError():  # refused with a reason (bad config, engine not installed, ...)
            return m.ErrorReply(code=m.ErrorCode.FAILED, message=str(exc))
    return m.ErrorReply(code=m.ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}"[:300])


def peer_of(frame: zmq.Frame, via: str) -> dict[str, Any]:
    """Who sent ``frame``, for the audit trail, from what libzmq tells about its connection.

    Over ipc, libzmq (built with SO_PEERCRED, as on Linux) reports the connecting process's
    credentials in the ``Peer-Address`` property as ``localhost:UID:GID:PID``: the real uid
    (root's 0, say) and pid. Without them, all that is known is that only the socket owner's
    uid or root could connect (the socket's directory is 0700): ``socket_owner_uid``. Over TCP
    there is no uid at all, only the peer's IP address (and the CurveZMQ key, recorded by the
    caller).
    """
    address = ""
    with contextlib.suppress(zmq.ZMQError, UnicodeDecodeError):
        address = frame.get("Peer-Address") or ""
    if via == "tcp":
        return {"address": address} if address else {}
    parts = address.rsplit(":", 3)
    if len(parts) == 4 and all(x.isdigit() for x in parts[1:]):
        return {"uid": int(parts[1]), "pid": int(parts[3])}
    return {"socket_owner_uid": os.getuid()}


def _readable_id(payload: bytes) -> str:
    """The request id of a frame that did not decode as a request, when it can be read, so
    the client can match the error to its request (an unknown op from a newer client)."""
    try:
        return _id_decoder.decode(payload).id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return ""


class ControlServer:
    def __init__(
        self,
        endpoints: Endpoints,
        ctx: Context,
        log: logging.Logger,
        tcp: TcpListener | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.ctx = ctx
        self.log = log
        self.tcp = tcp
        # An asyncio context for the ZAP authenticator; our own sockets on it are plain ones.
        self.zctx = zmq.asyncio.Context()
        self.router: zmq.Socket[Any] | None = None
        self.pub: zmq.Socket[Any] | None = None
        self.tcp_router: zmq.Socket[Any] | None = None
        self.tcp_pub: zmq.Socket[Any] | None = None
        self.auth: NamingAuthenticator | None = None
        #: The routers, then the XPUBs, each read by the loop (made in bind, read from start).
        self.links: list[LoopSocket] = []
        self.publishers: list[LoopSocket] = []
        self._subscriptions: Counter[bytes] = Counter()
        #: Told each new subscription's prefix (main starts the disk watch on the first
        #: one that covers topic ``du``).
        self.on_subscribe: Callable[[bytes], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Replies a peer could not take (gone, or not reading): counted, never waited for.
        self.replies_dropped = 0
        #: (router, identity) -> the client name it sent in hello.
        self._clients: OrderedDict[tuple[int, bytes], str] = OrderedDict()

    @property
    def routers(self) -> list[zmq.Socket[Any]]:
        return [s for s in (self.router, self.tcp_router) if s is not None]

    @property
    def pubs(self) -> list[zmq.Socket[Any]]:
        return [s for s in (self.pub, self.tcp_pub) if s is not None]

    def _make_router(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = zmq.Socket(self.zctx, zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A frame over the limit is refused by libzmq from its header, before a byte of its
        # body is buffered: the peer is disconnected (it sees no reply, only a timeout).
        sock.setsockopt(zmq.MAXMSGSIZE, m.MAX_MESSAGE_BYTES)
        # Small queues per peer, both ways: a peer that sends without reading costs at most
        # REPLY_QUEUE replies here, and what it sends beyond REQUEST_QUEUE waits in its own
        # process (zmq stops reading its connection) instead of ours.
        sock.setsockopt(zmq.SNDHWM, REPLY_QUEUE)
        sock.setsockopt(zmq.RCVHWM, REQUEST_QUEUE)
        # Mandatory: a reply that cannot be queued (peer gone, or its queue full) is an error
        # we count, not a silent drop, and never a wait (replies are sent NOBLOCK).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        return sock

    def _make_pub(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = zmq.Socket(self.zctx, zmq.XPUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        return sock

    def bind(self) -> None:
        prepare_socket_dir(self.endpoints)
        for path in (self.endpoints.control, self.endpoints.events):
            # A socket file left by a killed daemon would make bind fail; the lock in temp/
            # guarantees no other daemon of this tree owns it.
            sock_file = path.removeprefix("ipc://")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_file)
        self.router = self._make_router()
        self.router.bind(self.endpoints.control)
        self.pub = self._make_pub()
        self.pub.bind(self.endpoints.events)
        if self.tcp is not None:
            try:
                self._bind_tcp(self.tcp)
            except BaseException:
                self._close_sockets()
                raise
        self.publishers = [
            LoopSocket(s, self._on_subscription, self._died, self.log) for s in self.pubs
        ]
        self.links = [LoopSocket(s, self._on_request, self._died, self.log) for s in self.routers]
        self.links += self.publishers
        self.ctx.supervisor.bus.attach(self._send_event, self._wants)

    def _bind_tcp(self, tcp: TcpListener) -> None:
        """The Curve ROUTER and XPUB; the authenticator answers ZAP before either can accept.

        Only sockets with a security mechanism ask ZAP: the ipc sockets (NULL, no domain) never do.
        """
        from .tcp_auth import NamingAuthenticator  # zmq.auth: only with [daemon] tcp

        self.auth = NamingAuthenticator(self.zctx, tcp.key_names, self.log.getChild("zap"))
        self.auth.start()
        assert self.auth.zap_socket is not None
        self.auth.zap_socket.setsockopt(zmq.LINGER, 0)
        self.auth.configure_curve(domain="*", location=str(tcp.authorized_dir))
        self.tcp_router = self._make_router()
        self.tcp_pub = self._make_pub()
        for sock, url in ((self.tcp_router, tcp.control), (self.tcp_pub, tcp.events)):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, tcp.secret_key)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, tcp.public_key)
            if ":" in tcp.host:
                sock.setsockopt(zmq.IPV6, 1)
            try:
                sock.bind(url)
            except zmq.ZMQError as exc:
                raise RunyardError(f"daemon.tcp: cannot listen on {url}: {exc}") from None
        if not tcp.authorized_keys:
            self.log.warning(
                "no *.key certificate in %s: no TCP client can connect", tcp.authorized_dir
            )
        self.log.info(
            "CurveZMQ control on %s, events on %s, %d authorized key(s) from %s",
            tcp.control,
            tcp.events,
            tcp.authorized_keys,
            tcp.authorized_dir,
        )

    def start(self) -> None:
        for link in self.links:
            link.start()

    def _died(self, exc: BaseException) -> None:
        """What reads a socket must never stop on its own: a daemon that no longer answers is
        worse than one that exits. Exit without stopping the services; the next daemon adopts
        them."""
        self.log.critical(
            "control loop died: %r; exiting so a new daemon takes over", exc, exc_info=exc
        )
        self.ctx.shutdown_requested.set()

    # --- events ------------------------------------------------------------------------------

    def _wants(self, topic: str) -> bool:
        if not topic.startswith("log."):
            return True
        key = topic.encode()
        return any(n > 0 and key.startswith(prefix) for prefix, n in self._subscriptions.items())

    def _send_event(self, topic: str, event: m.Event) -> None:
        # XPUB never blocks: at the high-water mark it drops, and that subscriber's seq check
        # sees the gap and backfills. An error is a socket closed under us (shutting down).
        frames = [topic.encode(), _encoder.encode(event)]
        for link in self.publishers:
            with contextlib.suppress(zmq.ZMQError):
                link.send(frames)

    def _on_subscription(self, link: LoopSocket, parts: list[zmq.Frame]) -> None:
        # One count per (socket, subscriber): both XPUBs add to the same counter.
        frame = parts[0].bytes
        if not frame:
            return
        if frame[0] == 1:
            self._subscriptions[frame[1:]] += 1
            if self.on_subscribe is not None:
                self.on_subscribe(frame[1:])
        elif frame[0] == 0:
            self._subscriptions[frame[1:]] -= 1
            if self._subscriptions[frame[1:]] <= 0:
                del self._subscriptions[frame[1:]]

    # --- requests ----------------------------------------------------------------------------

    def _on_request(self, link: LoopSocket, parts: list[zmq.Frame]) -> None:
        """One message read from a router: answered here (INLINE), or by a task of its own."""
        if len(parts) != 2:
            # Not what a DEALER sends: answer on the identity if there is one.
            if parts:
                self._send(
                    link, parts[0].bytes, _error(m.ErrorCode.BAD_REQUEST, "expected one frame")
                )
            return
        identity, payload = parts[0].bytes, parts[1].buffer
        if len(payload) > m.MAX_MESSAGE_BYTES:
            self._send(link, identity, _error(m.ErrorCode.TOO_LARGE, "message too large"))
            return
        try:
            req = m.decode_request(payload)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            reply = _error(m.ErrorCode.BAD_REQUEST, str(exc)[:300])
            reply.id = _readable_id(payload)
            self._send(link, identity, reply)
            return
        # Who asked matters for the audit trail only: read it only for what is recorded.
        actor = self._actor(link, identity, parts[-1]) if type(req) in AUDITED else None
        inline = INLINE.get(type(req))
        if inline is not None and actor is None:  # nothing to record, no scope to record in
            self._answer(link, identity, req, self._refused_or(inline, req), None, False)
            return
        if inline is not None:
            with request_scope(actor) as scope:
                reply = self._refused_or(inline, req)
            self._answer(link, identity, req, reply, actor, scope.recorded)
            return
        task = asyncio.get_running_loop().create_task(self._dispatch(link, identity, req, actor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _actor(self, link: LoopSocket, identity: bytes, frame: zmq.Frame) -> dict[str, Any]:
        """uid and pid (ipc, from SO_PEERCRED) or address and key (tcp): see peer_of."""
        curve = link.sock is self.tcp_router
        actor = peer_of(frame, "tcp" if curve else "ipc")
        client = self._clients.get((id(link), identity))
        if client:
            actor["client"] = client
        actor["via"] = "tcp" if curve else "ipc"
        if curve:
            with contextlib.suppress(zmq.ZMQError, UnicodeDecodeError):
                if key := frame.get("User-Id"):
                    actor["key"] = key
        return actor

    def _remember_client(self, link: LoopSocket, identity: bytes, name: str) -> None:
        key = (id(link), identity)
        self._clients[key] = name[:100]
        self._clients.move_to_end(key)
        while len(self._clients) > MAX_KNOWN_CLIENTS:
            self._clients.popitem(last=False)

    async def _dispatch(
        self, link: LoopSocket, identity: bytes, req: m.Request, actor: dict[str, Any] | None
    ) -> None:
        # Read by an action that records itself in this request's context (an ensure, a seal in
        # a worker thread): it names this actor, and tells the scope it wrote the entry.
        with request_scope(actor) as scope:
            try:
                reply = await HANDLERS[type(req)](self.ctx, req)
            except Exception as exc:
                reply = self._refusal(req, exc)
        self._answer(link, identity, req, reply, actor, scope.recorded)

    def _refused_or(
        self, handler: Callable[[Context, m.Request], m.Reply], req: m.Request
    ) -> m.Reply:
        try:
            return handler(self.ctx, req)
        except Exception as exc:
            return self._refusal(req, exc)

    def _refusal(self, req: m.Request, exc: Exception) -> m.Reply:
        """The typed error reply of what a handler raised (error_reply); a bug is logged."""
        reply = error_reply(exc)
        if reply.code == m.ErrorCode.INTERNAL:
            self.log.error("internal error handling %s", type(req).__name__, exc_info=exc)
        return reply

    def _answer(
        self,
        link: LoopSocket,
        identity: bytes,
        req: m.Request,
        reply: m.Reply,
        actor: dict[str, Any] | None,
        recorded: bool,
    ) -> None:
        """After the handler: remember a hello's client name, audit, reply."""
        if isinstance(req, m.Hello) and not isinstance(reply, m.ErrorReply) and req.client:
            self._remember_client(link, identity, req.client)
        if actor is not None and self.ctx.audit is not None and not recorded:
            entry = describe(req, reply)
            if entry is not None:
                action, target, result, detail = entry
                self.ctx.audit.submit(
                    action, target=target, result=result, detail=detail, actor=actor
                )
        reply.id = req.id
        self._send(link, identity, reply)

    def _send(self, link: LoopSocket, identity: bytes, reply: m.Reply) -> None:
        try:
            # Never waits: a peer whose reply queue is full (it sends and does not read) or
            # that is gone loses this reply, and the daemon's memory stays bounded.
            link.send([identity, _encoder.encode(reply)])
        except zmq.ZMQError as exc:
            self.replies_dropped += 1
            if self.replies_dropped % 10_000 == 1:
                self.log.warning(
                    "reply dropped (%s): a client that does not read, or is gone; %d so far",
                    exc,
                    self.replies_dropped,
                )

    async def close(self) -> None:
        for link in self.links:
            link.stop()
        for task in self._tasks:
            task.cancel()
        self._close_sockets()
        # No socket file outlives the daemon: a client then knows at once that nobody listens.
        for endpoint in (self.endpoints.control, self.endpoints.events):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(endpoint.removeprefix("ipc://"))

    def _close_sockets(self) -> None:
        for sock in (*self.routers, *self.pubs):
            sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.zctx.term()


def _error(code: m.ErrorCode, message: str) -> m.ErrorReply:
    return m.ErrorReply(code=code, message=message)
