"""What ``EventStream`` and ``AsyncEventStream`` share: lifecycle, topics, snapshot and counters.

    events    daemon PUB --[topic, Event JSON]--> EventStream SUB (zmq prefix subscriptions)

A stream is NEW until it has subscribed, connected and taken its snapshot, then OPEN, then
CLOSED for good. The gap bookkeeping lives in ``gaps.StreamCore``; the I/O in the sync and async
subclasses.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import zmq

from .errors import ClientError
from .gaps import StreamCore
from .messages import StatusReply

__all__ = ["StreamBase", "StreamState", "subscribe", "topics_of"]


class StreamState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def subscribe(sub: zmq.Socket[Any], topics: Sequence[str]) -> None:
    sub.setsockopt(zmq.LINGER, 0)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())


def topics_of(topics: Sequence[str] | str) -> tuple[str, ...]:
    # A bare string is one prefix, not a sequence of one-letter prefixes.
    return (topics,) if isinstance(topics, str) else tuple(topics)


class StreamBase:
    # Set by the subclass: the Client or AsyncClient that keeps this stream in its ``_streams``,
    # and the SUB socket (sync or asyncio) while the stream is open.
    _client: Any
    _sub: Any

    def __init__(self, topics: Sequence[str] | str, timeout: float | None) -> None:
        self.topics = topics_of(topics)
        #: How long one step of iteration waits for an event (None: forever).
        self.timeout = timeout
        self.state = StreamState.NEW
        self._core: StreamCore | None = None

    def _require_core(self) -> StreamCore:
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

    def close(self) -> None:
        self.state = StreamState.CLOSED
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None
        self._client._streams.discard(self)
