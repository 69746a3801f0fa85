"""The control plane: a ROUTER for requests and an XPUB for events, on ipc sockets.

Every frame is checked before it is trusted: wrong frame count, oversized, undecodable or of an
unknown op gets an ErrorReply (or is dropped when it cannot even be addressed), and the loop
goes on. Slow operations (stop with wait, restart, reload, ensure, du) run as their own tasks so
a status request is never stuck behind them. The XPUB tells us which topics have subscribers,
so log events are built only when someone follows that log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter

import msgspec
import zmq
import zmq.asyncio

from protocol import messages as m
from protocol.endpoints import Endpoints, prepare_socket_dir

from .handlers import HANDLERS, INLINE, Context, HandlerError
from .supervisor import NotFound

__all__ = ["ControlServer"]

_encoder = msgspec.json.Encoder()


class ControlServer:
    def __init__(self, endpoints: Endpoints, ctx: Context, log: logging.Logger) -> None:
        self.endpoints = endpoints
        self.ctx = ctx
        self.log = log
        self.zctx = zmq.asyncio.Context()
        self.router: zmq.asyncio.Socket | None = None
        self.pub: zmq.asyncio.Socket | None = None
        self._subscriptions: Counter[bytes] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._sub_task: asyncio.Task[None] | None = None

    def bind(self) -> None:
        prepare_socket_dir(self.endpoints)
        for path in (self.endpoints.control, self.endpoints.events):
            # A socket file left by a killed daemon would make bind fail; the lock in temp/
            # guarantees no other daemon of this tree owns it.
            sock_file = path.removeprefix("ipc://")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock_file)
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, m.MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.bind(self.endpoints.control)
        self.pub = self.zctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 10_000)
        self.pub.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.pub.bind(self.endpoints.events)
        self.ctx.supervisor.bus.attach(self._send_event, self._wants)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._serve())
        self._sub_task = loop.create_task(self._track_subscriptions())

    # --- events ------------------------------------------------------------------------------

    def _wants(self, topic: str) -> bool:
        if not topic.startswith("log."):
            return True
        key = topic.encode()
        return any(n > 0 and key.startswith(prefix) for prefix, n in self._subscriptions.items())

    def _send_event(self, topic: str, event: m.Event) -> None:
        assert self.pub is not None
        # XPUB never blocks: at the high-water mark it drops, and that subscriber's seq check
        # sees the gap and backfills. The returned future is already done.
        self.pub.send_multipart([topic.encode(), _encoder.encode(event)])

    async def _track_subscriptions(self) -> None:
        assert self.pub is not None
        while True:
            frame = await self.pub.recv()
            if not frame:
                continue
            if frame[0] == 1:
                self._subscriptions[frame[1:]] += 1
            elif frame[0] == 0:
                self._subscriptions[frame[1:]] -= 1
                if self._subscriptions[frame[1:]] <= 0:
                    del self._subscriptions[frame[1:]]

    # --- requests ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        assert self.router is not None
        while True:
            try:
                frames = await self.router.recv_multipart(copy=True)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    return
                self.log.warning("control socket: %s", exc)
                continue
            if len(frames) != 2:
                # Not what a DEALER sends: answer on the identity if there is one.
                if len(frames) >= 1:
                    await self._reply(
                        frames[0], m.ErrorReply(code="bad_request", message="expected one frame")
                    )
                continue
            identity, payload = frames
            if len(payload) > m.MAX_MESSAGE_BYTES:
                await self._reply(
                    identity, m.ErrorReply(code="too_large", message="message too large")
                )
                continue
            try:
                req = m.decode_request(payload)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                await self._reply(
                    identity, m.ErrorReply(code="bad_request", message=str(exc)[:300])
                )
                continue
            if type(req) in INLINE:
                await self._dispatch(identity, req)
            else:
                task = asyncio.get_running_loop().create_task(self._dispatch(identity, req))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, identity: bytes, req: m.Request) -> None:
        handler = HANDLERS[type(req)]
        try:
            reply = await handler(self.ctx, req)
        except HandlerError as exc:
            reply = m.ErrorReply(code=exc.code, message=exc.message)
        except NotFound as exc:
            reply = m.ErrorReply(code="not_found", message=str(exc))
        except Exception as exc:
            self.log.exception("internal error handling %s", type(req).__name__)
            reply = m.ErrorReply(code="internal", message=f"{type(exc).__name__}: {exc}"[:300])
        reply.id = req.id
        await self._reply(identity, reply)

    async def _reply(self, identity: bytes, reply: m.Reply) -> None:
        assert self.router is not None
        try:
            # ROUTER drops what it cannot route (a client gone): it never blocks here.
            await self.router.send_multipart([identity, _encoder.encode(reply)])
        except zmq.ZMQError as exc:
            self.log.debug("reply dropped: %s", exc)

    async def close(self) -> None:
        for task in (self._loop_task, self._sub_task, *self._tasks):
            if task is not None:
                task.cancel()
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(linger=0)
        self.zctx.term()
