"""Limits through cgroup v2 controllers, where a service's cgroup has them: the seam.

Containment (a cgroup per service) puts a service in ``cgroup_dir``; `apply_cgroup_limits`
then writes what the kernel can enforce there, ``memory.max``, ``pids.max`` and ``cpu.max``,
and says which limits it could not apply and why. A limit not applied here falls back to the
daemon: memory and tasks by sampling (daemon/limit_watch.py), cpu not at all (status says so,
we never fake a CPU quota with signals).

A controller is usable in a cgroup when its name is in that cgroup's ``cgroup.controllers``
(enabled in the parent's ``cgroup.subtree_control``: the tree's directory enables what it is
offered, ``cgroup.enable_controllers``). On the hybrid layout's ``unified`` mount none is: every
limit is reported ``not enabled``.

``oom_kills`` reads ``memory.events``: the kernel's count of OOM kills in the cgroup. An exit by
SIGKILL is called ``oom-killed`` only when that count grew during the run; a SIGKILL alone may
be an operator's ``kill -9``, and dmesg or /proc/pressure cannot name the victim reliably.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from runyard.runtime.config.limits import Limits

__all__ = [
    "CgroupLimits",
    "apply_cgroup_limits",
    "enabled_controllers",
    "oom_kills",
]

#: limit -> (controller, file)
_FILES = {
    "memory_max": ("memory", "memory.max"),
    "tasks_max": ("pids", "pids.max"),
    "cpu_max": ("cpu", "cpu.max"),
}
#: cpu.max's period in microseconds (the kernel's default).
_CPU_PERIOD = 100_000


class CgroupLimits(msgspec.Struct, frozen=True):
    """What one `apply_cgroup_limits` did."""

    applied: frozenset[str] = frozenset()
    #: limit -> why not (``cpu controller not enabled in /sys/fs/cgroup/unified/x``)
    not_applied: dict[str, str] = msgspec.field(default_factory=dict)


def enabled_controllers(cgroup_dir: Path) -> set[str]:
    try:
        return set((cgroup_dir / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _value(name: str, limits: Limits) -> str:
    if name == "cpu_max":
        assert limits.cpu_max is not None
        return f"{max(1000, round(limits.cpu_max * _CPU_PERIOD))} {_CPU_PERIOD}"
    return str(getattr(limits, name))


def apply_cgroup_limits(cgroup_dir: Path, limits: Limits) -> CgroupLimits:
    """Write memory.max, pids.max and cpu.max for the limits set whose controller is enabled in
    ``cgroup_dir``; the others come back in ``not_applied`` with the reason. With none set it
    reads nothing (most services: no file read on their start)."""
    if all(getattr(limits, name) is None for name in _FILES):
        return CgroupLimits()
    enabled = enabled_controllers(cgroup_dir)
    applied: set[str] = set()
    missing: dict[str, str] = {}
    for name, (controller, filename) in _FILES.items():
        if getattr(limits, name) is None:
            continue
        if controller not in enabled:
            missing[name] = f"{controller} controller not enabled in {cgroup_dir}"
            continue
        try:
            (cgroup_dir / filename).write_text(_value(name, limits))
        except OSError as exc:
            missing[name] = f"cannot write {cgroup_dir / filename}: {exc.strerror or exc}"
            continue
        applied.add(name)
    return CgroupLimits(frozenset(applied), missing)


def oom_kills(cgroup_dir: Path | None) -> int | None:
    """The ``oom_kill`` count of ``memory.events``; None without the file (no memory controller)."""
    if cgroup_dir is None:
        return None
    try:  # plain reads, not a text file object: every start reads it
        fd = os.open(os.path.join(cgroup_dir, "memory.events"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = [os.read(fd, 4096)]
            while chunks[-1]:
                chunks.append(os.read(fd, 4096))
        finally:
            os.close(fd)
    except OSError:
        return None
    for line in b"".join(chunks).splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill":
            return int(value)
    return None
