"""``restart``: stop (dependents first), then start again."""

from __future__ import annotations

from protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Restart) -> m.Reply:
    sup = ctx.supervisor
    if sup.shutting_down:
        raise HandlerError("conflict", "the daemon is shutting down")
    names = sup.resolve(req.services, req.all)
    if not names:
        raise HandlerError("bad_request", "name a service or pass all")
    return m.ActionReply(services=await sup.restart(names))
