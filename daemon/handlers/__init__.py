"""One handler per command; `INLINE` and `HANDLERS` map each request type to its handler.

A handler takes the daemon context and the decoded request and returns a Reply. The ones that
never wait (status, hello, stats, logs tail, signal) are plain functions in `INLINE`: the server
answers them inside the callback that read the request, with no task. The others are
coroutines in `HANDLERS`, each run as a task of its own, so a slow one (a stop that waits) never
holds up a status. A request type is in exactly one of the two. A handler raises
`HandlerError` (or UnknownService) for an expected failure; the server turns that into a typed
ErrorReply in one place, and anything else into ``internal`` after logging the traceback.

The handlers of requests that only some daemons ever get (disk usage, ensure, sealed runs)
are imported on their first request (`_on_first_use`): what they pull in (archive extraction,
HTTP fetching, the run engine, disk walking) stays out of every daemon's start and memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from runyard.protocol import messages as m

from . import hello, logs_tail, reload, restart, shutdown, signal, start, stats, status, stop
from .context import Context, HandlerError

__all__ = ["HANDLERS", "INLINE", "Context", "HandlerError"]

Handler = Callable[[Context, m.Request], Awaitable[m.Reply]]
InlineHandler = Callable[[Context, m.Request], m.Reply]


def _on_first_use(module: str) -> Handler:
    """The ``handle`` of ``daemon/handlers/<module>.py``, imported when first called."""

    async def handle(ctx: Context, req: Any) -> m.Reply:
        loaded: Handler = importlib.import_module(f"{__name__}.{module}").handle
        return await loaded(ctx, req)

    handle.__qualname__ = f"{module}.handle"
    return handle


#: Answered inside the receive callback (fast, never wait).
INLINE: dict[type[m.Request], InlineHandler] = {
    m.Hello: hello.handle,
    m.Status: status.handle,
    m.Signal: signal.handle,
    m.LogsTail: logs_tail.handle,
    m.Stats: stats.handle,
}

#: Each run as its own task (start too: it waits its turn in the supervisor's one order).
HANDLERS: dict[type[m.Request], Handler] = {
    m.Start: start.handle,
    m.Stop: stop.handle,
    m.Restart: restart.handle,
    m.Reload: reload.handle,
    m.Du: _on_first_use("du"),
    m.Ensure: _on_first_use("ensure"),
    m.Shutdown: shutdown.handle,
    m.Run: _on_first_use("run"),
    m.RunsList: _on_first_use("runs_list"),
    m.RunsShow: _on_first_use("runs_show"),
    m.VerifyRun: _on_first_use("verify"),
    m.ReplayRun: _on_first_use("replay"),
}
