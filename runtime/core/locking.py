"""Advisory file locks (flock): the one place Runyard takes them.

Every lock between processes goes through ``FileLock`` (tests/test_locking.py holds that no
other module calls ``fcntl.flock`` or ``lockf``):

- ``tree_lock(tree, name)``: ``temp/locks/<name>.lock`` of a tree, blocking; serialises an
  install, a fetch, the manifest, the cache index, a bundle prefix;
- an installed version's ``install_lock``: exclusive while ``ensure`` installs it and while
  ``runtime remove`` checks that nothing uses it and removes it; shared, tried once, while the
  daemon spawns from it (``install_hold``), so no start slips between that check and the
  removal, and none reads a half-installed or half-removed directory;
- the daemon's ``temp/daemon.lock``: non-blocking, with the holder's pid written in it, so a
  second daemon says which one runs (s6: a second supervisor on the same directory exits);
- a staging dir's ``.lock`` (runs/layout.py): non-blocking, held while its builder lives, so a
  sweeper removes only the dirs of dead builders;
- the audit log itself (audit.py), locked through the fd it appends with (``lock_fd``);
- the wheel cache's ``.lock`` (bundle/wheels.py), blocking.

Why flock: the kernel releases it when the holder dies (a crashed ``ensure`` or a SIGKILLed
daemon never leaves a stale lock behind). It belongs to the open file description, which a
child inheriting the fd would share and keep alive after we die: every lock fd here is
``O_CLOEXEC``, so no service or engine we exec ever holds one of our locks. How long to wait is the caller's choice: ``timeout=None``
blocks, ``0`` tries once, a number of seconds polls until then; a lock not had is ``LockBusy``,
one line naming the file and, when the holder wrote it, its pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.runtime.core.errors import LockBusy

if TYPE_CHECKING:
    from runyard.runtime.core.tree import RuntimeTree

__all__ = ["FileLock", "LockBusy", "install_hold", "install_lock", "lock_fd", "tree_lock"]

#: Longest pause between two tries of a lock waited for with a timeout.
_POLL_MAX = 0.05


def lock_fd(fd: int, *, shared: bool = False, timeout: float | None = None) -> bool:
    """flock the open file ``fd``: True once held, False when it was not had in time."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if timeout is None:
        fcntl.flock(fd, op)
        return True
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))  # flock has no timeout of its own
            pause = min(pause * 2, _POLL_MAX)


def _set_mode(fd: int, mode: int) -> None:
    """Give a lock file of ours ``mode``: open(2) takes the umask off it, so root with umask
    077 would make a 0600 lock the daemon (run as the tree's owner) cannot open."""
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
        with contextlib.suppress(OSError):  # a file system that keeps no modes
            os.fchmod(fd, mode)


class FileLock:
    """A flock on ``path`` (created when missing), held from ``acquire`` until ``release``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        shared: bool = False,
        timeout: float | None = None,
        mode: int = 0o600,
        record_holder: bool = False,
    ) -> None:
        self.path = Path(path)
        self.shared = shared
        self.timeout = timeout
        self.mode = mode
        #: Write our pid into the file once held, for the message of whoever finds it busy.
        self.record_holder = record_holder
        self.fd: int | None = None

    def acquire(self) -> FileLock:
        """Hold the lock, or raise LockBusy (OSError when the file cannot be opened)."""
        flags = os.O_CREAT | os.O_CLOEXEC
        try:  # NFS emulates flock with fcntl locks: an exclusive one needs a write descriptor
            fd = os.open(self.path, os.O_RDWR | flags, self.mode)
        except OSError as exc:
            # flock needs no write access here: a file another user made (0644) can be locked.
            if self.record_holder or exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            fd = os.open(self.path, os.O_RDONLY | flags, self.mode)
        try:
            _set_mode(fd, self.mode)
            held = lock_fd(fd, shared=self.shared, timeout=self.timeout)
            if not held:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or None
                raise LockBusy(self.path, holder, self.timeout)
            if self.record_holder:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def try_acquire(self) -> bool:
        """Hold the lock if it is free now; False (and nothing held) when it is not."""
        timeout, self.timeout = self.timeout, 0
        try:
            self.acquire()
            return True
        except LockBusy:
            return False
        finally:
            self.timeout = timeout

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last fd of the description releases the flock
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def tree_lock(tree: RuntimeTree, name: str, *, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``name`` of ``tree`` (``temp/locks/<name>.lock``) in the block.

    The file is 0644 (temp/ is 0700: nobody else reaches it): a command run as root makes
    a lock the daemon, run as the tree's owner, can still open and take."""
    locks = tree.temp_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{name}.lock", timeout=timeout, mode=0o644):
        yield


def install_lock(name: str, version: str, platform: str) -> str:
    """The ``tree_lock`` name of one installed version (``bin/NAME/VERSION/PLATFORM/``)."""
    return f"install-{name}-{version}-{platform}"


def install_hold(tree: RuntimeTree, name: str, version: str, platform: str) -> FileLock | None:
    """The install lock of ``name`` ``version``, held shared, or None when an install or a
    removal holds it now. Tried once: the daemon's loop never waits on a flock. A lock file
    this process cannot open (made 0600 by a command run as another user) does not stop a
    start: the lock comes back unheld, as before there was one (tree_lock makes them 0644,
    so only a file older than that is one). No ``platform`` (a service not from the
    manifest): nothing to hold, the lock comes back unheld."""
    path = tree.temp_dir / "locks" / f"{install_lock(name, version, platform)}.lock"
    lock = FileLock(path, shared=True, mode=0o644)
    if not platform:
        return lock
    try:
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        return lock if lock.try_acquire() else None
    except OSError:
        return lock
