"""``ensure``: acquire a service binary into the tree, off the event loop, in the one order."""

from __future__ import annotations

from runyard.protocol import messages as m
from runyard.protocol.payloads import Binary, from_runtime
from runyard.runtime.acquisition.ensure import ensure_service
from runyard.runtime.core.errors import RunyardError

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.Ensure) -> m.Reply:
    def acquire() -> Binary:
        binary = ensure_service(
            req.name, req.version_spec, root=ctx.tree.root, catalog=req.catalog, progress=False
        )
        return from_runtime(binary, Binary)

    try:
        return m.EnsureReply(binary=await ctx.supervisor.ensure(acquire))
    except RunyardError as exc:
        raise HandlerError("failed", str(exc)) from None
