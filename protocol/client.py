"""The client library: what the TUI and scripts use to talk to a daemon (sync and asyncio).

    control   Client DEALER --[Request JSON]--> daemon ROUTER --[Reply JSON, same id]--> DEALER
    events    daemon PUB --[topic, Event JSON]--> EventStream SUB (zmq prefix subscriptions)

This module owns no code: it is the public surface, re-exported from one module per concept.

    errors        the exception tree (drawn there) and the ErrorReply code -> class map
    transport     control channel: endpoints, request ids, reading and checking a reply
    gaps          GapTracker and the I/O-free backfill bookkeeping of an event stream
    streams       what both event streams share: lifecycle, topics, snapshot, counters
    sync_client   Client and EventStream
    async_client  AsyncClient and AsyncEventStream
"""

from __future__ import annotations

from .async_client import AsyncClient, AsyncEventStream
from .errors import (
    REMOTE_ERRORS,
    BadRequest,
    ClientError,
    Conflict,
    DaemonUnreachable,
    InternalError,
    NotFound,
    OperationFailed,
    ProtocolError,
    RemoteError,
    TooLarge,
    UnsupportedVersion,
    remote_error,
)
from .gaps import BACKFILL_MAX_LINES, Gap, GapTracker, Verdict, parse_event
from .streams import StreamState
from .sync_client import Client, EventStream
from .transport import SLOW_ACTION_TIMEOUT

__all__ = [
    "BACKFILL_MAX_LINES",
    "REMOTE_ERRORS",
    "SLOW_ACTION_TIMEOUT",
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
