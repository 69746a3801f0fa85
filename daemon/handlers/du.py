"""``du``: disk usage of the tree per service, computed off the event loop."""

from __future__ import annotations

import asyncio

from runyard.protocol import messages as m
from runyard.protocol.payloads import DiskReport, from_runtime
from runyard.runtime.acquisition.cache import cache_owner
from runyard.runtime.core.du import disk_usage

from ..diskwatch import with_free_disk
from .context import Context


async def handle(ctx: Context, req: m.Du) -> m.Reply:
    def measure() -> DiskReport:
        report = from_runtime(disk_usage(ctx.tree, cache_owner(ctx.tree).get), DiskReport)
        return with_free_disk(report, ctx.tree.root)

    return m.DuReply(report=await asyncio.to_thread(measure))
