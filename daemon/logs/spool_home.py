"""Where a tree's log spools live: a private directory on tmpfs, or the tree's ``temp/fifo``.

Why tmpfs: every byte a service writes passes through its spool (spool.py) before its log
file. On the tree's disk file system that is one more page-cache copy that the kernel also
writes back to the disk (every log byte hit the disk twice, and an ``os.sync()`` between two
floods cost a third of the throughput); on tmpfs it is RAM that is compacted away as soon as
it is written to the log. The spool only has to outlive the daemon, not the machine: a reboot
ends the services whose output it holds, so RAM is enough.

The directory is ``/dev/shm/runyard-{uid}-{digest}``, the digest being sha256 of the tree's
real path: a daemon started after a ``kill -9`` finds the very spools its predecessor left.
``/dev/shm`` is writable by everyone, so the directory is trusted only if it is a real
directory (not a symlink), owned by the daemon's uid and closed to everyone else (0700);
otherwise the daemon says why in one line and keeps its spools in ``temp/fifo`` (on disk, as
before). It also falls back when ``/dev/shm`` is not a tmpfs. A file ``tree`` inside names the
tree, so a daemon starting removes the directories of trees that no longer exist
(``sweep_orphans``): spools of a deleted tree would otherwise hold RAM until the next reboot.
Never a directory a live daemon uses: it holds a shared ``flock`` on ``tree`` for its life,
since its tree may be out of the sweeping daemon's sight (another mount namespace, a private
``/tmp``, a tree moved while its daemon runs) and only the path was judged before. A tree moved
or renamed keeps its spools: ``spool-home`` in its ``temp/fifo`` names the directory its last
daemon used, taken over when that directory's tree is gone (``_take_over_moved``).

RAM bound: a spool is compacted once the service's pipe is drained (spool.py), so an idle
service holds only its unfinished last line (less than 16 KiB per stream); one writing flat
out holds at most about 2 MiB per stream (the 1 MiB compaction threshold plus one read).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from runyard.runtime.core.digest import sha256
from runyard.runtime.core.locking import lock_fd

__all__ = [
    "TMPFS",
    "check_private_dir",
    "remove_if_empty",
    "spool_home",
    "sweep_orphans",
    "tmpfs_spool_dir",
]

#: The tmpfs the spools go to when it is usable.
TMPFS = Path("/dev/shm")
_TREE_FILE = "tree"
#: In the fallback directory: the name of the tmpfs one its tree last used.
_HOME_FILE = "spool-home"
#: The spool directories this process holds (their ``tree`` file, locked shared).
_held: dict[Path, int] = {}


def tmpfs_spool_dir(tree_root: Path, tmpfs: Path = TMPFS) -> Path:
    """The tmpfs spool directory of the tree at ``tree_root`` (fixed by uid and real path)."""
    digest = sha256(os.fsencode(os.path.realpath(tree_root))).hexdigest()[:20]
    return tmpfs / f"runyard-{os.geteuid()}-{digest}"


def is_tmpfs(path: Path) -> bool:
    """Whether ``path`` is the mount point of a tmpfs (read from /proc/self/mounts)."""
    target = os.path.realpath(path)
    fstype = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == target:
                fstype = fields[2]  # the last mount on a point is the one in effect
    return fstype == "tmpfs"


def check_private_dir(path: Path) -> str:
    """'' when ``path`` is a directory we own that nobody else may enter, else why not."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink, not a directory"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()})"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return ""


def spool_home(tree_root: Path, fallback: Path, tmpfs: Path = TMPFS) -> tuple[Path, str]:
    """The spool directory of the tree at ``tree_root`` and, when it is ``fallback``, why the
    tmpfs one could not be used ('' when it is the tmpfs one)."""
    if not is_tmpfs(tmpfs):
        return fallback, f"{tmpfs} is not a tmpfs"
    try:
        mode = os.stat(tmpfs).st_mode
    except OSError as exc:
        return fallback, f"{tmpfs}: {exc.strerror or exc}"
    if mode & 0o022 and not mode & stat.S_ISVTX:  # the checks below hold only if sticky
        return fallback, f"{tmpfs} is writable by others without the sticky bit"
    path = tmpfs_spool_dir(tree_root, tmpfs)
    _take_over_moved(path, fallback, tmpfs)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return fallback, f"cannot create {path}: {exc.strerror or exc}"
    problem = check_private_dir(path)
    if problem:
        return fallback, problem
    tree_file = path / _TREE_FILE
    want = os.fsencode(os.path.realpath(tree_root))
    try:
        fd = _hold(tree_file)
        if os.pread(fd, len(want) + 1, 0) != want:
            os.ftruncate(fd, 0)
            os.pwrite(fd, want, 0)
    except OSError as exc:
        return fallback, f"cannot write {tree_file}: {exc.strerror or exc}"
    _record_home(path, fallback)
    return path, ""


def _take_over_moved(path: Path, fallback: Path, tmpfs: Path) -> None:
    """A tree moved or renamed keeps its spools: ``fallback`` (temp/fifo, which moved with it)
    names the directory its last daemon used, and when that one's tree is gone (moved, not
    copied) and no live daemon holds it, it is renamed to ours."""
    try:
        name = (fallback / _HOME_FILE).read_text().strip()
    except (OSError, UnicodeError):
        return
    old = tmpfs / name
    if "/" in name or not name.startswith(f"runyard-{os.geteuid()}-") or old == path:
        return
    if os.path.lexists(path) or check_private_dir(old):
        return
    try:
        fd = os.open(old / _TREE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if lock_fd(fd, timeout=0) and _gone(os.fsdecode(os.pread(fd, 1 << 16, 0))):
            os.rename(old, path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _record_home(path: Path, fallback: Path) -> None:
    """Name ``path`` in ``fallback`` for ``_take_over_moved`` (temp file, then rename)."""
    home = fallback / _HOME_FILE
    with contextlib.suppress(OSError):
        if home.read_text() == path.name:
            return
    temp = fallback / f".{_HOME_FILE}.{os.getpid()}"
    try:
        temp.write_text(path.name)
        os.replace(temp, home)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()


def _hold(tree_file: Path) -> int:
    """Open ``tree_file`` and hold a shared lock on it for the rest of this daemon's life (or
    until ``remove_if_empty``): the sweep of any daemon leaves a held directory alone."""
    for _ in range(3):
        fd = os.open(tree_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            lock_fd(fd, shared=True)  # waits only while a sweep removes it
            if os.fstat(fd).st_nlink:
                old = _held.pop(tree_file.parent, None)
                _held[tree_file.parent] = fd
                if old is not None:
                    os.close(old)
                return fd
            with contextlib.suppress(FileExistsError):  # swept meanwhile: made again
                os.mkdir(tree_file.parent, 0o700)
            problem = check_private_dir(tree_file.parent)
            if problem:
                raise OSError(problem)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(f"{tree_file} keeps being removed")


def sweep_orphans(tmpfs: Path = TMPFS) -> list[Path]:
    """Remove our spool directories whose tree is gone; returns what was removed."""
    prefix = f"runyard-{os.geteuid()}-"
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(tmpfs) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        path = tmpfs / name
        if check_private_dir(path):
            continue  # not ours to judge, nor to remove
        try:
            fd = os.open(path / _TREE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # being made right now, or not one of ours
        try:
            # Held by a live daemon: its tree may just be out of our sight (another mount
            # namespace, a private /tmp, moved while it runs). Locked, no daemon takes it now.
            if not lock_fd(fd, timeout=0):
                continue
            tree = os.fsdecode(os.pread(fd, 1 << 16, 0))
            if tree and _gone(tree):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _gone(tree: str) -> bool:
    """Only "no such file" says a tree is gone: a lookup that fails otherwise (a stale network
    mount, a directory we may not search) says nothing about it."""
    try:
        os.lstat(tree)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def remove_if_empty(path: Path, fallback: Path) -> None:
    """At a clean shutdown: drop the tmpfs directory once no spool is left in it."""
    if path == fallback:
        return
    held = _held.pop(path, None)
    if held is not None:
        os.close(held)
    with contextlib.suppress(OSError):
        if set(os.listdir(path)) <= {_TREE_FILE}:
            shutil.rmtree(path)
