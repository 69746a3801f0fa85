"""Containment without cgroups: the daemon as a child subreaper, and the orphans it inherits.

Used where no cgroup can be made for a service (see ``cgroup``), or where a service's
``containment = "subreaper"`` asks for it.

Why it is built this way:

- **``PR_SET_CHILD_SUBREAPER``**: a process that double-forks out of a service's tree is
  reparented to the daemon instead of to init, so it stays in reach: a stop still finds it,
  after its parent has gone, as a child of the daemon.
- **An orphan is told apart by its environment.** Every service process is started with
  ``RUNYARD_SERVICE=<name>`` (inherited by whatever it forks); a child of the daemon that the
  daemon did not spawn and that carries it belongs to that service. The exec readiness probes
  run with the service's configured env, without the marker, so they are never mistaken for
  one. A program that clears its environment before daemonizing is not found: only a cgroup
  closes that hole.
- **Orphans are reaped, our own children are not.** A zombie orphan is reaped by pid as soon as
  it is known as one; a zombie child of the daemon that nothing claims (an orphan that died
  before it was seen) is reaped when it is still a zombie one pass (a second) later: asyncio's
  watchers reap the daemon's own probes at once, and ``process`` keeps each service leader.
- **Passes follow SIGCHLD, not a clock.** Every orphan's exit sends the daemon SIGCHLD; a pass
  (one read of /proc) runs 50 ms after the first of a burst, and again a second later only while
  an unclaimed zombie waits. An idle daemon reads nothing.
- **With cgroups too.** The daemon is a subreaper in both modes; a service in a cgroup joined it
  before it exec'd (``process.spawn``), so its orphans are also in its cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable

from .proctable import Proc, proc_table

__all__ = ["SERVICE_ENV", "OrphanReaper", "become_subreaper", "is_subreaper", "orphans_of"]

#: Set in every service process's environment: names the service an orphan came from.
SERVICE_ENV = "RUNYARD_SERVICE"

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_REAP_EVERY = 1.0
#: SIGCHLD to reaping pass: the exits of one stop-all are reaped in one pass.
_COALESCE = 0.05

_libc = ctypes.CDLL(None, use_errno=True)
#: (pid, start ticks) -> service name ("" when it carries none): environ read once per process.
_owner: dict[tuple[int, int], str] = {}


def become_subreaper() -> None:
    """Make this process the subreaper of everything it starts (idempotent)."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    _libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


def _service_of(pid: int, p: Proc) -> str:
    key = (pid, p.start)
    name = _owner.get(key)
    if name is None:
        name = ""
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                marker = os.fsencode(SERVICE_ENV) + b"="
                for entry in f.read().split(b"\0"):
                    if entry.startswith(marker):
                        name = os.fsdecode(entry[len(marker) :])
                        break
        except OSError:
            return ""  # gone, or not readable yet: ask again next time
        _owner[key] = name
    return name


def orphans_of(service: str, table: dict[int, Proc], spawned: set[int]) -> list[int]:
    """Live children of the daemon, not spawned by it, that carry ``service``'s marker."""
    me = os.getpid()
    return [
        pid
        for pid, p in table.items()
        if p.ppid == me and not p.zombie and pid not in spawned and _service_of(pid, p) == service
    ]


class OrphanReaper:
    """Reaps the zombies the daemon inherits as a subreaper: a pass when SIGCHLD says a child
    changed state (a burst of exits coalesced into one pass), none while nothing happens."""

    def __init__(self, spawned: Callable[[], set[int]]) -> None:
        self._spawned = spawned
        #: unclaimed zombies -> when a pass first saw them (monotonic): passes follow SIGCHLD,
        #: so "a pass later" is not "a second later"; the time is what counts.
        self._seen: dict[tuple[int, int], float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next: asyncio.TimerHandle | None = None
        self._poll: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGCHLD, self._soon, _COALESCE)
        except (RuntimeError, ValueError):  # not the main thread's loop: poll instead
            self._poll = self._loop.create_task(self._run())
        self._soon(0.0)  # what was inherited before the handler was there

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(_REAP_EVERY)
            self.reap()

    def _soon(self, delay: float) -> None:
        """A pass within ``delay`` seconds (an earlier one already planned stands)."""
        assert self._loop is not None
        when = self._loop.time() + delay
        if self._next is not None:
            if self._next.when() <= when:
                return
            self._next.cancel()
        self._next = self._loop.call_at(when, self._pass)

    def _pass(self) -> None:
        self._next = None
        self.reap()
        if self._seen:  # an unclaimed zombie is reaped when it is still one a second later
            due = min(self._seen.values()) + _REAP_EVERY - time.monotonic()
            self._soon(max(due, 0.0))

    def reap(self) -> int:
        """Reap inherited zombies; returns how many."""
        me, spawned = os.getpid(), self._spawned()
        table = proc_table()
        now = time.monotonic()
        seen: dict[tuple[int, int], float] = {}
        reaped = 0
        for pid, p in table.items():
            if p.ppid != me or pid in spawned:
                continue
            known = _owner.get((pid, p.start))
            if not p.zombie:
                continue
            first = self._seen.get((pid, p.start))
            if known or (first is not None and now - first >= _REAP_EVERY):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        reaped += 1
                _owner.pop((pid, p.start), None)
            else:
                seen[(pid, p.start)] = now if first is None else first
        self._seen = seen
        for key in [k for k in _owner if k[0] not in table]:
            del _owner[key]  # gone: forget it, its pid may come back as another process
        return reaped

    def close(self) -> None:
        if self._loop is not None and self._poll is None:
            with contextlib.suppress(RuntimeError, ValueError):
                self._loop.remove_signal_handler(signal.SIGCHLD)
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        self._loop = None
