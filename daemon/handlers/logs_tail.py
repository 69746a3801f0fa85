"""``logs.tail``: the last lines of a service from the in-memory ring, and from the log files
(rotated ones too) when the ring is short (after a daemon restart); with ``before_seq``, the
``n`` lines before that one (scrolling back past the ring, into the files)."""

from __future__ import annotations

from runyard.protocol import messages as m

from .context import Context, HandlerError


def handle(ctx: Context, req: m.LogsTail) -> m.Reply:
    sup = ctx.supervisor
    (name,) = sup.resolve([req.service], all_=False)
    if req.n < 0:
        raise HandlerError(m.ErrorCode.BAD_REQUEST, "n must be >= 0")
    log = sup.runners[name].io.log
    if req.before_seq is None:
        lines = log.tail(req.n, after_seq=req.after_seq)
    else:
        newer = max(0, log.ring.last_seq - req.before_seq + 1)
        older = [line for line in log.tail(req.n + newer) if line.seq < req.before_seq]
        lines = older[-req.n :] if req.n else []
    return m.LogsReply(service=name, lines=lines, last_seq=log.ring.last_seq)
