"""``stop``: want the services down; with ``wait`` (default) reply once nothing of them runs."""

from __future__ import annotations

import asyncio

from runyard.protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Stop) -> m.Reply:
    sup = ctx.supervisor
    if sup.shutting_down:
        raise HandlerError("conflict", "the daemon is shutting down")
    names = sup.resolve(req.services, req.all)
    if not names:
        raise HandlerError("bad_request", "name a service or pass all")
    task = asyncio.ensure_future(sup.stop(names, ordered=req.all))
    if req.wait:
        return m.ActionReply(services=await task)
    return m.ActionReply(services=sup.status(names), message="stopping")
