"""The frames ``runyard bridge`` and the ssh relay exchange over ssh's stdin/stdout, free of I/O.

    laptop: Client --ipc--> relay (ssh_relay) ==ssh -T BOX runyard bridge==> bridge --ipc--> daemon

The relay carries byte streams, not messages: each connection a client opens to the relay's
local control or events socket becomes one stream, and the bridge opens the same socket of the
box's daemon for it. ZMTP (and the ``hello`` protocol version check, heartbeats, Curve when
used) runs end to end between client and daemon, unchanged; the relay never reads a message.

Before any frame the bridge writes ``GREETING`` (one line), so that a remote shell that prints
something at login is skipped, and a box whose runyard has no bridge is told apart from a
broken one. A frame is a 9-byte header, then its payload:

    kind  u8    OPEN, DATA, CLOSE (a stream), HELLO, DAEMON, PING, PONG (the link, stream 0)
    stream u32  which connection (0: the link itself)
    length u32  payload bytes, at most MAX_PAYLOAD

    HELLO   bridge -> relay, first: JSON {"bridge": BRIDGE_VERSION, "version", "root", "tree"}
    DAEMON  bridge -> relay: b"1" the daemon's control socket is there, b"0" it is not
            (sent after HELLO and on every change, so the relay shows a socket only while the
            box has one: "no daemon" is as quick over ssh as it is on the box)
    OPEN    relay -> bridge: a new stream to the daemon's CHANNEL_CONTROL or CHANNEL_EVENTS
    DATA    either way: bytes of a stream
    CLOSE   either way: the stream ended (EOF, error, or the daemon's socket refused it)
    PING / PONG   the relay's keepalive; a link silent for long is dropped and made again
"""

from __future__ import annotations

import enum
import struct

from runyard.runtime.core.errors import ProtocolError

__all__ = [
    "BRIDGE_VERSION",
    "CHANNEL_CONTROL",
    "CHANNEL_EVENTS",
    "GREETING",
    "MAX_PAYLOAD",
    "Frame",
    "FrameReader",
    "Kind",
    "frame",
]

#: The version of this framing; HELLO carries it and the relay refuses another.
BRIDGE_VERSION = 1
GREETING = b"RUNYARD-BRIDGE 1\n"
#: What a relay reads looking for the greeting before it gives up (a chatty login shell).
GREETING_SEARCH = 64 * 1024
#: The largest payload of one frame; both sides send DATA in chunks of at most this.
MAX_PAYLOAD = 256 * 1024
CHANNEL_CONTROL = b"c"
CHANNEL_EVENTS = b"e"

_HEADER = struct.Struct("!BII")


class Kind(enum.IntEnum):
    HELLO = 1
    DAEMON = 2
    OPEN = 3
    DATA = 4
    CLOSE = 5
    PING = 6
    PONG = 7


Frame = tuple[Kind, int, bytes]


def frame(kind: Kind, stream: int = 0, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return _HEADER.pack(kind, stream, len(payload)) + payload


class FrameReader:
    """Bytes in, whole frames out (``feed`` returns those completed so far).

    ``greeting=True``: skip whatever comes before GREETING (the relay side); a peer that has
    not sent it within GREETING_SEARCH bytes is a ProtocolError naming what it said instead.
    Bytes that are not a frame of this version are a ProtocolError too (the link is dropped).
    """

    def __init__(self, *, greeting: bool = False) -> None:
        self._buf = bytearray()
        self._greeted = not greeting

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        if not self._greeted and not self._skip_greeting():
            return []
        frames: list[Frame] = []
        while len(self._buf) >= _HEADER.size:
            kind, stream, length = _HEADER.unpack_from(self._buf)
            if length > MAX_PAYLOAD:
                raise ProtocolError(f"a frame of {length} bytes is over {MAX_PAYLOAD}")
            try:
                k = Kind(kind)
            except ValueError:
                raise ProtocolError(f"unknown frame kind {kind}") from None
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((k, stream, bytes(self._buf[_HEADER.size : end])))
            del self._buf[:end]
        return frames

    def _skip_greeting(self) -> bool:
        at = self._buf.find(GREETING)
        if at < 0:
            if len(self._buf) > GREETING_SEARCH:
                said = bytes(self._buf[:80]).decode("utf-8", "replace").strip()
                raise ProtocolError(f"no bridge greeting; the box said: {said!r}")
            return False
        del self._buf[: at + len(GREETING)]
        self._greeted = True
        return True

    @property
    def skipped_text(self) -> str:
        """What came before the greeting so far (while still looking for it), for errors."""
        if self._greeted:
            return ""
        return bytes(self._buf[-200:]).decode("utf-8", "replace").strip()
