"""``runs.show``: one run's records (input, output, meta, conditions, files)."""

from __future__ import annotations

import asyncio

import msgspec

from protocol import messages as m

from .context import Context, HandlerError


async def handle(ctx: Context, req: m.RunsShow) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runtime.runs import RunError, show_run

    try:
        run = await asyncio.to_thread(show_run, ctx.tree, req.run_id)
    except RunError as exc:
        raise HandlerError("not_found", str(exc)) from None
    return m.RunShowReply(run=msgspec.to_builtins(run))
