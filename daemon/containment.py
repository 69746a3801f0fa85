"""Which containment each service gets, and its cgroup's life around each process.

The supervisor holds one ``Containment``; a runner asks it where to put a process (``place``)
before a spawn and hands the process back (``release``) once it is gone. It decides once, at
boot, whether this daemon can make cgroups (``cgroup.CgroupTree.create``); a service gets a cgroup
when it can and its ``containment`` setting is ``auto``, else the daemon becomes a child
subreaper (``subreaper``) and reaps what it inherits.

When a service's main process exits by itself, what is left in its cgroup is killed (as
systemd's ``KillMode=control-group``): a restart would otherwise run beside the leftovers of
the run before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from runyard.runtime.core.errors import SpawnError

from . import cgroup as cg
from .process import ProcessHandle, spawned_pids
from .subreaper import OrphanReaper, become_subreaper

__all__ = ["CGROUP", "SUBREAPER", "Containment"]

CGROUP, SUBREAPER = "cgroup", "subreaper"
#: How long the leftovers of an exited main process may take to die before the cgroup is left.
_RELEASE_SECS = 5.0


class Containment:
    def __init__(self, root: Path, log: logging.Logger) -> None:
        self.log = log
        self.tree, self.why_not = cg.CgroupTree.create(root)
        if self.tree is None:
            log.info("no cgroup containment (%s): services run under the subreaper", self.why_not)
        self._say_base(log)
        self._reaper = OrphanReaper(spawned_pids)
        self._tasks: set[asyncio.Task[None]] = set()

    def _say_base(self, log: logging.Logger) -> None:
        """One line when the daemon runs in a ``supervisor`` leaf: used, or why not."""
        base, refused = cg.own_base()
        if refused:
            log.warning("%s: services' cgroups go under the daemon's own", refused)
        elif self.tree is not None and (cg.cgroup_of() or "").endswith("/" + cg.SUPERVISOR_LEAF):
            log.info(
                "cgroups under %s, beside the daemon's leaf %s; controllers for them: %s",
                base,
                cg.SUPERVISOR_LEAF,
                " ".join(sorted(cg.subtree_controllers(self.tree.path))) or "none offered",
            )

    def planned(self, setting: str) -> str:
        """``cgroup`` or ``subreaper``: what a service with this setting gets (a forced
        ``cgroup`` says cgroup: it gets one or does not start)."""
        if setting == CGROUP:
            return CGROUP
        return CGROUP if self.tree is not None and setting != SUBREAPER else SUBREAPER

    def place(self, name: str, setting: str) -> tuple[Path | None, str]:
        """Where the next process of ``name`` goes: (its cgroup or None, its orphan name). The
        subreaper is on with a cgroup too (the daemon reaps the orphans it inherits).
        Raises SpawnError when ``setting`` is ``cgroup`` and no cgroup can be made."""
        self.enable_subreaper()
        if setting == CGROUP and self.tree is None:
            raise SpawnError(f'containment = "cgroup", but {self.why_not}')
        if self.planned(setting) == CGROUP:
            assert self.tree is not None
            try:
                path = self.tree.service(name)
            except OSError as exc:
                if setting == CGROUP:
                    raise SpawnError(f'containment = "cgroup", but {exc.strerror or exc}') from exc
                self.log.warning("%s: no cgroup (%s); contained by the subreaper", name, exc)
            else:
                if cg.populated(path):  # left by a run no daemon saw end: not to share with
                    cg.kill(path)
                return path, name
        return None, name

    def enable_subreaper(self) -> None:
        try:
            become_subreaper()
        except OSError as exc:
            self.log.warning("%s", exc)
        self._reaper.start()

    def release(self, handle: ProcessHandle) -> None:
        """The process is gone: kill what is left in its cgroup, then remove the cgroup."""
        if handle.cgroup is not None:
            self.clear(handle.cgroup)

    def clear(self, cgroup: str) -> None:
        """Kill what is in ``cgroup`` and remove it (also: a recorded one whose leader is gone)."""
        path = Path(cgroup)
        if not cg.populated(path):
            cg.remove(path)
            return
        cg.kill(path)
        task = asyncio.get_running_loop().create_task(self._remove_when_empty(path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove_when_empty(self, path: Path) -> None:
        if await cg.wait_empty(path, time.monotonic() + _RELEASE_SECS):
            cg.remove(path)  # fails harmlessly if a new process already joined it
        else:
            self.log.warning("%s: still populated %gs after cgroup.kill", path, _RELEASE_SECS)

    async def close(self) -> None:
        """Daemon exit: finish removals under way; live services keep their cgroups."""
        self._reaper.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_RELEASE_SECS)
        if self.tree is not None:
            self.tree.close()
