"""``start``: want the services up (their dependencies too); replies without waiting.

A service beyond the license's max_services is refused by name (``conflict``); ``all`` starts
every service within the limit and says how many were left out.
"""

from __future__ import annotations

from runyard.protocol import messages as m

from ..license_cap import OverLimit
from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Start) -> m.Reply:
    sup = ctx.supervisor
    if sup.shutting_down:
        raise HandlerError(m.ErrorCode.CONFLICT, "the daemon is shutting down")
    names = sup.resolve(req.services, req.all)
    if not names:
        raise HandlerError(m.ErrorCode.BAD_REQUEST, "name a service or pass all")
    message = ""
    if req.all:
        left_out = [n for n in names if n in sup.cap.blocked]
        names = [n for n in names if n not in sup.cap.blocked]
        if left_out:
            message = (
                f"{len(left_out)} service(s) not started: over the {sup.cap.tier} tier's limit of "
                f"{sup.cap.max_services} services (max_services)"
            )
    else:
        try:
            sup.refuse_over_limit(names)
        except OverLimit as exc:
            raise HandlerError(m.ErrorCode.CONFLICT, str(exc)) from None
    return m.ActionReply(services=await sup.start(names), message=message)
