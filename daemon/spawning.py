"""A spawn in two steps, so that many cost one trip to the spawner thread.

``prepare_spawn`` does on the daemon's thread what needs no child: it opens the service's
``cgroup.procs``, takes the credentials and picks how the child joins its cgroup (the shell step
of ``cgroup_join``, or ``_in_child``). ``popen_all`` then runs the Popen calls of a whole
scheduling pass: those that need ``no_new_privs`` in one call to the one spawner thread that set
it on itself (the flag is per thread and the child inherits it), the others on the calling
thread. One hop there and back cost ~0.3 ms: 50 starts paid it 50 times (issue 16).
``process`` turns each result into a handle (``spawn_prepared``) or a one-line SpawnError.
"""

from __future__ import annotations

import functools
import os
import resource
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import BrokenExecutor as BrokenThreadPool
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runyard.runtime.config.identity import RunAs
from runyard.runtime.core.errors import SpawnError
from runyard.runtime.core.nofile import children_nofile

from .cgroup_join import check_program, join_argv, shell_keeps, shell_usable
from .credentials import child_credentials, set_no_new_privs

__all__ = ["PreparedSpawn", "popen_all", "prepare_spawn", "spawn_error"]


@functools.cache
def _nnp_thread() -> ThreadPoolExecutor:
    """One thread with PR_SET_NO_NEW_PRIVS set: every process it spawns inherits the flag."""
    return ThreadPoolExecutor(1, thread_name_prefix="spawn-nnp", initializer=set_no_new_privs)


def _in_child(
    procs: int | None, rlimits: Sequence[tuple[int, int]], nofile: int | None = None
) -> Callable[[], None] | None:
    """The child's own steps between fork and exec, after Popen took the user and group, or None
    (then CPython may vfork). One write(2) of ``0`` to ``procs``, the ``cgroup.procs`` the daemon
    opened (the kernel checks the opener's credentials): the child is in its cgroup before the
    program runs, so nothing it forks is ever outside (a move after exec leaves what it forked
    first behind: ``sh -c 'a & exec b'`` did, nearly every time). Then setrlimit, soft = hard:
    prlimit from the daemon would need CAP_SYS_RESOURCE for another user's process, which
    containers drop. ``nofile``: the soft RLIMIT_NOFILE the daemon had before it raised its own
    (runtime/core/nofile.py), given back."""
    if procs is None and not rlimits and nofile is None:
        return None

    def in_child() -> None:
        if procs is not None:
            os.write(procs, b"0")
        if nofile is not None:
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))
        for res, value in rlimits:
            resource.setrlimit(res, (value, value))

    return in_child


def _joining(
    argv: list[str],
    env: dict[str, str],
    cwd: str | Path,
    procs: int | None,
    rlimits: Sequence[tuple[int, int]],
    credentials: dict[str, Any],
) -> tuple[list[str], int, Callable[[], None] | None]:
    """(command, stdin, the child's step or None): a service that needs no other child step
    joins its cgroup, and gets the daemon's old soft RLIMIT_NOFILE back, through the shell step
    of ``cgroup_join`` (so CPython may vfork); raises the OSError execve would give for a
    program it could not run."""
    own = any(res == resource.RLIMIT_NOFILE for res, _value in rlimits)
    nofile = None if own else children_nofile()
    if nofile is not None:  # never above the hard limit (lowered from outside since the raise)
        nofile = min(nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    shell = shell_usable() and shell_keeps(env)
    stepped = procs is not None or nofile is not None
    if stepped and shell and not rlimits and "user" not in credentials:
        check_program(argv[0], env, cwd)
        stdin = subprocess.DEVNULL if procs is None else procs
        return join_argv(argv, env, join=procs is not None, nofile=nofile), stdin, None
    return argv, subprocess.DEVNULL, _in_child(procs, rlimits, nofile)


def _open_procs(cgroup: Path, program: str) -> int:
    """The daemon's descriptor on ``cgroup.procs`` that the child writes itself into."""
    try:
        return os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpawnError(f"cannot start {program!r} in cgroup {cgroup}: {reason}") from exc


def spawn_error(exc: Exception, program: str, cwd: str | Path, cgroup: Path | None) -> SpawnError:
    """One line for what stopped a spawn."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
            reason += f" (working directory {os.fspath(cwd)!r})"
        return SpawnError(f"cannot start {program!r}: {reason}")
    if isinstance(exc, subprocess.SubprocessError):  # the child's step failed (cgroup, rlimit)
        where = f" in cgroup {cgroup}" if cgroup is not None else ""
        return SpawnError(f"cannot start {program!r}{where}: {exc}")
    return SpawnError(f"cannot start {program!r}: {exc}")  # a NUL byte in argv, env or cwd


class PreparedSpawn:
    """One spawn between its preparation (the daemon's thread: cgroup.procs opened, command
    and credentials taken, the program checked) and its Popen (``spawn_prepared``)."""

    __slots__ = (
        "argv",
        "cgroup",
        "command",
        "cwd",
        "error",
        "nnp",
        "options",
        "popen",
        "procs",
        "service",
    )

    def __init__(self, argv: list[str], cwd: str | Path, cgroup: Path | None) -> None:
        self.argv, self.cwd, self.cgroup = argv, cwd, cgroup
        self.command: list[str] = argv
        self.options: dict[str, Any] = {}
        self.nnp = False
        self.procs: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.error: Exception | None = None
        self.service = ""  # the name its orphans carry (subreaper)

    def run(self) -> None:
        """The Popen call, on whichever thread gives the child the right no_new_privs."""
        try:
            self.popen = subprocess.Popen(self.command, **self.options)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.error = exc

    def close(self) -> None:
        if self.procs is not None:
            os.close(self.procs)
            self.procs = None


def prepare_spawn(
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
) -> PreparedSpawn:
    """What ``spawn`` does before its Popen; raises ``SpawnError`` as it does. The caller
    hands it to ``spawn_prepared`` (which closes what it opened)."""
    if not argv:
        raise SpawnError("cannot start a process from an empty command line")
    prep = PreparedSpawn(argv, cwd, cgroup)
    prep.procs = None if cgroup is None else _open_procs(cgroup, argv[0])
    try:
        credentials = child_credentials(run_as, umask=umask)
        prep.command, stdin, in_child = _joining(argv, env, cwd, prep.procs, rlimits, credentials)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        prep.close()
        raise spawn_error(exc, argv[0], cwd, cgroup) from exc
    except BaseException:
        prep.close()
        raise
    prep.nnp, prep.service = no_new_privileges, service
    prep.options = dict(
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(keep_fds),
        start_new_session=True,
        close_fds=True,
        preexec_fn=in_child,
        **credentials,
    )
    return prep


def _run_all(preps: Sequence[PreparedSpawn]) -> None:
    for prep in preps:
        prep.run()


def popen_all(preps: Sequence[PreparedSpawn]) -> None:
    """Popen every prepared spawn: those that need no_new_privs in ONE call to the spawner
    thread, the others on this thread; then close what their preparation opened."""
    nnp = [p for p in preps if p.nnp]
    try:
        if nnp:
            try:
                _nnp_thread().submit(_run_all, nnp).result()
            except BrokenThreadPool as exc:
                for prep in nnp:
                    prep.error = OSError(f"cannot set no_new_privileges ({exc})")
        _run_all([p for p in preps if not p.nnp])
    finally:
        for prep in preps:
            prep.close()
