"""``AsyncEventStream``: the asyncio twin of ``EventStream`` (sync_client.py), opened by
``AsyncClient.events()``. Apart from the client so that each module reads in one sitting; it
needs from the client only what ``StreamOwner`` lists (no import back)."""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import zmq
import zmq.asyncio

from .errors import ClientError
from .gaps import StreamCore
from .messages import (
    Event,
    StatusReply,
)
from .streams import StreamBase, StreamState, subscribe
from .transport import (
    no_connection,
    remaining_ms,
    require_socket_file,
)

__all__ = ["AsyncEventStream", "StreamOwner"]


class StreamOwner(Protocol):
    """What a stream needs from its AsyncClient."""

    events_endpoint: str
    timeout: float
    _ctx: zmq.asyncio.Context
    _streams: set[Any]

    def _require_open(self) -> None: ...

    async def status(self) -> StatusReply: ...

    async def request(self, req: Any, timeout: float | None = None) -> Any: ...


class AsyncEventStream(StreamBase):
    """The asyncio twin of EventStream: ``async with client.events() as s: async for e in s``.

    ``stream = await client.events()`` opens it too; close it with ``close()`` from the task
    that reads it (closing a socket cancels the reads pending on it).
    """

    def __init__(
        self, client: StreamOwner, topics: Sequence[str] | str, timeout: float | None
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
        require_socket_file(client.events_endpoint)
        sub = client._ctx.socket(zmq.SUB)
        try:
            subscribe(sub, self.topics)
            monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
            try:
                sub.connect(client.events_endpoint)
                if not await monitor.poll(math.ceil(client.timeout * 1000), zmq.POLLIN):
                    raise no_connection(client.events_endpoint, client.timeout)
            finally:
                sub.disable_monitor()
                monitor.close(linger=0)
            self._core = StreamCore(await client.status())
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
            if not await self._sub.poll(remaining_ms(deadline), zmq.POLLIN):
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

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
