"""``shutdown``: stop every service (dependents first), reply, then the daemon exits."""

from __future__ import annotations

from runyard.protocol import messages as m

from .context import Context


async def handle(ctx: Context, req: m.Shutdown) -> m.Reply:
    statuses = await ctx.supervisor.shutdown()
    ctx.shutdown_requested.set()
    return m.ActionReply(services=statuses, message="daemon stopping")
