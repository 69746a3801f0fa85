"""One order for every operation that changes what runs.

start, stop, restart, reload (request or SIGHUP), ensure and shutdown (request or SIGTERM) each
pass through `OperationOrder.run`: one asyncio lock, whose waiters are served first come, first
served, so concurrent requests take effect, and are answered, in the order they arrived. An
operation never sees another half done (two reloads at once used to pop the same runner).

Shutdown is the last operation: an operation that arrives after shutdown was asked for is
refused at once with `ShuttingDown` (answered as ``conflict``); the ones queued before it still
run, in their turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from runyard.runtime.core.errors import ShuttingDown

__all__ = ["OperationOrder", "ShuttingDown"]

T = TypeVar("T")


class OperationOrder:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        #: Set once shutdown is asked for: later operations are refused.
        self.closing = False
        #: What is running now ("reload", ...), for the log and tests.
        self.current: str | None = None
        self._final: asyncio.Future[object] | None = None

    async def run(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` after every operation that arrived before it."""
        if self.closing:
            raise ShuttingDown(f"{what}: the daemon is shutting down")
        async with self._lock:
            self.current = what
            try:
                return await operation()
            finally:
                self.current = None

    async def run_last(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` (shutdown) once, after what is queued; refuse everything after it.

        Asking again (a SIGTERM during a shutdown request) waits for the same run.
        """
        self.closing = True
        if self._final is None:

            async def last() -> object:
                async with self._lock:
                    self.current = what
                    return await operation()

            self._final = asyncio.ensure_future(last())
        return await asyncio.shield(self._final)  # type: ignore[return-value]
