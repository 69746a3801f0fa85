"""Boot's second step: take back what state.json recorded (``Supervisor.boot``).

A recorded process that is still alive is adopted by its runner; one that is alive but no longer
configured, or over the license's limit, is stopped (never left unmanaged); a recorded cgroup whose
leader died with the daemon is cleared. What the operator left (wanted, restarts, fatal) is
restored either way.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping

from .containment import Containment
from .fsm import Wanted
from .process import adopt, stop_process
from .service import ServiceRunner
from .state import DaemonState

__all__ = ["restore_recorded"]


async def restore_recorded(
    recorded: DaemonState,
    runners: Mapping[str, ServiceRunner],
    blocked: Container[str],
    containment: Containment,
    log: logging.Logger,
) -> None:
    """Adopt, stop or restore each service ``recorded`` names (see the module docstring);
    ``blocked``: the services over the license's limit."""
    for name, record in recorded.services.items():
        handle = None
        if record.pid and record.create_time is not None:
            handle = adopt(
                record.pid,
                record.create_time,
                record.pgid or record.pid,
                cgroup=record.cgroup,
                service="" if record.cgroup else name,
            )
        runner = runners.get(name)
        if handle is not None and (runner is None or name in blocked):
            # Alive but no longer configured (or over the limit): never leave an unmanaged
            # child behind.
            why = "no longer configured" if runner is None else "over the service limit"
            log.warning("%s: recorded pid %d is %s; stopping it", name, handle.pid, why)
            await stop_process(handle, stop_timeout=10.0)
            containment.release(handle)
            continue
        if runner is None or name in blocked:
            continue
        runner.restore(record)  # wanted, restarts, fatal: what the operator left
        if handle is not None:
            log.info("%s: adopted pid %d", name, handle.pid)
            runner.adopt(handle)
        elif record.wanted is Wanted.UP and not record.fatal:
            runner.want_up()
        if handle is None and record.cgroup:  # the leader died with the daemon: no leftovers
            containment.clear(record.cgroup)
