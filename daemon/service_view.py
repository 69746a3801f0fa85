"""A service as clients see it: the ``ServiceStatus`` of a runner, built when it changed (the
runner keeps it, with its JSON, in a ``status_wire.ShownStatus``).

Apart from daemon/service.py so that the runner reads as its transitions; this module only
reads a runner's attributes (no import of it back)."""

from __future__ import annotations

import time
from typing import Any

from runyard.protocol.messages import Port, ServiceStatus
from runyard.protocol.payloads import ServiceSetup
from runyard.runtime.config.limits import LIMIT_KEYS, UNLIMITED, format_size

from .fsm import ServiceState as S

__all__ = ["build_status"]


def build_status(runner: Any) -> ServiceStatus:
    """``runner`` (a ServiceRunner, daemon/service.py) as clients see it."""
    next_in = None
    if runner.state is S.BACKOFF and runner.next_start_at is not None:
        next_in = max(0.0, runner.next_start_at - time.monotonic())
    return ServiceStatus(
        name=runner.name,
        version=runner.spec.version,
        state=str(runner.state),
        wanted=str(runner.wanted),
        ready=None if not runner.spec.has_readiness else bool(runner.io.ready),
        ready_detail=runner.io.ready_detail,
        pid=runner.handle.pid if runner.handle else None,
        pgid=runner.handle.pgid if runner.handle else None,
        started_at=runner.started_at,
        restarts=runner.restarts,
        last_exit=runner.last_exit,
        last_exit_at=runner.last_exit_at,
        reason=runner.reason,
        next_start_in=next_in,
        # The sampler clears these up to STATS_INTERVAL after an exit: a gone process has none.
        cpu_percent=runner.cpu_percent if runner.handle else None,
        rss=runner.rss if runner.handle else None,
        ports=[Port(name=p.name, port=p.port, protocol=p.protocol) for p in runner.spec.ports],
        autostart=runner.spec.autostart,
        depends_on=dict(runner.spec.depends_on),
        live=runner.io.live,
        live_detail=runner.io.live_detail,
        containment=(
            runner.handle.containment
            if runner.handle
            else runner.sup.containment.planned(runner.spec.containment)
        ),
        limits_note=runner.limit_state.not_enforced(runner.spec.limits),
        notify_status=runner.io.notify_status,
        setup=setup_of(runner.spec),
    )


def setup_of(spec: Any) -> ServiceSetup:
    """``spec`` (a ServiceSpec) as the detail pane shows it: words, not the daemon's types."""
    b = spec.backoff
    return ServiceSetup(
        bin=spec.argv[0] if spec.argv else "",
        restart=spec.restart,
        max_restarts=spec.max_restarts,
        backoff=f"{b.initial:g}s, x{b.multiplier:g}, up to {b.max:g}s",
        limits=describe_limits(spec.limits),
    )


def describe_limits(limits: Any) -> str:
    """``memory_max 256 MiB, cpu_max 50%, tasks_max 64``; "" when none is set."""
    parts = []
    for key in LIMIT_KEYS:
        value = getattr(limits, key)
        if value is None:
            continue
        if value == UNLIMITED:
            shown = "unlimited"
        elif key == "cpu_max":
            shown = f"{value * 100:g}%"
        elif key in ("memory_max", "core"):
            shown = format_size(value)
        else:
            shown = str(value)
        parts.append(f"{key} {shown}")
    return ", ".join(parts)
