"""``runyard bridge``: the box's end of ``runyard --host``. It relays the daemon's control and
events sockets over its own stdin/stdout, which ``ssh -T BOX runyard bridge`` carries.

    stdin  --OPEN/DATA/CLOSE/PING-->  bridge --ipc--> daemon control.sock / events.sock
    stdout <--GREETING, HELLO, DAEMON, DATA/CLOSE/PONG--

Frames and the reasons for byte streams rather than messages: ``protocol/relay_frames.py``.
The bridge opens no port and holds no secret: it reaches only the sockets of its tree, as the
user ssh logged in as, so the box's own permissions (the 0700 socket directory) decide who may
drive the daemon, exactly as for a local ``runyard``. It ends when stdin ends (ssh went away), or
when nothing comes for IDLE_LIMIT (the relay pings every 2 s, so the link is dead).

Nothing but frames may reach stdout: fd 1 is moved aside at start and fd 1 then points at
stderr, so a stray print (a warning, a library) cannot corrupt the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from runyard.protocol.endpoints import endpoints_for
from runyard.protocol.errors import ProtocolError
from runyard.protocol.relay_frames import (
    BRIDGE_VERSION,
    CHANNEL_CONTROL,
    CHANNEL_EVENTS,
    GREETING,
    MAX_PAYLOAD,
    FrameReader,
    Kind,
    frame,
)

__all__ = ["run_bridge"]

#: Seconds between looks at whether the daemon's control socket is there.
PRESENCE_POLL = 0.25
#: Seconds without a byte from the relay (which pings every 2 s) after which the link counts as
#: dead: a laptop that vanished without closing TCP leaves no bridge running for long.
IDLE_LIMIT = 30.0
#: Bytes queued towards one daemon socket before the stream is dropped (zmq reads eagerly, so
#: only a stuck daemon gets there; dropping beats buffering without end).
MAX_QUEUED = 8 * 1024 * 1024


def run_bridge(root: Path, version: str) -> int:
    """Serve one ssh session on stdin/stdout until stdin ends; the exit status."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # from here on, fd 1 is stderr: only _Bridge writes to the real stdout
    return asyncio.run(_Bridge(root, version).serve(0, out_fd))


class _Bridge:
    def __init__(self, root: Path, version: str) -> None:
        self.root = root
        self.version = version
        self.out: asyncio.StreamWriter | None = None
        #: stream id -> the writer towards the daemon (None while connecting) and bytes waiting.
        self.streams: dict[int, asyncio.StreamWriter | None] = {}
        self.pending: dict[int, bytearray] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def _socket(self, channel: bytes) -> str:
        eps = endpoints_for(self.root)
        return (eps.control if channel == CHANNEL_CONTROL else eps.events).removeprefix("ipc://")

    def send(self, kind: Kind, stream: int = 0, payload: bytes = b"") -> None:
        assert self.out is not None
        self.out.write(frame(kind, stream, payload))

    async def serve(self, in_fd: int, out_fd: int) -> int:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_PAYLOAD * 2)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", 0)
        )
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", 0)
        )
        self.out = asyncio.StreamWriter(transport, protocol, None, loop)
        present = os.path.exists(self._socket(CHANNEL_CONTROL))
        hello = {
            "bridge": BRIDGE_VERSION,
            "version": self.version,
            "root": str(self.root),
            "tree": self.root.is_dir(),
        }
        self.out.write(GREETING)
        self.send(Kind.HELLO, 0, json.dumps(hello).encode())
        self.send(Kind.DAEMON, 0, b"1" if present else b"0")
        watcher = asyncio.create_task(self._watch_presence(present))
        try:
            return await self._read(reader)
        finally:
            watcher.cancel()
            for task in list(self.tasks):
                task.cancel()
            for w in self.streams.values():
                if w is not None:
                    w.transport.abort()
            transport.close()

    async def _read(self, reader: asyncio.StreamReader) -> int:
        frames = FrameReader()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(MAX_PAYLOAD), IDLE_LIMIT)
            except TimeoutError:  # the relay pings every 2 s: this link is dead, not idle
                print(f"runyard bridge: nothing heard for {IDLE_LIMIT:g}s, ending", file=sys.stderr)
                return 1
            if not data:
                return 0
            try:
                batch = frames.feed(data)
            except ProtocolError as exc:
                print(f"runyard bridge: {exc}", file=sys.stderr)
                return 1
            for kind, stream, payload in batch:
                self._dispatch(kind, stream, payload)
            assert self.out is not None
            await self.out.drain()

    def _dispatch(self, kind: Kind, stream: int, payload: bytes) -> None:
        if kind == Kind.PING:
            self.send(Kind.PONG, 0, payload)
        elif kind == Kind.OPEN and stream and stream not in self.streams:
            self.streams[stream] = None
            self.pending[stream] = bytearray()
            self._spawn(self._pump(stream, payload))
        elif kind == Kind.DATA and stream in self.streams:
            writer = self.streams[stream]
            if writer is None:
                self.pending[stream] += payload
            else:
                writer.write(payload)
                if writer.transport.get_write_buffer_size() > MAX_QUEUED:
                    self._close(stream, tell=True)
        elif kind == Kind.CLOSE and stream in self.streams:
            self._close(stream, tell=False)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _close(self, stream: int, *, tell: bool) -> None:
        writer = self.streams.pop(stream, None)
        self.pending.pop(stream, None)
        if writer is not None:
            writer.transport.abort()
        if tell:
            self.send(Kind.CLOSE, stream)

    async def _pump(self, stream: int, channel: bytes) -> None:
        """Connect the daemon's socket for ``stream``, then copy what it says into DATA frames."""
        if channel not in (CHANNEL_CONTROL, CHANNEL_EVENTS):
            self._close(stream, tell=True)
            return
        try:
            reader, writer = await asyncio.open_unix_connection(self._socket(channel))
        except OSError:  # no daemon (any more): the client sees its connection end
            if stream in self.streams:
                self._close(stream, tell=True)
            return
        if stream not in self.streams:  # closed by the relay while connecting
            writer.transport.abort()
            return
        self.streams[stream] = writer
        writer.write(bytes(self.pending.pop(stream, b"")))
        assert self.out is not None
        with contextlib.suppress(OSError):
            while data := await reader.read(MAX_PAYLOAD):
                if stream not in self.streams:
                    return
                self.send(Kind.DATA, stream, data)
                await self.out.drain()
        if stream in self.streams:
            self._close(stream, tell=True)

    async def _watch_presence(self, present: bool) -> None:
        while True:
            await asyncio.sleep(PRESENCE_POLL)
            now = os.path.exists(self._socket(CHANNEL_CONTROL))
            if now != present:
                present = now
                self.send(Kind.DAEMON, 0, b"1" if present else b"0")
