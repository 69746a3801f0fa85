"""A service's spawn, from its spec: what daemon/process.py ``prepare_spawn`` is given for one
service (the supervisor spawns a scheduling pass's together: ``StartBatch``).

Everything the child gets is read from the frozen ``ServiceSpec`` here, in one call: the command,
its merged env (plus ``RUNYARD_SERVICE``, which marks its orphans for the subreaper and which
probes do not carry), the FIFOs' ends, its cgroup, its rlimits and who it runs as.
"""

from __future__ import annotations

import os
from typing import Any

from runyard.runtime.core.errors import SpawnError

from .credentials import own_data_dir
from .process import PreparedSpawn, prepare_spawn
from .service_io import ServiceIO
from .service_limits import ServiceLimits, rlimits_of
from .spec import ServiceSpec
from .subreaper import SERVICE_ENV

__all__ = ["prepare_launch"]


def prepare_launch(
    spec: ServiceSpec, io: ServiceIO, limit_state: ServiceLimits, host: Any
) -> PreparedSpawn:
    """``spec``'s next spawn, ready for ``process.spawn_prepared``: its working directory
    made, its log pipes opened (``io``), its cgroup made (``host.containment``) with what its
    controllers apply of the limits, NOTIFY_SOCKET and WATCHDOG_* added (``io.launch``).
    Raises SpawnError as ``prepare_spawn`` does, or when no cgroup or notify socket can be
    had, or the working directory or the pipes cannot be made (an OSError: the service's start
    failed, with its cause, never the whole pass or the daemon's boot); the caller closes the
    pipes' child ends then."""
    try:
        return _prepare(spec, io, limit_state, host)
    except OSError as exc:
        where = f": {os.fsdecode(exc.filename)!r}" if exc.filename is not None else ""
        error = SpawnError(f"cannot prepare the start: {exc.strerror or exc}{where}")
        raise error from exc


def _prepare(
    spec: ServiceSpec, io: ServiceIO, limit_state: ServiceLimits, host: Any
) -> PreparedSpawn:
    own_data_dir(spec.cwd, host.tree.data_dir, spec.run_as)
    fds = io.pipes.prepare()
    cgroup, orphans = host.containment.place(spec.name, spec.containment)
    limit_state.place(cgroup, spec.limits)  # controllers apply what they can
    argv, env = io.launch(spec)  # NOTIFY_SOCKET, WATCHDOG_* (daemon/notify.py)
    return prepare_spawn(
        argv,
        env={**env, SERVICE_ENV: spec.name},
        cwd=spec.cwd,
        stdout=fds.stdout,
        stderr=fds.stderr,
        keep_fds=fds.keep,
        cgroup=cgroup,
        service=orphans,
        rlimits=rlimits_of(spec.limits),
        run_as=spec.run_as,
        no_new_privileges=spec.no_new_privileges,
        umask=spec.umask,
    )
