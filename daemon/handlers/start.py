"""``start``: want the services up (their dependencies too); replies without waiting."""

from __future__ import annotations

from protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Start) -> m.Reply:
    sup = ctx.supervisor
    if sup.shutting_down:
        raise HandlerError("conflict", "the daemon is shutting down")
    names = sup.resolve(req.services, req.all)
    if not names:
        raise HandlerError("bad_request", "name a service or pass all")
    return m.ActionReply(services=sup.start(names))
