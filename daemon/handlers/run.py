"""``run``: execute an engine and seal the run, in a worker thread; steps go out as
``run.<run_id>`` events. A rejected run is a RunReply with status ``rejected``, not an error:
the record and its reason are the answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from runyard.protocol import messages as m
from runyard.protocol.payloads import RunOutcome, RunStep, from_runtime
from runyard.runtime.config.project import load_project

from .context import Context, HandlerError

if TYPE_CHECKING:  # runtime.runs is imported only when a run is asked for (see handle)
    from runyard.runtime.runs import RunEvent


def event_forwarder(ctx: Context, loop: asyncio.AbstractEventLoop) -> Callable[[RunEvent], object]:
    """An ``on_event`` callback, called from the worker thread, that publishes on the loop."""
    bus = ctx.supervisor.bus

    def publish(event: RunEvent) -> None:
        topic = f"run.{event.run_id}"
        bus.publish(
            topic,
            lambda seq, ts: m.RunEvent(
                topic=topic,
                seq=seq,
                ts=ts,
                run_id=event.run_id,
                engine=event.engine,
                kind=event.kind,
                data=from_runtime(event.data, RunStep),
            ),
        )

    return lambda event: loop.call_soon_threadsafe(publish, event)


async def handle(ctx: Context, req: m.Run) -> m.Reply:
    # runtime.runs loads jsonschema and cryptography: only once runs are used.
    from runyard.runtime.runs import RunRejected, execute_and_seal

    if ctx.supervisor.shutting_down:
        raise HandlerError("conflict", "the daemon is shutting down")
    loop = asyncio.get_running_loop()
    project = load_project(ctx.supervisor.project_file)

    def execute() -> m.RunReply:
        try:
            result = execute_and_seal(
                ctx.tree,
                req.engine,
                req.inputs,
                parameters=req.parameters,
                context=req.context,
                project_id=req.project_id,
                from_runs=req.from_runs,
                sign_key=req.sign_key,
                timeout=req.timeout,
                project=project,
                on_event=event_forwarder(ctx, loop),
            )
        except RunRejected as rej:
            return m.RunReply(
                status="rejected",
                result=RunOutcome(
                    run_id=rej.run_id,
                    engine=rej.engine,
                    stage=rej.stage,
                    reason=rej.reason,
                    record=rej.record,
                ),
            )
        return m.RunReply(status="sealed", result=from_runtime(result, RunOutcome))

    return await asyncio.to_thread(execute)
