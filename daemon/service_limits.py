"""The limit side of one service's runner: its cgroup (when containment gives it one), which
limits its controllers apply, the kill under way for a limit the daemon enforced, and the
cgroup's OOM count at spawn, so an exit can say why it happened.

The runner (daemon/service.py) owns one and asks it; it never commits anything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from pathlib import Path

from runyard.runtime.config.limits import UNLIMITED, Limits

from .cgroup_limits import CgroupLimits, apply_cgroup_limits, oom_kills
from .process import ProcessHandle, stop_process

__all__ = ["SAMPLED", "ServiceLimits", "rlimits_of"]

#: The limits daemon/limit_watch.py enforces by sampling when no controller does.
SAMPLED = ("memory_max", "tasks_max")
#: A limit kill is SIGKILL: this long for the tree to be gone before survivors are reported.
_KILL_WAIT = 5.0


class ServiceLimits:
    def __init__(self) -> None:
        #: The service's own cgroup; set by containment, None without one.
        self.cgroup_dir: Path | None = None
        #: What apply_cgroup_limits did in that cgroup (nothing without one).
        self.cgroup = CgroupLimits()
        self._kill: tuple[str, asyncio.Task[object]] | None = None
        self._oom_kills: int | None = None
        #: The OOM count taken by ``place``, before the spawn, for ``spawned`` to start from.
        self._placed_oom: tuple[int | None] | None = None

    def sampled(self, limits: Limits) -> frozenset[str]:
        """The limits set that no controller applies: the daemon samples them."""
        wanted = {k for k in SAMPLED if getattr(limits, k) is not None}
        return frozenset(wanted - self.cgroup.applied)

    def not_enforced(self, limits: Limits) -> str:
        """One line for status: a limit accepted but enforced by nothing (cpu_max without the
        cpu controller; the daemon does not fake a quota). "" when everything is enforced."""
        if limits.cpu_max is None or "cpu_max" in self.cgroup.applied:
            return ""
        why = self.cgroup.not_applied.get("cpu_max", "no cpu cgroup controller")
        return f"cpu_max {limits.cpu_max * 100:g}% not enforced ({why})"

    @property
    def killing(self) -> bool:
        return self._kill is not None

    def place(self, cgroup_dir: Path | None, limits: Limits) -> None:
        """The service's new cgroup (None without one): its controllers apply what they can."""
        self.cgroup_dir = cgroup_dir
        self.cgroup = apply_cgroup_limits(cgroup_dir, limits) if cgroup_dir else CgroupLimits()
        # Counted now, before the spawn: a pass finishes its starts once its whole batch is
        # spawned (``StartBatch``), and an OOM kill meanwhile belongs to this process.
        self._placed_oom = (oom_kills(cgroup_dir),)

    def spawned(self) -> None:
        """A new process: no kill under way, and the OOM count it starts from."""
        self._kill = None
        placed, self._placed_oom = self._placed_oom, None
        self._oom_kills = placed[0] if placed is not None else oom_kills(self.cgroup_dir)

    def kill(self, handle: ProcessHandle, reason: str) -> None:
        """SIGKILL the whole tree (as the kernel's OOM killer would), ``reason`` kept for the exit."""
        task = asyncio.get_running_loop().create_task(
            stop_process(handle, stop_signal=signal.SIGKILL, stop_timeout=_KILL_WAIT)
        )
        self._kill = (reason, task)

    async def exit_cause(self, code: int | None) -> str | None:
        """The limit the daemon enforced (its kill awaited: the tree is gone), or ``oom-killed``
        when the cgroup's OOM count grew during the run; None: the exit speaks for itself."""
        if self._kill is not None:
            reason, task = self._kill
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            return reason
        if code == -signal.SIGKILL and self._oom_kills is not None:
            after = oom_kills(self.cgroup_dir)
            if after is not None and after > self._oom_kills:
                return "oom-killed"
        return None


def rlimits_of(limits: Limits) -> tuple[tuple[int, int], ...]:
    """(resource, value) for setrlimit in the child, soft = hard (as systemd's LimitNOFILE=64)."""
    out = []
    if limits.nofile is not None:
        out.append((resource.RLIMIT_NOFILE, limits.nofile))
    if limits.core is not None:
        core = resource.RLIM_INFINITY if limits.core == UNLIMITED else limits.core
        out.append((resource.RLIMIT_CORE, core))
    return tuple(out)
