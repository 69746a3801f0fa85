"""The two FIFOs of a service (``temp/fifo/{svc}.out|.err``) and the fds opened on them.

Why FIFOs and "keeper" fds: the child's stdout is the write end of a named pipe, and the child
also inherits a read end of the same pipe that it never reads. While the child lives the pipe
always has a reader, so a daemon crash never turns into SIGPIPE/EPIPE for the child; the pipe
buffer (raised to 1 MiB) fills and then the child blocks (backpressure, nothing dropped). A new
daemon opens the FIFO path again (``LogPipes.reattach``) and drains what was buffered.

Limits: a pipe lives only while some process holds it open, so a child that exits while the
daemon is down takes what it left in the buffer with it (s6 solves this with an fd-holder
process). A child that closes every fd above 2 at startup drops its keepers and is back to
SIGPIPE on a daemon crash.

The pipe quota (``PipeBudget``): the kernel counts every pipe's pages against the user that
made it, and for a process without CAP_SYS_RESOURCE or CAP_SYS_ADMIN (``pipe_is_unprivileged_user``
in fs/pipe.c) a new pipe gets 16 pages only while the user's pages plus 16 stay within
``pipe-user-pages-soft`` (16384 pages), else 2 (8 KiB), in every process of that user, the
services' own pipes included; a raise is refused past that limit or ``pipe-user-pages-hard``
(0, none, by default), past which no pipe is made at all (ENFILE; a FIFO's open ENOMEM).
Shrinking a pipe gives its pages back (EBUSY while it holds more). So an unprivileged daemon
raises its pipes only within two bounds:

- its own budget, half the lower of the two limits: by default the first 16 services' FIFOs
  (32 pipes of 1 MiB), in start order; later ones stay at 64 KiB, a hot stream (``LogReader``)
  is raised if the budget still allows, and closing a service's read ends gives its share back;
- the user's pages, all its processes' (another daemon of the user, a shell's pipes), as the
  kernel counts them: no file says it, a trial raise shows it. ``leaves_room(size)`` raises a
  1-page "gauge" pipe to ``size`` and back (two fcntls, ~2 us), which the kernel allows only
  while the user has ``size`` pages to spare. A raise is kept only if the user could still
  raise one more like it (1 MiB: room for 15 new 64 KiB pipes), and a ``prepare`` that made new
  FIFOs asks ``make_room``: while the user has no such room, our raised pipes go back to 64
  KiB, newest first. A failed trial leaves the budget ``squeezed``: no raise tried (nor paid,
  the hot stream's neither) for ``SQUEEZE_SECS``, or until one of our services closes its read
  ends; then the next raise tries again (a trial decides: at most one raise and shrink every
  10 s at the edge). No trial where the kernel does not limit us (exempt, or no limit set).

A gauge, not a fresh probe pipe (~3 us): a fresh pipe shows only whether 16 pages are left.
Limits: the user's pages are looked at only when we raise or make FIFOs (a process of the
user that grows later takes the room until then); for a trial's two fcntls the gauge holds
``size`` pages (a pipe made in those microseconds with just that room left gets 8 KiB); a
raised pipe holding more than 64 KiB is not given back; past about 500 services a daemon's
FIFOs alone (16 pages each, unraised) reach the soft limit. A privileged daemon (root with its
capabilities) is exempt and raises every FIFO.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from runyard.runtime.core.tree import check_name

__all__ = [
    "DEFAULT_PIPE_SIZE",
    "PIPE_SIZE",
    "STREAMS",
    "ChildFds",
    "LogPipes",
    "PipeBudget",
    "enlarge_pipe",
    "pipe_budget",
    "pipe_size",
]

STREAMS = ("out", "err")
PIPE_SIZE = 1024 * 1024
_PAGE = os.sysconf("SC_PAGESIZE")
#: A new pipe's size (the kernel's PIPE_DEF_BUFFERS pages): a bigger pipe was raised.
DEFAULT_PIPE_SIZE = 16 * _PAGE
_CAP_SYS_ADMIN, _CAP_SYS_RESOURCE = 21, 24
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: A trial's errors that mean the user has no pages to spare.
_NO_ROOM = frozenset({errno.EPERM, errno.ENFILE, errno.ENOMEM})
#: How long a budget stays ``squeezed`` (no raise tried) after the user was short of pages.
SQUEEZE_SECS = 10.0
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class ChildFds(NamedTuple):
    """What the daemon hands to spawn: stdout/stderr write ends and the keeper read ends."""

    stdout: int
    stderr: int
    keep: tuple[int, ...]


def enlarge_pipe(fd: int) -> int:
    """Raise the pipe buffer to 1 MiB, or to what the kernel allows; return the size in effect.

    Never an error: a refusal (EPERM over pipe-max-size or the per-user quota,
    pipe-user-pages-soft, for an unprivileged daemon) leaves the pipe as it was.
    /proc/sys/fs/pipe-max-size is read only when 1 MiB is refused (it was read for every pipe,
    two per start, before trying: ~11 us each on a quiet box, 1 ms per 50 starts).
    """
    if sys.platform.startswith("linux"):
        for size in (PIPE_SIZE, None):
            if size is None:
                size = _pipe_max_size()
            if size <= 0:
                continue
            try:
                return fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
            except OSError:  # EPERM above pipe-max-size or the per-user quota; EBUSY
                continue
    return pipe_size(fd)


def pipe_size(fd: int) -> int:
    """The buffer size of the pipe ``fd`` is an end of (0 where that cannot be asked)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    return 0


def _pipe_max_size() -> int:
    try:
        return min(int(Path("/proc/sys/fs/pipe-max-size").read_text()), PIPE_SIZE)
    except (OSError, ValueError):
        return 0


class PipeBudget:
    """The pages that the raised pipes of this process may hold together (``pages``; None: no
    limit), and what they hold (``used``). A raise takes its pages first (``try_take``), so
    the budget is never overrun; a pipe's actual size is booked with ``adjust``. The user's
    other pages: ``leaves_room``, ``make_room``, ``squeezed`` (the module's docstring)."""

    def __init__(self, pages: int | None) -> None:
        self.pages = pages
        self.used = 0
        self._squeezed_until = 0.0  # monotonic; see ``squeezed``
        self.trials = 0  # gauge raises tried (the tests count them)
        self.given_back = 0  # raised pipes shrunk to make room for the user
        self._raised: dict[tuple[LogPipes, str], int] = {}  # size by pipe, in raise order
        self._gauge: int | None = None
        self._lock = threading.Lock()  # the daemon's thread today; cheap insurance

    @property
    def squeezed(self) -> bool:
        """The user was short of pages: no raise is tried, and no trial paid, for
        ``SQUEEZE_SECS`` (then one raise tries again: a trial decides) or until one of our
        services gives its pipes back (set False)."""
        return self._squeezed_until > time.monotonic()

    @squeezed.setter
    def squeezed(self, value: bool) -> None:
        self._squeezed_until = time.monotonic() + SQUEEZE_SECS if value else 0.0

    @classmethod
    def of_this_process(cls) -> PipeBudget:
        """No limit for a process the kernel exempts, or with no quota set; else half of the
        lower of pipe-user-pages-soft and -hard (0 there: that limit is off)."""
        if _exempt_from_pipe_quota():
            return cls(None)
        limits = [n for n in map(_read_sysctl, ("soft", "hard")) if n > 0]
        return cls(min(limits) // 2 if limits else None)

    def try_take(self, pages: int) -> bool:
        with self._lock:
            if self.pages is not None and self.used + pages > self.pages:
                return False
            self.used += pages
            return True

    def adjust(self, pages: int) -> None:
        """Book ``pages`` more (fewer when negative), whatever the budget says: they are held."""
        with self._lock:
            self.used += pages

    def hold(self, pipes: LogPipes, stream: str, size: int) -> None:
        """``pipes``' ``stream`` is a pipe of ``size`` bytes (0: closed); a raised one can be
        given back by ``make_room``. None kept where the kernel sets no limit on us: nothing is
        ever given back there, and a list of every raised pipe cost each start a copy of it."""
        if self.pages is None:
            return
        key = (pipes, stream)
        if size <= DEFAULT_PIPE_SIZE:
            self._raised.pop(key, None)
        elif self._raised.get(key) != size:
            self._raised.pop(key, None)
            self._raised[key] = size  # raised now, or to another size: the newest

    def leaves_room(self, size: int) -> bool:
        """Whether the user (all its processes) could still raise a pipe to ``size`` bytes:
        the kernel takes the 1-page gauge to ``size`` only while the user's pages, less the
        gauge's page, plus ``size``'s stay within pipe-user-pages-soft and -hard. True, with
        no system call, where there is no limit."""
        if self.pages is None:
            return True
        self.trials += 1
        try:
            if self._gauge is None:
                self._gauge = _new_gauge()
            fcntl.fcntl(self._gauge, _F_SETPIPE_SZ, size)
        except OSError as exc:
            # EPERM: no room; a gauge not made over the hard limit (ENFILE) or for want of
            # memory: none either. Anything else (EMFILE: the daemon out of descriptors) says
            # nothing about the user's pages: no cause to give our pipes back.
            return exc.errno not in _NO_ROOM
        with contextlib.suppress(OSError):  # an empty pipe always shrinks
            fcntl.fcntl(self._gauge, _F_SETPIPE_SZ, _PAGE)
        return True

    def make_room(self) -> None:
        """Shrink our raised pipes to 64 KiB, newest first, until the user could raise one
        more like them (a pipe holding more than 64 KiB stays: EBUSY)."""
        if self.pages is None:
            return
        for (pipes, stream), size in reversed(list(self._raised.items())):
            if self.leaves_room(size):
                return
            self.squeezed = True
            if pipes.shrink(stream) <= DEFAULT_PIPE_SIZE:
                self.given_back += 1


def _new_gauge() -> int:
    """A pipe's read end (its write end closed at once), shrunk to the 1-page minimum."""
    read, write = os.pipe()
    os.close(write)
    with contextlib.suppress(OSError):
        fcntl.fcntl(read, _F_SETPIPE_SZ, _PAGE)
    return read


@functools.cache
def pipe_budget() -> PipeBudget:
    """This process's budget (the kernel's quota is per user; the daemon is one process)."""
    return PipeBudget.of_this_process()


def _exempt_from_pipe_quota() -> bool:
    """CAP_SYS_RESOURCE or CAP_SYS_ADMIN effective, counted only in the initial user namespace
    (the kernel asks ``capable()``, which a namespace's own root does not pass)."""
    try:
        status = Path("/proc/self/status").read_text()
        uid_map = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    caps = 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
    wanted = 1 << _CAP_SYS_RESOURCE | 1 << _CAP_SYS_ADMIN
    return uid_map == ["0", "0", "4294967295"] and bool(caps & wanted)


def _read_sysctl(which: str) -> int:
    try:
        return int(Path(f"/proc/sys/fs/pipe-user-pages-{which}").read_text())
    except (OSError, ValueError):
        return 0


def _charge(size: int) -> int:
    """The pages a pipe of ``size`` bytes holds of the budget: a raised pipe's whole size."""
    return size // _PAGE if size > DEFAULT_PIPE_SIZE else 0


class LogPipes:
    """The two FIFOs of one service and the fds opened on them.

    The daemon keeps the non-blocking read ends; ``prepare`` also opens, for one spawn, the
    write ends (the child's stdout/stderr) and the keeper read ends the child inherits. Each
    open read end's pipe holds its share of ``pipe_budget()`` until the read end is closed.
    """

    def __init__(self, fifo_dir: Path, service: str) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        self.fifo_dir = Path(fifo_dir)
        self.service = service
        self._read: dict[str, int] = {}
        self._child: list[int] = []
        self._charged: dict[str, int] = {}  # pages of pipe_budget() held, by stream
        self.pipe_size = 0

    def __repr__(self) -> str:
        return f"LogPipes({str(self.fifo_dir)!r}, {self.service!r})"

    @property
    def out_path(self) -> Path:
        return self.fifo_dir / f"{self.service}.out"

    @property
    def err_path(self) -> Path:
        return self.fifo_dir / f"{self.service}.err"

    def _path(self, stream: str) -> Path:
        return self.out_path if stream == "out" else self.err_path

    @property
    def read_fds(self) -> tuple[int, int]:
        """The daemon's read ends (out, err); ValueError when they are not open."""
        try:
            return self._read["out"], self._read["err"]
        except KeyError:
            raise ValueError(f"{self!r}: read ends are not open") from None

    def prepare(self) -> ChildFds:
        """Create the FIFOs when missing and open every end a spawn needs.

        Read ends already open (a respawn) are kept, so nothing still buffered is dropped.
        """
        self.close_child_fds()
        if not os.path.isdir(self.fifo_dir):  # one stat, not a failing mkdir and a stat
            self.fifo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.fifo_dir, 0o700)
        ends: dict[str, tuple[int, int]] = {}
        fresh = False
        try:
            for stream in STREAMS:
                path = self._path(stream)
                _ensure_fifo(path)
                kept = self._read.get(stream)
                if kept is not None and not _same_file(kept, path):
                    # The FIFO was replaced under us: a read end on the old one reads nothing.
                    self._close_read(stream)
                if stream not in self._read:
                    # A read end first: opening a FIFO O_WRONLY|O_NONBLOCK fails (ENXIO) without one.
                    self._read[stream] = _open_fifo(path, os.O_RDONLY | os.O_NONBLOCK)
                    fresh = True
                write = _open_fifo(path, os.O_WRONLY | os.O_NONBLOCK)
                self._child.append(write)
                # Children expect a blocking stdout; a full pipe then blocks them, never EAGAIN.
                os.set_blocking(write, True)
                keeper = _open_fifo(path, os.O_RDONLY | os.O_NONBLOCK)
                self._child.append(keeper)
                self.pipe_size = self.enlarge(stream)
                ends[stream] = (write, keeper)
        except BaseException:
            self.close_child_fds()
            raise
        if fresh:  # new pipes took the user's pages: ours yield if it is short now
            pipe_budget().make_room()
        return ChildFds(ends["out"][0], ends["err"][0], (ends["out"][1], ends["err"][1]))

    def enlarge(self, stream: str) -> int:
        """Raise ``stream``'s pipe to 1 MiB if ``pipe_budget()`` allows; the size in effect."""
        fd = self._read[stream]
        size = pipe_size(fd)
        self._book(stream, size)  # what it holds already (a pipe an earlier daemon raised)
        budget = pipe_budget()
        wanted = _charge(PIPE_SIZE) - self._charged.get(stream, 0)
        if size < PIPE_SIZE and not budget.squeezed and budget.try_take(wanted):
            self._charged[stream] = _charge(PIPE_SIZE)
            size = enlarge_pipe(fd)
            self._book(stream, size)  # a refusal (or pipe-max-size) gives back the rest
            if not _charge(size) or not budget.leaves_room(size):
                budget.squeezed = True  # the user is short of pages: ours yield
                size = self.shrink(stream)
        return size

    def shrink(self, stream: str) -> int:
        """Take ``stream``'s pipe back to 64 KiB (not when it holds more); the size in effect."""
        fd = self._read[stream]
        if pipe_size(fd) > DEFAULT_PIPE_SIZE:
            with contextlib.suppress(OSError):  # EBUSY: more than 64 KiB waits in it
                fcntl.fcntl(fd, _F_SETPIPE_SZ, DEFAULT_PIPE_SIZE)
        size = pipe_size(fd)
        self._book(stream, size)
        return size

    def _book(self, stream: str, size: int) -> None:
        """``stream``'s pipe is now ``size`` bytes (0: its read end is closed)."""
        pages = _charge(size)
        budget = pipe_budget()
        budget.adjust(pages - self._charged.pop(stream, 0))
        budget.hold(self, stream, size)
        if pages:
            self._charged[stream] = pages

    def _close_read(self, stream: str) -> None:
        fd = self._read.pop(stream)
        self._book(stream, 0)
        pipe_budget().squeezed = False  # pages given back: a raise may be tried again
        with contextlib.suppress(OSError):
            os.close(fd)

    def close_child_fds(self) -> None:
        """Close the daemon's copies of the write and keeper ends (call right after spawn)."""
        fds, self._child = self._child, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def reattach(self) -> None:
        """Open the read ends again after a daemon restart, without becoming a writer.

        FileNotFoundError when a FIFO is missing (nothing was left running to reattach to).
        """
        for stream in STREAMS:
            if stream in self._read:
                continue
            path = self._path(stream)
            fd = _open_fifo(path, os.O_RDONLY | os.O_NONBLOCK)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                raise ValueError(f"{path} is not a FIFO")
            self._read[stream] = fd
            # A pipe the previous daemon raised is held whatever our budget says: counted.
            self._book(stream, pipe_size(fd))

    def close(self) -> None:
        """Close every fd this object holds. Detach any LogReader first."""
        self.close_child_fds()
        for stream in list(self._read):
            self._close_read(stream)

    def remove(self) -> None:
        """Unlink the FIFOs (a child still holding them keeps its pipe until it exits)."""
        for path in (self.out_path, self.err_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _ensure_fifo(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISFIFO(st.st_mode):
            return
        path.unlink()  # a stale file or symlink where our FIFO belongs
    os.mkfifo(path, 0o600)
    os.chmod(path, 0o600)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_fifo(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
