"""``verify``: every check of a sealed run (its directory, or a run id of this tree)."""

from __future__ import annotations

import asyncio

from runyard.protocol import messages as m
from runyard.protocol.payloads import VerifyReport, from_runtime

from .context import Context
from .runs_common import run_dir_of


async def handle(ctx: Context, req: m.VerifyRun) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import verify_run

    path = run_dir_of(ctx, req.run_dir)
    report = await asyncio.to_thread(verify_run, path, req.pubkey, tree=ctx.tree)
    return m.VerifyReply(report=from_runtime(report.to_builtins(), VerifyReport))
