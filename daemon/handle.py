"""``ProcessHandle``: one supervised process as ``process`` and the stop's ``sweep`` name it.

A module of its own so both can import it without importing each other.
"""

from __future__ import annotations

import msgspec

__all__ = ["ProcessHandle"]


class ProcessHandle(msgspec.Struct, frozen=True, weakref=True):  # _children: weak keys
    """One started (or re-adopted) process and the group it leads."""

    pid: int
    pgid: int
    create_time: float  # psutil create_time: tells this process from a later one with its pid
    own_child: bool = True  # False once re-adopted after a daemon restart: we cannot waitpid it
    cgroup: str | None = None  # the service's cgroup directory, when contained by one
    service: str = ""  # the name its orphans carry to the subreaper daemon (SERVICE_ENV)

    @property
    def containment(self) -> str:
        return "cgroup" if self.cgroup else "subreaper" if self.service else ""
