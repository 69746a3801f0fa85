"""``replay``: verify, re-execute with the sealed input, compare canonical output bytes."""

from __future__ import annotations

import asyncio

from runyard.protocol import messages as m
from runyard.protocol.payloads import ReplayReport, from_runtime
from runyard.runtime.config.project import load_project

from .context import Context
from .run import event_forwarder
from .runs_common import run_dir_of


async def handle(ctx: Context, req: m.ReplayRun) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import replay_run

    path = run_dir_of(ctx, req.run_dir)
    loop = asyncio.get_running_loop()
    report = await asyncio.to_thread(
        replay_run,
        ctx.tree,
        path,
        on_event=event_forwarder(ctx, loop),
        timeout=req.timeout,
        project=load_project(ctx.supervisor.project_file),
    )
    return m.ReplayReply(report=from_runtime(report.to_builtins(), ReplayReport))
