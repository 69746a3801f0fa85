"""What a handler can reach: the supervisor, the tree, the daemon's facts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runyard.protocol.messages import ErrorCode
from runyard.runtime.core.tree import RuntimeTree

from ..supervisor import Supervisor

if TYPE_CHECKING:
    from .audited import AuditWriter


class HandlerError(Exception):
    """An expected failure, answered as ErrorReply(code, message)."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)  # a code the protocol does not define is a bug, here
        self.message = message


@dataclass
class Context:
    tree: RuntimeTree
    supervisor: Supervisor
    events_endpoint: str
    version: str
    started_at: float
    #: Set by the shutdown handler; the daemon's main loop waits on it.
    shutdown_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: Where audited actions are appended (None: not recorded, e.g. in unit tests).
    audit: AuditWriter | None = None
