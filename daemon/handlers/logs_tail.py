"""``logs.tail``: the last lines of a service from the in-memory ring, and from the log files
(rotated ones too) when the ring is short (after a daemon restart)."""

from __future__ import annotations

from runyard.protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.LogsTail) -> m.Reply:
    sup = ctx.supervisor
    (name,) = sup.resolve([req.service], all_=False)
    if req.n < 0:
        raise HandlerError(m.ErrorCode.BAD_REQUEST, "n must be >= 0")
    log = sup.runners[name].io.log
    lines = log.tail(req.n, after_seq=req.after_seq)
    return m.LogsReply(service=name, lines=lines, last_seq=log.ring.last_seq)
