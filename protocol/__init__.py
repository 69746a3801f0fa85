"""The wire contract and the client library: what the TUI and scripts import to talk to a daemon.

    from runyard.protocol import Client

    with Client() as client:                      # root: RUNYARD_ROOT, ./runtime, ...
        client.start(["web"])
        with client.events(["state.", "log.web"]) as events:
            for event in events:                   # after events.snapshot, gaps backfilled
                ...

The message types live in ``protocol.messages``, the endpoints in ``protocol.endpoints``; only
the most used names are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        AsyncClient,
        AsyncEventStream,
        BadRequest,
        Client,
        ClientError,
        Conflict,
        DaemonUnreachable,
        EventStream,
        InternalError,
        NotFound,
        OperationFailed,
        ProtocolError,
        RemoteError,
        TooLarge,
        UnsupportedVersion,
    )

from .endpoints import endpoints_for
from .messages import (
    PROTOCOL_VERSION,
    ActionReply,
    DaemonEvent,
    DuEvent,
    Event,
    LogEvent,
    LogLine,
    LogsReply,
    Reply,
    Request,
    ServiceStatus,
    StateEvent,
    StatusReply,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ActionReply",
    "AsyncClient",
    "AsyncEventStream",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "DaemonEvent",
    "DaemonUnreachable",
    "DuEvent",
    "Event",
    "EventStream",
    "InternalError",
    "LogEvent",
    "LogLine",
    "LogsReply",
    "NotFound",
    "OperationFailed",
    "ProtocolError",
    "RemoteError",
    "Reply",
    "Request",
    "ServiceStatus",
    "StateEvent",
    "StatusReply",
    "TooLarge",
    "UnsupportedVersion",
    "endpoints_for",
]

#: Imported on first use (PEP 562): the daemon imports ``runyard.protocol.messages`` and
#: ``endpoints`` through this package and needs no client library (asyncio and sync clients,
#: their event streams) in its memory.
_FROM_CLIENT = frozenset(
    {
        "AsyncClient",
        "AsyncEventStream",
        "BadRequest",
        "Client",
        "ClientError",
        "Conflict",
        "DaemonUnreachable",
        "EventStream",
        "InternalError",
        "NotFound",
        "OperationFailed",
        "ProtocolError",
        "RemoteError",
        "TooLarge",
        "UnsupportedVersion",
    }
)


def __getattr__(name: str) -> Any:
    if name in _FROM_CLIENT:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
