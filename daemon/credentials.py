"""The child's side of who a service runs as: its credentials, no_new_privs, umask, and the
ownership of the directories the daemon makes for it.

Why it is built this way:

- **Popen does the dropping.** ``subprocess.Popen(user=, group=, extra_groups=, umask=)`` runs
  in the forked child, in C: setgroups, setregid, setreuid, in that order (groups while still
  root, the uid last, since after it nothing can be changed back), then exec. Hand-written
  ``preexec_fn`` code would do the same with more to get wrong; ``extra_groups=[]`` also clears
  the daemon's own supplementary groups (setgroups(0)), so a child of root keeps no group 0.
  Nothing is passed when the service runs as the daemon itself: no call that could fail.
- **no_new_privs is the one thing Popen lacks,** and it needs no code in the child: the flag
  belongs to a thread and is inherited by what it forks, so ``set_no_new_privs`` runs once on
  the daemon's spawner thread (``spawning._nnp_thread``) and every service spawned from there
  has it, and everything it execs: no setuid binary or file capability gives the service back
  what it lost. No ``preexec_fn`` means CPython may vfork (a spawn copies none of the daemon's
  page tables); a change of user still forks, in C.
- **The daemon keeps the log files and FIFOs open itself**: the child inherits file
  descriptors, never a path, so a service running as ``nobody`` writes its output through
  a FIFO it could not open. Its data directory and log files are chowned to it (log files in
  daemon/logs/logfile.py); the binaries under bin/ never are: a service must not be able to
  change what it runs.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from pathlib import Path
from typing import Any

from runyard.runtime.config.identity import RunAs

__all__ = ["child_credentials", "own_data_dir", "runs_as_other", "set_no_new_privs"]

_PR_SET_NO_NEW_PRIVS = 38
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def set_no_new_privs() -> None:
    """On the calling thread (the spawner's): an error fails the spawns that need it, never
    starts a service with privileges."""
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def child_credentials(run_as: RunAs | None, *, umask: int | None) -> dict[str, Any]:
    """The keyword arguments of ``subprocess.Popen`` that give the child its identity
    (PR_SET_NO_NEW_PRIVS comes from the spawner thread: ``set_no_new_privs``)."""
    kwargs: dict[str, Any] = {}
    if run_as is not None and _differs(run_as):
        kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=list(run_as.groups))
    if umask is not None:
        kwargs["umask"] = umask
    return kwargs


def runs_as_other(run_as: RunAs | None) -> bool:
    """Whether a service with ``run_as`` runs as someone other than the daemon."""
    return run_as is not None and _differs(run_as)


def _differs(run_as: RunAs) -> bool:
    own = (os.geteuid(), os.getegid(), tuple(sorted(set(os.getgroups()))))
    return (run_as.uid, run_as.gid, run_as.groups) != own


def own_data_dir(cwd: str | Path, data_dir: Path, run_as: RunAs | None) -> None:
    """Make the service's working directory; below data/, it and the directories made for it
    belong to the service's user (a directory that was root's, from before a ``user`` was set,
    is handed over too; what is inside is left alone). Elsewhere it is only made."""
    path = Path(cwd)
    made = []
    if not os.path.isdir(path):  # there already (every start but the first): one stat
        for parent in itertools.chain((path,), path.parents):
            if parent.exists() or parent == data_dir:
                break
            made.append(parent)
        os.makedirs(path, exist_ok=True)
    if run_as is None or os.geteuid() != 0:
        return  # only root can give a directory away (and a service of a user runs as it)
    if path == data_dir or not _below(os.fspath(path), os.fspath(data_dir)):
        return
    for d in [path, *made]:
        st = os.lstat(d)
        if (st.st_uid, st.st_gid) != (run_as.uid, run_as.gid):
            os.lchown(d, run_as.uid, run_as.gid)


def _below(path: str, directory: str) -> bool:
    """``Path(path).is_relative_to(directory)`` for two normalised absolute paths, without
    pathlib's parse of both (a start of 50 services made 50 of them)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)
