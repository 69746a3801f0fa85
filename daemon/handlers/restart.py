"""``restart``: stop (dependents first), then start again (within the license's limit)."""

from __future__ import annotations

from runyard.protocol import messages as m

from ..license_cap import OverLimit
from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Restart) -> m.Reply:
    sup = ctx.supervisor
    if sup.shutting_down:
        raise HandlerError(m.ErrorCode.CONFLICT, "the daemon is shutting down")
    names = sup.resolve(req.services, req.all)
    if not names:
        raise HandlerError(m.ErrorCode.BAD_REQUEST, "name a service or pass all")
    if req.all:
        names = [n for n in names if n not in sup.cap.blocked]
    else:
        try:
            sup.refuse_over_limit(names)
        except OverLimit as exc:
            raise HandlerError(m.ErrorCode.CONFLICT, str(exc)) from None
    return m.ActionReply(services=await sup.restart(names))
