"""Into a service's cgroup before its program runs, with no Python in the child.

The child must be in its cgroup before the program's first instruction: what a program forks
before a move from outside stays behind (``sh -c 'a & exec b'`` left ``a`` outside nearly every
time). A ``preexec_fn`` does it, but makes CPython fork (the daemon's page tables copied, Python's
fork handlers run) instead of vfork. So a service that needs nothing else in the child is
started through one ``/bin/sh`` step instead: ``echo 0`` into the ``cgroup.procs`` descriptor the
daemon opened and gave as stdin (the kernel checked the daemon's credentials at open), then
``exec`` the program with /dev/null as stdin, in the same process. vfork + two execs costs less than one fork of the daemon.

What a direct ``execve`` would have refused, the daemon checks first (``check_program``), so a
missing, non-executable or foreign file is still a one-line ``SpawnError``: ``sh`` would run a
file it cannot exec (ENOEXEC) as a shell script, a binary built for another machine included.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import re
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SHELL", "check_program", "join_argv", "shell_keeps", "shell_usable"]

SHELL = "/bin/sh"
#: ``platform.machine()`` -> the ELF e_machine values this kernel runs.
_MACHINES = {
    "x86_64": {62, 3},
    "i686": {3},
    "aarch64": {183, 40},
    "armv7l": {40},
    "riscv64": {243},
    "ppc64le": {21},
    "s390x": {22},
}
#: What dash passes on unchanged: it drops an environment entry whose name is not a shell name
#: (``a.b``, ``1X``, ``A-B``) and sets these on start-up (PWD is put back by the step itself).
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_SETS = frozenset({"PPID", "OPTIND", "IFS"})
#: Exit code of the step when the cgroup refused the write, or the open files limit could not be
#: set (the reason is on the service's stderr).
JOIN_FAILED = 125


@functools.cache
def shell_usable() -> bool:
    return os.access(SHELL, os.X_OK)


def shell_keeps(env: Mapping[str, str]) -> bool:
    """Whether the program gets ``env`` unchanged through the shell step (else the child step)."""
    return all(_SHELL_NAME.fullmatch(name) for name in env) and not _SHELL_SETS & env.keys()


def join_argv(
    argv: list[str], env: Mapping[str, str], *, join: bool = True, nofile: int | None = None
) -> list[str]:
    """``argv`` run after the shell step wrote ``0`` (itself) to its stdin, which the caller
    makes the ``cgroup.procs`` descriptor (fd 0: dash takes no two-digit fd in a redirection);
    the program gets /dev/null as stdin, as every service does, and the environment it was
    given (``shell_keeps``): dash exports a PWD of its own (the cwd's, even over a PWD the env
    had), so the env's PWD is put back, or PWD taken out when ``env`` had none. ``join=False``:
    no cgroup (stdin is /dev/null already). ``nofile``: the soft RLIMIT_NOFILE the program gets
    (the daemon's before it raised its own, runtime/core/nofile.py)."""
    step = (
        (
            "echo 0 >&0 2>/dev/null || "
            f"{{ echo 'runyard: cannot join the cgroup' >&2; exit {JOIN_FAILED}; }}; "
            if join
            else ""
        )
        + (
            f"ulimit -S -n {int(nofile)} || "
            f"{{ echo 'runyard: cannot set the open files limit' >&2; exit {JOIN_FAILED}; }}; "
            if nofile is not None
            else ""
        )
        + (f"PWD={shlex.quote(env['PWD'])}; export PWD; " if "PWD" in env else "unset PWD; ")
        # no PATH in env: dash would search its own default, not Popen's os.defpath (unexported)
        + ("" if "PATH" in env else f"PATH={shlex.quote(os.defpath)}; ")
        + ('exec "$0" "$@" </dev/null' if join else 'exec "$0" "$@"')
    )
    return [SHELL, "-c", step, *argv]


def check_program(program: str, env: Mapping[str, str], cwd: str | Path) -> None:
    """Raise the OSError execve would give for ``program`` (ENOENT, EACCES, ENOEXEC)."""
    if "/" in program:
        path = os.path.join(os.fspath(cwd), program)
    else:
        found = _search(program, env, cwd)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        path = found
    try:  # one stat for os.path.exists and os.path.isfile
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program) from None
    if not stat.S_ISREG(mode) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    try:
        head = _head(path)  # the kernel reads a #! line up to 256 bytes
    except OSError as exc:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program) from exc
    if head.startswith(b"#!"):
        _check_interpreter(head, program, cwd)
        return
    if head.startswith(b"\x7fELF") and len(head) >= 20 and _runs_here(head):
        return
    raise OSError(errno.ENOEXEC, "Exec format error (not a program for this machine)", program)


def _head(path: str) -> bytes:
    """The first 256 bytes of ``path`` (fewer in a shorter file), without a file object."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = b""
        while len(head) < 256:
            chunk = os.read(fd, 256 - len(head))
            if not chunk:
                break
            head += chunk
        return head
    finally:
        os.close(fd)


def _check_interpreter(head: bytes, program: str, cwd: str | Path) -> None:
    """execve gives ENOENT for a script whose #! interpreter is missing (sh would run it and
    exit 127); one level, as most scripts need."""
    words = head[2:].split(b"\n", 1)[0].split()
    if not words:
        raise OSError(errno.ENOEXEC, "Exec format error (an empty #! line)", program)
    interpreter = os.path.join(os.fsencode(cwd), words[0])
    if not os.path.exists(interpreter):
        reason = f"{os.strerror(errno.ENOENT)} (its interpreter {os.fsdecode(words[0])})"
        raise FileNotFoundError(errno.ENOENT, reason, program)
    if not os.path.isfile(interpreter) or not os.access(interpreter, os.X_OK):
        reason = f"{os.strerror(errno.EACCES)} (its interpreter {os.fsdecode(words[0])})"
        raise PermissionError(errno.EACCES, reason, program)


def _search(program: str, env: Mapping[str, str], cwd: str | Path) -> str | None:
    """The file execvpe (and the shell) runs for ``program``: PATH as Popen takes it, a relative
    or empty entry from the service's cwd (not the daemon's, as ``shutil.which`` would)."""
    for entry in _path(env).split(os.pathsep):
        path = os.path.join(os.fspath(cwd), entry, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _path(env: Mapping[str, str]) -> str:
    return env.get("PATH", os.defpath)


def _runs_here(head: bytes) -> bool:
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    allowed = _MACHINES.get(platform.machine())
    return allowed is None or machine in allowed
