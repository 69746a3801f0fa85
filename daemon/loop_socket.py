"""A zmq socket served straight from the asyncio loop: a reader on its FD, no zmq.asyncio.

Why not zmq.asyncio: there every receive is a Future resolved from a callback that wakes the
awaiting task, and every send another Future; for a status request that layer cost 110-150 us,
more than libzmq's own round trip (~35 us here). Here one reader callback takes every message
queued (received NOBLOCK) and hands each to ``on_message``, which may answer inside
the same callback with a NOBLOCK ``send``: a fast request costs no Future, no Task, no extra
turn of the loop.

ZMQ_FD is edge-triggered. It becomes readable when the socket's state *may* have changed, and
any operation on the socket (a send, a receive, reading ZMQ_EVENTS) can consume that edge while
messages still wait in the socket. Three rules follow, each a lost request if broken:

* a drain reads until EAGAIN, or until ZMQ_EVENTS says nothing waits: only then does libzmq
  signal the next arrival anew;
* a drain stops after ``BATCH`` messages (so a flood of requests cannot starve the loop) and
  schedules the next round itself (``call_soon``): no edge would come for what is left;
* a send made outside a drain (a reply from a task, an event) reads ZMQ_EVENTS afterwards and
  schedules a drain when a message waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import zmq

__all__ = ["BATCH", "LoopSocket"]

#: Messages taken in one callback before the loop gets to run anything else.
BATCH = 64
# Plain ints: zmq's flags are enum.Flag members, and each ``|`` or ``&`` of them is a Python
# call (pyzmq's send_multipart and recv_multipart make several per message).
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class LoopSocket:
    """``sock`` read by the running loop; ``on_message`` gets this LoopSocket (to answer on)
    and each multipart message, as frames (their properties say who sent it)."""

    def __init__(
        self,
        sock: zmq.Socket[Any],
        on_message: Callable[[LoopSocket, list[zmq.Frame]], None],
        on_failure: Callable[[BaseException], None],
        log: logging.Logger,
    ) -> None:
        self.sock = sock
        self.on_message = on_message
        #: Told when ``on_message`` raised: the socket is no longer read (see ``_drain``).
        self.on_failure = on_failure
        self.log = log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._draining = False
        self._scheduled = False
        #: Rounds of ``_drain`` run (reader callbacks and rescheduled rounds): tests count them.
        self.rounds = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = self.sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._schedule()  # what came before the reader was added raised no edge for it

    def stop(self) -> None:
        """Read no more (before the socket closes). Idempotent."""
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._loop, self._fd = None, -1

    def send(self, frames: Sequence[bytes]) -> None:
        """Queue ``frames`` without waiting; raises zmq.ZMQError (zmq.Again: the peer's queue
        is full; EHOSTUNREACH: a ROUTER's peer is gone)."""
        send = self.sock.send
        try:
            for frame in frames[:-1]:
                send(frame, _MORE_NOBLOCK)
            send(frames[-1], _NOBLOCK)
        finally:
            if not self._draining:
                self._recheck()

    def _recheck(self) -> None:
        if not self._scheduled and self._waiting():
            self._schedule()

    def _waiting(self) -> bool:
        """A message waits (reading ZMQ_EVENTS processes the socket's pending commands, so
        the next arrival raises a new edge); False once stopped or closed."""
        if self._loop is None:
            return False
        try:
            return bool(self.sock.getsockopt(_EVENTS) & _POLLIN)
        except zmq.ZMQError:
            return False  # closed under us: nothing more to read

    def _schedule(self) -> None:
        if self._loop is not None and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _recv(self) -> list[zmq.Frame]:
        """One whole message (its frames arrive together: no EAGAIN after the first)."""
        recv = self.sock.recv
        frame = recv(_NOBLOCK, copy=False)
        parts = [frame]
        while frame.more:
            frame = recv(_NOBLOCK, copy=False)
            parts.append(frame)
        return parts

    def _drain(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return
        self.rounds += 1
        self._draining = True
        try:
            for _ in range(BATCH):
                try:
                    parts = self._recv()
                except zmq.Again:
                    return  # empty: the next arrival raises a new edge
                except zmq.ZMQError as exc:
                    if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                        self.stop()
                        return
                    self.log.warning("socket: %s", exc)
                    continue
                try:
                    self.on_message(self, parts)
                except Exception as exc:
                    # A bug above us, not a bad request (those get error replies): a daemon that
                    # no longer answers is worse than one that exits, so say so and stop.
                    self.stop()
                    self.on_failure(exc)
                    return
                if not self._waiting():  # as good as reading to EAGAIN, without raising
                    return
            self._schedule()  # a full batch: more may wait, and no edge will say so
        finally:
            self._draining = False
