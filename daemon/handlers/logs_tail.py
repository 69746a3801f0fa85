"""``logs.tail``: the last lines of a service from the in-memory ring (or those after a seq)."""

from __future__ import annotations

from protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.LogsTail) -> m.Reply:
    sup = ctx.supervisor
    (name,) = sup.resolve([req.service], all_=False)
    if req.n < 0:
        raise HandlerError("bad_request", "n must be >= 0")
    ring = sup.runners[name].log.ring
    lines = ring.tail(req.n, after_seq=req.after_seq)
    return m.LogsReply(service=name, lines=lines, last_seq=ring.last_seq)
