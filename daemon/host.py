"""What a service runner needs from whoever supervises it: the `RunnerHost` Protocol.

daemon/service.py depends on this, not on daemon/supervisor.py, so the two modules do not import
each other (not even under ``TYPE_CHECKING``): the supervisor imports the runner, the runner
imports only this, and this imports neither. ``Supervisor`` satisfies it structurally; it is
generic in the runner's type (``RunnerHost[ServiceRunner]``) so it needs no runner import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from runyard.protocol.messages import LogLine
from runyard.runtime.core.tree import RuntimeTree

from .containment import Containment

__all__ = ["RunnerHost"]

R_contra = TypeVar("R_contra", contravariant=True)


class RunnerHost(Protocol[R_contra]):
    tree: RuntimeTree  # the service's logs live in tree.logs_dir
    fifo_dir: Path  # its FIFOs (and log spools when spool_dir is not on tmpfs)
    spool_dir: Path  # its log spools (logs/spool_home.py)
    log: logging.Logger  # the daemon's log
    containment: Containment  # where its processes are kept (a cgroup, or the subreaper)

    def on_commit(self, runner: R_contra) -> None:
        """A transition was committed: publish it once, have state.json written."""

    def on_log(self, runner: R_contra, lines: Sequence[LogLine]) -> None:
        """Lines read from the service's output."""

    def request_schedule(self) -> None:
        """Ask for a scheduling pass (a backoff is over, a stop finished)."""
