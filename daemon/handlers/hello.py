"""``hello``: protocol handshake; refuses a protocol version the daemon does not speak."""

from __future__ import annotations

import os

from runyard.protocol import messages as m

from .context import Context, HandlerError


def handle(ctx: Context, req: m.Hello) -> m.Reply:
    if req.protocol != m.PROTOCOL_VERSION:
        raise HandlerError(
            m.ErrorCode.UNSUPPORTED_VERSION,
            f"protocol {req.protocol} is not supported (daemon speaks {m.PROTOCOL_VERSION})",
        )
    return m.HelloReply(
        protocol=m.PROTOCOL_VERSION,
        daemon_version=ctx.version,
        pid=os.getpid(),
        root=str(ctx.tree.root),
        events=ctx.events_endpoint,
    )
