"""``runs.list``: sealed (and rejected) runs, per engine or all, newest first."""

from __future__ import annotations

import asyncio

from runyard.protocol import messages as m
from runyard.protocol.payloads import RunSummary, from_runtime
from runyard.runtime.core.tree import check_name

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.RunsList) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import list_runs

    # An engine is a name under data/, never a path: "../x" or "/etc" would list elsewhere.
    if req.engine is not None and (problem := check_name(req.engine, "engine name")):
        raise HandlerError(m.ErrorCode.BAD_REQUEST, f"invalid {problem}")
    runs = await asyncio.to_thread(
        list_runs, ctx.tree, req.engine, include_rejected=req.include_rejected
    )
    return m.RunsReply(runs=[from_runtime(r, RunSummary) for r in runs])
