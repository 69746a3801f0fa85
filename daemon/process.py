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
- **A group is not a tree.** A descendant may ``setsid()`` out of the group, so
  ``stop_process`` also follows parentage: it snapshots the tree before signalling and keeps
  rescanning it while it waits, signalling newcomers too. The scans read ``/proc/PID/stat``
  directly: one read gives parent, group, state and start time together (psutil exposes no
  process group), at a quarter of the cost of ``psutil.process_iter`` (``proctable``).

Limit: a process that double-forks out of both the tree and the group between two scans
(5 to 100 ms apart) escapes; only a cgroup would close that hole.
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
from dataclasses import dataclass
from pathlib import Path

import psutil

from runyard.runtime.config.identity import RunAs
from runyard.runtime.core.errors import SpawnError

from .credentials import child_credentials
from .proctable import TABLE_MAX_AGE, Proc, create_time_of, proc_table, read_stat, subtree

__all__ = [
    "ProcessHandle",
    "SpawnError",
    "StopResult",
    "adopt",
    "descendants",
    "group_members",
    "signal_group",
    "spawn",
    "stop_process",
    "wait_exit",
]

# Two readings of one process's create_time may differ by float rounding (and psutil adds the
# boot time, re-read each call); a recycled pid starts at least one clock tick (10 ms) later.
_SAME_START = 0.01
_FIRST_POLL = 0.005
_MAX_POLL = 0.1


@dataclass(frozen=True)
class ProcessHandle:
    """One started (or re-adopted) process and the group it leads."""

    pid: int
    pgid: int
    create_time: float  # psutil create_time: tells this process from a later one with its pid
    own_child: bool = True  # False once re-adopted after a daemon restart: we cannot waitpid it


@dataclass(frozen=True)
class StopResult:
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


def spawn(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: str | Path,
    stdout: int,
    stderr: int,
    keep_fds: Sequence[int] = (),
    run_as: RunAs | None = None,
    no_new_privileges: bool = False,
    umask: int | None = None,
) -> ProcessHandle:
    """Start ``argv`` as the leader of a new session and process group.

    stdin is /dev/null; ``stdout``/``stderr`` are file descriptors; of the daemon's descriptors
    only ``keep_fds`` are inherited. ``run_as`` (None: as the daemon), ``no_new_privileges``
    and ``umask`` (None: the daemon's) are taken in the child before exec. Raises
    ``SpawnError`` when the program cannot be started.
    """
    if not argv:
        raise SpawnError("cannot start a process from an empty command line")
    try:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=tuple(keep_fds),
            start_new_session=True,
            close_fds=True,
            **child_credentials(run_as, no_new_privileges=no_new_privileges, umask=umask),
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
            reason += f" (working directory {os.fspath(cwd)!r})"
        raise SpawnError(f"cannot start {argv[0]!r}: {reason}") from exc
    except ValueError as exc:  # an embedded NUL byte in argv, env or cwd
        raise SpawnError(f"cannot start {argv[0]!r}: {exc}") from exc
    except subprocess.SubprocessError as exc:  # the no_new_privs prctl failed in the child
        raise SpawnError(f"cannot start {argv[0]!r}: {exc}") from exc
    # Popen returns after exec succeeded, so setsid() has run: the child leads its group. It is
    # not reaped yet, so its /proc entry exists even if it already exited.
    handle = ProcessHandle(
        pid=popen.pid, pgid=popen.pid, create_time=psutil.Process(popen.pid).create_time()
    )
    _children[handle] = _Child(popen.pid, popen)
    return handle


def adopt(pid: int, create_time: float, pgid: int) -> ProcessHandle | None:
    """A handle on a process recorded before a daemon restart, or None when it is gone.

    Gone means: no such pid, a zombie, a different start time (the pid was recycled), or a
    different process group (a session leader cannot change group, so it is not ours).
    """
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) >= _SAME_START:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE or os.getpgid(pid) != pgid:
            return None
    except (psutil.Error, ProcessLookupError):
        return None
    return ProcessHandle(pid=pid, pgid=pgid, create_time=create_time, own_child=False)


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
            await asyncio.sleep(_FIRST_POLL)
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
    boot = psutil.boot_time()
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
        sweep = _Sweep(handle)  # before any signal: a descendant may leave the group on SIGTERM
        sweep.broadcast(stop_signal)
        if stop_signal not in (signal.SIGKILL, signal.SIGCONT):
            sweep.broadcast(signal.SIGCONT)
        gone = await sweep.settle(leader, stop_signal, started + stop_timeout)
        killed = not gone
        if killed:
            sweep.broadcast(signal.SIGKILL)
            gone = await sweep.settle(leader, signal.SIGKILL, time.monotonic() + kill_timeout)
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


class _Sweep:
    """What one stop must see gone: the leader's group and its tree, tracked by start time."""

    def __init__(self, handle: ProcessHandle) -> None:
        self.handle = handle
        self.tracked: dict[int, int] = {}  # pid -> start ticks
        table = proc_table(TABLE_MAX_AGE)
        leader = table.get(handle.pid)
        child = _children.get(handle)
        if leader is None:
            self.leader_start: int | None = None
        elif child is not None and not child.reaped:
            self.leader_start = leader.start  # our unreaped child: the pid cannot be recycled
        elif (
            abs(create_time_of(leader.start, psutil.boot_time()) - handle.create_time) < _SAME_START
        ):
            self.leader_start = leader.start
        else:  # the pid was recycled: never follow a stranger's children
            self.leader_start = None
        self._discover(table)

    def broadcast(self, sig: int) -> None:
        """``sig`` to the group, and one by one to every tracked process outside it."""
        with contextlib.suppress(PermissionError):  # not one member is ours to signal
            signal_group(self.handle, sig)
        table = proc_table(TABLE_MAX_AGE)
        for pid, start in self.tracked.items():
            p = table.get(pid)
            if p is not None and p.start == start and p.pgid != self.handle.pgid:
                _signal_exact(pid, start, sig)

    async def settle(self, leader: asyncio.Future[int | None], sig: int, deadline: float) -> bool:
        """Wait until everything is gone (True) or the deadline passes (False).

        Processes that appear meanwhile are tracked and sent ``sig``: they missed the broadcast.
        """
        delay = _FIRST_POLL
        while True:
            table = proc_table(TABLE_MAX_AGE)
            for pid, start in self._discover(table):
                _signal_exact(pid, start, sig)
                if sig not in (signal.SIGKILL, signal.SIGCONT):
                    _signal_exact(pid, start, signal.SIGCONT)
            if leader.done() and not self._alive(table):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if leader.done():
                await asyncio.sleep(min(delay, remaining))
            else:  # wakes at once when the leader exits
                await asyncio.wait((leader,), timeout=min(delay, remaining))
            delay = min(delay * 2, _MAX_POLL)

    def survivors(self, leader_gone: bool) -> list[int]:
        alive = set(self._alive(proc_table()))
        if not leader_gone:
            alive.add(self.handle.pid)
        return sorted(alive)

    def _discover(self, table: dict[int, Proc]) -> list[tuple[int, int]]:
        """Track the group and the trees below the leader, the group and every tracked process.

        Returns the processes tracked for the first time.
        """
        roots = [pid for pid, p in table.items() if p.pgid == self.handle.pgid]
        roots += [pid for pid in self.tracked if self._is_live(table, pid)]
        leader = table.get(self.handle.pid)
        if leader is not None and leader.start == self.leader_start:
            roots.append(self.handle.pid)
        new = []
        for pid in subtree(table, roots):
            p = table[pid]
            if pid == self.handle.pid or p.zombie or self.tracked.get(pid) == p.start:
                continue
            self.tracked[pid] = p.start
            new.append((pid, p.start))
        return new

    def _alive(self, table: dict[int, Proc]) -> list[int]:
        alive = [pid for pid in self.tracked if self._is_live(table, pid)]
        alive += [
            pid
            for pid, p in table.items()
            if p.pgid == self.handle.pgid and not p.zombie and pid not in self.tracked
        ]
        return alive

    def _is_live(self, table: dict[int, Proc], pid: int) -> bool:
        p = table.get(pid)
        return p is not None and not p.zombie and p.start == self.tracked[pid]


def _open_pidfd(pid: int, create_time: float) -> int | None:
    """A pidfd on ``pid`` if it still names the process started at ``create_time``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    # The pidfd pins the process: checked after opening, the start time cannot change under us.
    try:
        same = abs(psutil.Process(pid).create_time() - create_time) < _SAME_START
    except psutil.Error:
        same = False
    if not same:
        os.close(pidfd)
        return None
    return pidfd


def _signal_exact(pid: int, start: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        p = read_stat(pid)
        if p is None or p.start != start:
            return False
        signal.pidfd_send_signal(pidfd, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        os.close(pidfd)


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
