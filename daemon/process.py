"""The operating-system side of one supervised process: spawn it, see it exit, stop its whole tree.

This module owns the pids. Everything above it (the state machine, restart policy, logs) deals in
``ProcessHandle`` values and never calls ``kill`` or ``waitpid`` itself.

Why it is built this way:

- **A process is (pid, start time), never a pid alone.** The kernel recycles pids; a handle
  carries psutil's ``create_time`` so a recorded process is recognised after a daemon restart
  (``adopt``), and every process signalled one by one is first pinned with a pidfd and checked
  against its start time, so a recycled pid is never signalled.
- **Every service leads its own session and process group** (``pgid == pid``): one ``killpg``
  reaches what it forks, and a hangup of the daemon's terminal never reaches it.
- **Exit is an event, not a poll.** ``wait_exit`` waits for the pidfd to become readable in the
  event loop: no SIGCHLD handler, no thread, no timer.
- **Our child is reaped exactly once.** Reaping goes through one ``_Child`` record per handle
  that keeps the status, so ``wait_exit`` and ``stop_process`` (or two waiters) can race and
  both see the same exit code. ``subprocess.Popen`` is used to start the child but is kept in
  that record and told the status, so its own bookkeeping never waits on a recycled pid.
- **Who the child runs as is set by Popen in the child, before exec** (user, group, extra
  groups, umask; ``credentials``): the daemon never changes its own identity.
- **No Python runs in the child unless it must,** so CPython can spawn with vfork (no copy of
  the daemon's page tables: 50 spawns took 300-450 ms with a ``preexec_fn``, 80-180 ms without,
  under load). ``no_new_privs`` is a per-thread flag the child inherits: it is set once on the
  one spawner thread that starts such services. Two steps still need the child (``_in_child``):
  joining the cgroup, which must happen before exec (a move from the daemon after exec leaves
  behind whatever the program forked first, and ``sh -c 'a & exec b'`` forks before the daemon
  gets there nearly every time), and ``nofile`` / ``core``.
- **A group is not a tree.** A descendant may ``setsid()`` out of the group, so
  ``stop_process`` also follows parentage: it snapshots the tree before signalling and keeps
  rescanning it while it waits, signalling newcomers too. The scans read ``/proc/PID/stat``
  directly: one read gives parent, group, state and start time together (psutil exposes no
  process group), at a quarter of the cost of ``psutil.process_iter`` (``proctable``).

- **Containment closes the rest.** A process that double-forks out of both the tree and the
  group between two scans would escape them, so a handle carries its containment: a cgroup
  (a stop also signals every member and ends with ``cgroup.kill``, see ``cgroup``) and the
  service name its orphans carry to the subreaper daemon (``subreaper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import msgspec

from runyard.runtime.config.identity import RunAs
from runyard.runtime.core.errors import SpawnError

from . import cgroup as cg
from .handle import ProcessHandle
from .proctable import boot_time, create_time_of, proc_table, read_stat, subtree
from .proctable import create_time as proc_create_time
from .spawning import PreparedSpawn, popen_all, prepare_spawn, spawn_error
from .sweep import FIRST_POLL, SAME_START, Sweep, empty_cgroup

__all__ = [
    "PreparedSpawn",
    "ProcessHandle",
    "SpawnError",
    "StopResult",
    "adopt",
    "descendants",
    "group_members",
    "prepare_spawn",
    "signal_group",
    "spawn",
    "spawn_prepared",
    "spawned_pids",
    "stop_process",
    "wait_exit",
]


class StopResult(msgspec.Struct, frozen=True):
    """How a stop went."""

    exit_code: int | None  # like Popen.returncode; None when unknown (adopted, or never exited)
    killed: bool  # SIGKILL was needed
    survivors: list[int]  # pids still alive even after SIGKILL and kill_timeout; normally empty
    duration: float  # seconds


class _Child:
    """The reaping state of one process we started: reaped at most once, status kept."""

    __slots__ = ("code", "pid", "popen", "reaped")

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self.popen = popen
        self.reaped = False
        self.code: int | None = None

    def try_reap(self) -> bool:
        """Reap without blocking; True once the process is reaped (by this call or before)."""
        if self.reaped:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped behind our back (SIGCHLD ignored, a stray waitpid(-1)): gone, status lost.
            self._reaped(None)
            return True
        if pid == 0:
            return False
        self._reaped(os.waitstatus_to_exitcode(status))
        return True

    def _reaped(self, code: int | None) -> None:
        self.reaped = True
        self.code = code
        if self.popen is not None:
            # Popen must never poll this pid again: the kernel may now give it to another child.
            self.popen.returncode = code if code is not None else -signal.SIGKILL
            self.popen = None


# The status lives as long as the handle spawn() returned: whoever holds it may still ask.
_children: weakref.WeakKeyDictionary[ProcessHandle, _Child] = weakref.WeakKeyDictionary()


def spawn_prepared(preps: Sequence[PreparedSpawn]) -> list[ProcessHandle | SpawnError]:
    """Popen every prepared spawn: those that need no_new_privs in ONE call to the spawner
    thread (a hop there and back cost ~0.3 ms per spawn, 50 starts paid 50 of them), the
    others on this thread. A handle or the SpawnError for each, in order."""
    popen_all(preps)
    return [_handle(prep) for prep in preps]


def _handle(prep: PreparedSpawn) -> ProcessHandle | SpawnError:
    if prep.popen is None:
        exc = prep.error or OSError("not spawned")
        error = spawn_error(exc, prep.argv[0], prep.cwd, prep.cgroup)
        error.__cause__, error.__suppress_context__ = exc, True
        return error
    popen = prep.popen
    # Popen returns after exec succeeded, so setsid() has run: the child leads its group. It is
    # not reaped yet, so its /proc entry exists even if it already exited.
    try:
        started = _started_at(popen.pid)
    except OSError as exc:  # never an unrecorded child, nor one error losing a batch's others
        with contextlib.suppress(OSError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        return spawn_error(exc, prep.argv[0], prep.cwd, prep.cgroup)
    handle = ProcessHandle(
        pid=popen.pid,
        pgid=popen.pid,
        create_time=started,
        cgroup=None if prep.cgroup is None else str(prep.cgroup),
        service=prep.service,
    )
    _children[handle] = _Child(popen.pid, popen)
    return handle


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | Path,
    stdout: int,
    stderr: int,
    keep_fds: Sequence[int] = (),
    cgroup: Path | None = None,
    service: str = "",
    rlimits: Sequence[tuple[int, int]] = (),
    run_as: RunAs | None = None,
    no_new_privileges: bool = False,
    umask: int | None = None,
) -> ProcessHandle:
    """Start ``argv`` as the leader of a new session and process group.

    stdin is /dev/null; ``stdout``/``stderr`` are file descriptors; of the daemon's descriptors
    only ``keep_fds`` are inherited. With ``cgroup``, the child joins it before it execs, so
    nothing it ever forks is outside. ``run_as`` (None: as the daemon) and ``umask`` (None: the
    daemon's) are taken by Popen in the child, ``no_new_privileges`` from the spawner thread,
    then the cgroup and ``rlimits`` (resource, value; soft = hard) in the child (``_in_child``).
    Raises ``SpawnError`` when the program cannot start. Many at once: ``prepare_spawn`` each,
    then ``spawn_prepared``.
    """
    prep = prepare_spawn(
        argv,
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        keep_fds=keep_fds,
        cgroup=cgroup,
        service=service,
        rlimits=rlimits,
        run_as=run_as,
        no_new_privileges=no_new_privileges,
        umask=umask,
    )
    (result,) = spawn_prepared([prep])
    if isinstance(result, SpawnError):
        raise result
    return result


def _started_at(pid: int) -> float:
    """The create_time of our unreaped child ``pid`` (its /proc entry outlives its exit)."""
    started = proc_create_time(pid)
    if started is None:  # not ours to lose: /proc hidden (hidepid) or not mounted
        raise OSError(f"/proc/{pid}/stat of a child not yet reaped is unreadable")
    return started


def adopt(
    pid: int, create_time: float, pgid: int, cgroup: str | None = None, service: str = ""
) -> ProcessHandle | None:
    """A handle on a process recorded before a daemon restart, or None when it is gone.

    Gone means: no such pid, a zombie, a different start time (the pid was recycled), or a
    different process group (a session leader cannot change group, so it is not ours). The
    recorded ``cgroup`` is kept when the process is still in it.
    """
    proc = read_stat(pid)
    if proc is None or abs(create_time_of(proc.start, boot_time()) - create_time) >= SAME_START:
        return None
    if proc.zombie or proc.pgid != pgid:
        return None
    if cgroup is not None and pid not in cg.members(Path(cgroup)):
        cgroup = None
    return ProcessHandle(
        pid=pid,
        pgid=pgid,
        create_time=create_time,
        own_child=False,
        cgroup=cgroup,
        service=service,
    )


async def wait_exit(handle: ProcessHandle) -> int | None:
    """Wait until the process has exited.

    For our own child: reap it and return its exit code (negative signal number for a signal
    death, like ``Popen.returncode``); every caller gets the same code. For an adopted process:
    return None, since only its parent may learn the status.
    """
    if not handle.own_child:
        pidfd = _open_pidfd(handle.pid, handle.create_time)
        if pidfd is not None:
            await _readable(pidfd)
        return None
    child = _children.get(handle)
    if child is None:  # a handle made by hand, or a copy that outlived spawn()'s
        child = _children.setdefault(handle, _Child(handle.pid))
    while not child.try_reap():
        try:
            pidfd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            continue  # gone between the two calls: the next try_reap settles it
        await _readable(pidfd)
        if not child.try_reap():
            # Readable but not yet waitable should not happen; never spin if it does.
            await asyncio.sleep(FIRST_POLL)
    return child.code


def signal_group(handle: ProcessHandle, sig: int) -> bool:
    """Send ``sig`` to the handle's process group; False when the group no longer exists."""
    try:
        os.killpg(handle.pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group ``pgid``."""
    return sorted(pid for pid, p in proc_table().items() if p.pgid == pgid and not p.zombie)


def descendants(pid: int) -> list[tuple[int, float]]:
    """(pid, create_time) of every live descendant of ``pid``, parents before their children."""
    table = proc_table()
    if pid not in table:
        return []
    boot = boot_time()
    return [
        (d, create_time_of(table[d].start, boot))
        for d in subtree(table, [pid])
        if d != pid and not table[d].zombie
    ]


async def stop_process(
    handle: ProcessHandle,
    *,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 10.0,
    kill_timeout: float = 5.0,
) -> StopResult:
    """Stop the process, its group and every descendant, wherever they moved.

    Sends ``stop_signal`` (then SIGCONT, so a stopped process can act on it), waits up to
    ``stop_timeout`` for all of them to be gone, then SIGKILLs what is left and waits up to
    ``kill_timeout`` more. Our own child is reaped on the way.
    """
    started = time.monotonic()
    leader = asyncio.ensure_future(wait_exit(handle))
    try:
        # Before any signal: a descendant may leave the group on SIGTERM.
        sweep = Sweep(handle, _unreaped(handle), spawned_pids)
        sweep.broadcast(stop_signal)
        if stop_signal not in (signal.SIGKILL, signal.SIGCONT):
            sweep.broadcast(signal.SIGCONT)
        gone = await sweep.settle(leader, stop_signal, started + stop_timeout)
        killed = not gone
        if killed:
            sweep.broadcast(signal.SIGKILL)
            gone = await sweep.settle(leader, signal.SIGKILL, time.monotonic() + kill_timeout)
        if handle.cgroup is not None:
            gone, killed = await empty_cgroup(Path(handle.cgroup), gone, killed, kill_timeout)
        survivors = [] if gone else sweep.survivors(leader.done())
        exit_code = leader.result() if leader.done() else None
    finally:
        leader.cancel()
    return StopResult(
        exit_code=exit_code,
        killed=killed,
        survivors=survivors,
        duration=time.monotonic() - started,
    )


def _unreaped(handle: ProcessHandle) -> bool:
    """Our own child, not reaped yet: its pid cannot have been recycled."""
    child = _children.get(handle)
    return child is not None and not child.reaped


def spawned_pids() -> set[int]:
    """Pids of the service processes this daemon started (which the subreaper must not reap)."""
    return {h.pid for h in list(_children)}  # a copy: the GC may drop a key meanwhile


def _open_pidfd(pid: int, create_time: float) -> int | None:
    """A pidfd on ``pid`` if it still names the process started at ``create_time``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    # The pidfd pins the process: checked after opening, the start time cannot change under us.
    started = proc_create_time(pid)
    if started is None or abs(started - create_time) >= SAME_START:
        os.close(pidfd)
        return None
    return pidfd


async def _readable(pidfd: int) -> None:
    """Wait until ``pidfd`` is readable (its process has exited), then close it."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(pidfd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
