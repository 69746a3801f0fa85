"""``status``: every service (or the named ones) and the event seqs of this snapshot.

Each service goes out as the JSON its runner holds since its last change (status_wire.py)."""

from __future__ import annotations

import os

from runyard.protocol import messages as m

from ..status_wire import EncodedStatusReply
from .context import Context


def handle(ctx: Context, req: m.Status) -> m.Reply:
    sup = ctx.supervisor
    names = sup.resolve(req.services, all_=False) if req.services else []
    sup.stats.want()  # CPU/RSS are sampled while someone asks (stats.py)
    runners = sup.runners  # the services of Supervisor.status, as JSON
    return EncodedStatusReply(
        services=[r.shown().json for n in names or sup.order if (r := runners.get(n)) is not None],
        seqs=dict(sup.bus.seqs),
        daemon_pid=os.getpid(),
        daemon_started_at=ctx.started_at,
        epoch=sup.bus.epoch,
    )
