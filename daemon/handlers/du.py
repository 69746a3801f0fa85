"""``du``: disk usage of the tree per service, computed off the event loop."""

from __future__ import annotations

import asyncio

import msgspec

from protocol import messages as m
from runtime.cache import cache_owner
from runtime.du import disk_usage

from .context import Context


async def handle(ctx: Context, req: m.Du) -> m.Reply:
    def measure() -> dict[str, object]:
        report = disk_usage(ctx.tree, cache_owner(ctx.tree).get)
        return msgspec.to_builtins(report)

    return m.DuReply(report=await asyncio.to_thread(measure))
