"""What a handler can reach: the supervisor, the tree, the daemon's facts."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from runyard.runtime.core.errors import HandlerError
from runyard.runtime.core.tree import RuntimeTree

from ..supervisor import Supervisor

if TYPE_CHECKING:
    from .audited import AuditWriter

__all__ = ["Context", "HandlerError"]


class Context(msgspec.Struct):
    tree: RuntimeTree
    supervisor: Supervisor
    events_endpoint: str
    version: str
    started_at: float
    #: Set by the shutdown handler; the daemon's main loop waits on it.
    shutdown_requested: asyncio.Event = msgspec.field(default_factory=asyncio.Event)
    #: Where audited actions are appended (None: not recorded, e.g. in unit tests).
    audit: AuditWriter | None = None
