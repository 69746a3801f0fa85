"""``signal``: send a signal to a service's whole process group."""

from __future__ import annotations

from runyard.protocol import messages as m
from runyard.runtime.config.supervision import SupervisionError, parse_signal

from .context import Context, HandlerError


def handle(ctx: Context, req: m.Signal) -> m.Reply:
    sup = ctx.supervisor
    (name,) = sup.resolve([req.service], all_=False)
    try:
        sig = parse_signal(req.signal)
    except SupervisionError as exc:
        raise HandlerError(m.ErrorCode.BAD_REQUEST, str(exc)) from None
    runner = sup.runners[name]
    if not runner.send_signal(sig):
        raise HandlerError(m.ErrorCode.CONFLICT, f"{name} has no running process")
    return m.ActionReply(services=[runner.status()], message=f"sent {sig.name} to {name}")
