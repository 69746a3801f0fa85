"""``stats``: the last minutes of CPU% and RSS samples of services (every 2 s, oldest first),
for the TUI's sparklines; an unknown service is NOT_FOUND, like every request naming one."""

from __future__ import annotations

from runyard.protocol import messages as m
from runyard.protocol.payloads import StatSample

from .context import Context


def handle(ctx: Context, req: m.Stats) -> m.Reply:
    sup = ctx.supervisor
    names = sup.resolve(req.services, all_=not req.services)
    sup.stats.want()  # whoever draws sparklines keeps the sampler going (stats.py)
    rings = sup.samples.rings
    return m.StatsReply(
        samples={
            name: [StatSample(ts, cpu, rss) for ts, cpu, rss in rings.get(name, ())]
            for name in names
        }
    )
