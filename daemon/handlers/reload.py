"""``reload``: re-read manifest and config; only changed services restart."""

from __future__ import annotations

from runyard.protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Reload) -> m.Reply:
    if ctx.supervisor.shutting_down:
        raise HandlerError("conflict", "the daemon is shutting down")
    summary = await ctx.supervisor.reload()
    return m.ActionReply(services=ctx.supervisor.status(), message=summary)
