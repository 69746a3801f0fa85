"""``runs.list``: sealed (and rejected) runs, per engine or all, newest first."""

from __future__ import annotations

import asyncio

import msgspec

from protocol import messages as m

from .context import Context


async def handle(ctx: Context, req: m.RunsList) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runtime.runs import list_runs

    runs = await asyncio.to_thread(
        list_runs, ctx.tree, req.engine, include_rejected=req.include_rejected
    )
    return m.RunsReply(runs=msgspec.to_builtins(runs))
