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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
from pathlib import Path
from typing import NamedTuple

from runyard.runtime.core.tree import check_name

__all__ = ["PIPE_SIZE", "STREAMS", "ChildFds", "LogPipes"]

STREAMS = ("out", "err")
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


class ChildFds(NamedTuple):
    """What the daemon hands to spawn: stdout/stderr write ends and the keeper read ends."""

    stdout: int
    stderr: int
    keep: tuple[int, ...]


def _set_pipe_size(fd: int) -> int:
    """Raise the pipe buffer to 1 MiB, or to what the kernel allows; return the size in effect.
    /proc/sys/fs/pipe-max-size is read only when 1 MiB is refused (it was read for every pipe,
    two per start, before trying: ~11 us each on a quiet box, 1 ms per 50 starts)."""
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
        with contextlib.suppress(OSError):
            return fcntl.fcntl(fd, _F_GETPIPE_SZ)
    return 0


def _pipe_max_size() -> int:
    try:
        return min(int(Path("/proc/sys/fs/pipe-max-size").read_text()), PIPE_SIZE)
    except (OSError, ValueError):
        return 0


class LogPipes:
    """The two FIFOs of one service and the fds opened on them.

    The daemon keeps the non-blocking read ends; ``prepare`` also opens, for one spawn, the
    write ends (the child's stdout/stderr) and the keeper read ends the child inherits.
    """

    def __init__(self, fifo_dir: Path, service: str) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        self.fifo_dir = Path(fifo_dir)
        self.service = service
        self._read: dict[str, int] = {}
        self._child: list[int] = []
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
        self.fifo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.fifo_dir, 0o700)
        ends: dict[str, tuple[int, int]] = {}
        try:
            for stream in STREAMS:
                path = self._path(stream)
                _ensure_fifo(path)
                kept = self._read.get(stream)
                if kept is not None and not _same_file(kept, path):
                    # The FIFO was replaced under us: a read end on the old one reads nothing.
                    del self._read[stream]
                    os.close(kept)
                if stream not in self._read:
                    # A read end first: opening a FIFO O_WRONLY|O_NONBLOCK fails (ENXIO) without one.
                    self._read[stream] = _open_fifo(path, os.O_RDONLY | os.O_NONBLOCK)
                write = _open_fifo(path, os.O_WRONLY | os.O_NONBLOCK)
                self._child.append(write)
                # Children expect a blocking stdout; a full pipe then blocks them, never EAGAIN.
                os.set_blocking(write, True)
                keeper = _open_fifo(path, os.O_RDONLY | os.O_NONBLOCK)
                self._child.append(keeper)
                self.pipe_size = _set_pipe_size(write)
                ends[stream] = (write, keeper)
        except BaseException:
            self.close_child_fds()
            raise
        return ChildFds(ends["out"][0], ends["err"][0], (ends["out"][1], ends["err"][1]))

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

    def close(self) -> None:
        """Close every fd this object holds. Detach any LogReader first."""
        self.close_child_fds()
        fds, self._read = list(self._read.values()), {}
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

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
