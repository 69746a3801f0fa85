"""A service's spawn, from its spec: what daemon/process.py ``spawn`` is given for one service.

Everything the child gets is read from the frozen ``ServiceSpec`` here, in one call: the command,
its merged env (plus ``RUNYARD_SERVICE``, which marks its orphans for the subreaper and which
probes do not carry), the FIFOs' ends, its cgroup, its rlimits and who it runs as.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .process import ProcessHandle, spawn
from .service_limits import rlimits_of
from .spec import ServiceSpec
from .subreaper import SERVICE_ENV

__all__ = ["launch"]


def launch(
    spec: ServiceSpec,
    fds: Any,
    *,
    cgroup: Path | None,
    orphans: str,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ProcessHandle:
    """Spawn ``spec``'s program; ``fds`` are its prepared log pipes (stdout, stderr, keep).
    ``argv``/``env`` replace the spec's when given (sd_notify adds to them: ServiceIO.launch).
    Raises SpawnError as ``spawn`` does."""
    return spawn(
        list(spec.argv) if argv is None else argv,
        env={**(spec.env if env is None else env), SERVICE_ENV: spec.name},
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
