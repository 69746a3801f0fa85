"""One handler per command; `HANDLERS` maps each request type to its handler.

A handler takes the daemon context and the decoded request and returns a Reply. It raises
`HandlerError` (or UnknownService) for an expected failure; the server turns that into a typed
ErrorReply in one place, and anything else into ``internal`` after logging the traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from runyard.protocol import messages as m

from . import (
    du,
    ensure,
    hello,
    logs_tail,
    reload,
    replay,
    restart,
    run,
    runs_list,
    runs_show,
    shutdown,
    signal,
    start,
    stats,
    status,
    stop,
    verify,
)
from .context import Context, HandlerError

__all__ = ["HANDLERS", "INLINE", "Context", "HandlerError"]

Handler = Callable[[Context, m.Request], Awaitable[m.Reply]]

HANDLERS: dict[type[m.Request], Handler] = {
    m.Hello: hello.handle,
    m.Status: status.handle,
    m.Start: start.handle,
    m.Stop: stop.handle,
    m.Restart: restart.handle,
    m.Signal: signal.handle,
    m.Reload: reload.handle,
    m.LogsTail: logs_tail.handle,
    m.Du: du.handle,
    m.Ensure: ensure.handle,
    m.Shutdown: shutdown.handle,
    m.Run: run.handle,
    m.RunsList: runs_list.handle,
    m.RunsShow: runs_show.handle,
    m.VerifyRun: verify.handle,
    m.ReplayRun: replay.handle,
    m.Stats: stats.handle,
}

#: Answered inside the receive loop (fast, never wait); the rest run as their own tasks
#: (start too: it waits its turn in the supervisor's one order).
INLINE: frozenset[type[m.Request]] = frozenset({m.Hello, m.Status, m.LogsTail, m.Signal, m.Stats})
