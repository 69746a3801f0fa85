"""Log capture for supervised services, built so that output written while the daemon is down
is kept, and fast enough that logging never becomes what limits a chatty service.

    child stdout/stderr ──► FIFO temp/fifo/{svc}.out|.err ──► LogReader (asyncio, os.read 256 KiB)
                                                                │
                          ServiceLog.feed(stream, chunk) ◄──────┘
                            ├─ LineSplitter   complete lines, partial tail kept, overlong lines cut
                            ├─ LogFile        logs/{svc}/{svc}.log, one write per chunk, rotated
                            └─ LogRing        last N lines in memory, with a per-service seq

Why FIFOs and "keeper" fds: the child's stdout is the write end of a named pipe, and the child
also inherits a read end of the same pipe that it never reads. While the child lives the pipe
always has a reader, so a daemon crash never turns into SIGPIPE/EPIPE for the child; the pipe
buffer (raised to 1 MiB) fills and then the child blocks (backpressure, nothing dropped). A new
daemon opens the FIFO path again (``LogPipes.reattach``) and drains what was buffered.

Limits: a pipe lives only while some process holds it open, so a child that exits while the
daemon is down takes what it left in the buffer with it (s6 solves this with an fd-holder
process). A child that closes every fd above 2 at startup drops its keepers and is back to
SIGPIPE on a daemon crash.

The daemon's own log (``logs/runyard/daemon.log``) is set up by ``daemon_logger``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import enum
import fcntl
import logging
import logging.handlers
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

from protocol.messages import LogLine
from runtime.atomic import fsync_dir
from runtime.tree import check_name

__all__ = [
    "ChildFds",
    "LineSplitter",
    "LogFile",
    "LogLine",
    "LogPipes",
    "LogReader",
    "LogRing",
    "ReaderState",
    "ServiceLog",
    "daemon_logger",
    "format_stamp",
]

_log = logging.getLogger("runyard.logs")

STREAMS = ("out", "err")
MAX_LINE = 16 * 1024
READ_CHUNK = 256 * 1024
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


# --------------------------------------------------------------------------- FIFOs


class ChildFds(NamedTuple):
    """What the daemon hands to spawn: stdout/stderr write ends and the keeper read ends."""

    stdout: int
    stderr: int
    keep: tuple[int, ...]


def _set_pipe_size(fd: int) -> int:
    """Raise the pipe buffer to 1 MiB, or to what the kernel allows; return the size in effect."""
    if sys.platform.startswith("linux"):
        for size in (PIPE_SIZE, _pipe_max_size()):
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


# --------------------------------------------------------------------------- lines


class LineSplitter:
    """Cuts a byte stream into lines at ``\\n`` only (``\\r`` stays in the line).

    A line longer than ``max_line`` comes out as pieces of ``max_line`` bytes; no byte is dropped.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        if max_line <= 0:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._tail = b""

    @property
    def pending(self) -> int:
        """Bytes of the partial line held back."""
        return len(self._tail)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines of ``data`` (after what was held back), without ``\\n``."""
        if not data:
            return []
        parts = data.split(b"\n")
        tail = parts.pop()
        if self._tail:
            if parts:
                parts[0] = self._tail + parts[0]
            else:
                tail = self._tail + tail
        m = self.max_line
        if parts and len(data) + len(self._tail) > m and _has_long_line(data, len(self._tail), m):
            parts = [
                p[i : i + m] if len(p) > m else p for p in parts for i in range(0, len(p) or 1, m)
            ]
        if len(tail) > m:
            cut = (len(tail) - 1) // m * m  # keep a non-empty remainder of at most m bytes
            parts.extend(tail[i : i + m] for i in range(0, cut, m))
            tail = tail[cut:]
        self._tail = tail
        return parts

    def flush(self) -> bytes | None:
        """The partial line held back, as a last line (at EOF), or None."""
        tail, self._tail = self._tail, b""
        return tail or None


def _has_long_line(data: bytes, head: int, m: int) -> bool:
    """Whether a complete line of ``data`` (the first one ``head`` bytes longer) exceeds ``m``.

    Hops from line start to the last newline within ``m + 1`` bytes with ``rfind`` (memrchr):
    a few calls per chunk instead of ``max(map(len, lines))`` over thousands of lines.
    """
    pos = data.find(b"\n")
    if head + pos > m:
        return True
    last = data.rfind(b"\n")
    pos += 1
    while pos <= last:
        nl = data.rfind(b"\n", pos, pos + m + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


class LogRing:
    """The last ``maxlen`` lines of a service, numbered by a per-service counter.

    ``seq`` counts every line (also those a big chunk pushed past the ring), so a client that
    sees a gap knows lines are missing; ``tail(after_seq=...)`` backfills what is still here.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be positive")
        self.maxlen = maxlen
        self._lines: collections.deque[LogLine] = collections.deque(maxlen=maxlen)
        self._seq = 0

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def last_seq(self) -> int:
        """The seq of the last line counted (0 before the first)."""
        return self._seq

    def append_many(self, stream: str, ts: float, lines: Sequence[bytes]) -> list[LogLine]:
        """Number ``lines``, keep (at most) the last ``maxlen`` of them and return those kept."""
        n = len(lines)
        if not n:
            return []
        first = self._seq + 1
        self._seq += n
        if n > self.maxlen:
            first += n - self.maxlen
            lines = lines[-self.maxlen :]
        try:  # strict decoding is the fast path; errors="replace" costs even on clean input
            texts = list(map(bytes.decode, lines))
        except UnicodeDecodeError:
            texts = list(map(bytes.decode, lines, repeat("utf-8"), repeat("replace")))
        new = list(map(LogLine, range(first, self._seq + 1), repeat(ts), repeat(stream), texts))
        self._lines.extend(new)
        return new

    def tail(self, n: int | None = None, after_seq: int | None = None) -> list[LogLine]:
        """The last ``n`` lines (all when None) among those with ``seq > after_seq``."""
        if after_seq is None:
            lines = list(self._lines)
        elif after_seq >= self._seq:
            return []
        else:
            lines = [line for line in self._lines if line.seq > after_seq]
        if n is not None:
            lines = lines[-n:] if n > 0 else []
        return lines


# --------------------------------------------------------------------------- the file


def format_stamp(ts: float) -> bytes:
    """``2026-11-21T23:53:11.123456Z`` for a Unix time."""
    secs, us = divmod(round(ts * 1_000_000), 1_000_000)
    t = time.gmtime(secs)
    return b"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        us,
    )


class LogFile:
    """An append-only log file rotated by size: ``x.log`` → ``x.log.1`` → … → ``x.log.{backups}``.

    Each write is one ``writev`` straight to the kernel (no userspace buffer, so a daemon crash
    loses nothing already written). fsync only on rotate and close: on rotate the old file is
    fsynced and closed by a background thread, because on an SD card that can take a second and
    the event loop must not stall for it. A file never grows past ``max_bytes`` unless a single
    line is longer than that.
    """

    def __init__(self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups not negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._syncing: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            os.fchmod(fd, 0o644)  # whatever the umask
        except FileExistsError:
            fd = os.open(self.path, flags)
        self._fd = fd
        self.size = os.fstat(fd).st_size

    @property
    def closed(self) -> bool:
        return self._fd is None

    def backup_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def write_lines(self, prefix: bytes, lines: list[bytes]) -> None:
        """Append ``prefix + line + \\n`` for every line: one C-level join, one syscall."""
        joined = (b"\n" + prefix).join(lines)
        total = len(prefix) + len(joined) + 1
        if self._fd is not None and self.size + total <= self.max_bytes:
            # writev, not prefix + joined + b"\n": two more copies of a 300 KiB buffer cost
            # more than the join itself (fresh big allocations page-fault).
            written = os.writev(self._fd, (prefix, joined, b"\n"))
            self.size += written
            if written < total:  # only on a full disk or a signal; finish byte-exact
                self._write_all((prefix + joined + b"\n")[written:])
            return
        self.write(prefix + joined + b"\n")

    def write(self, blob: bytes) -> None:
        """Append complete lines (``blob`` ends with ``\\n``), rotating at line boundaries."""
        if self._fd is None:
            raise ValueError(f"{self.path}: log file is closed")
        while blob:
            room = self.max_bytes - self.size
            if len(blob) <= room:
                self._write_all(blob)
                return
            cut = blob.rfind(b"\n", 0, room) + 1 if room > 0 else 0
            if cut == 0:
                if self.size > 0:
                    self.rotate()
                    continue
                cut = blob.find(b"\n") + 1 or len(blob)  # one line bigger than a whole file
            self._write_all(blob[:cut])
            blob = blob[cut:]
            if blob:
                self.rotate()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        """Start a fresh file now, shifting the backups (the oldest is dropped)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: log file is closed")
        if self.backups == 0:
            os.ftruncate(self._fd, 0)
            self.size = 0
            return
        old, self._fd = self._fd, None
        try:
            for i in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.backup_path(i), self.backup_path(i + 1))
            os.replace(self.path, self.backup_path(1))
        finally:
            self._open()
            # Bound the backlog: a disk slower than the log waits here, not in a growing queue.
            while len(self._syncing) >= 2:
                self._syncing.popleft().result()
            self._syncing.append(_sync_executor().submit(_sync_and_close, old, self.path.parent))

    def flush(self) -> None:
        """Nothing to do: every write already reached the kernel (kept for a file-like API)."""

    def close(self) -> None:
        """fsync and close; also waits for the fsync of files rotated away."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        while self._syncing:
            self._syncing.popleft().result()


_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _sync_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="runyard-logsync")
    return _executor


def _sync_and_close(fd: int, directory: Path) -> None:
    try:
        os.fsync(fd)
        fsync_dir(directory)
    except OSError as exc:
        _log.error("fsync of a rotated log in %s failed: %s", directory, exc)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- one service


class ServiceLog:
    """The captured output of one service: splitters per stream, the rotated file, the ring."""

    def __init__(
        self,
        service: str,
        logs_dir: Path,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        ring_lines: int = 1000,
        max_line: int = MAX_LINE,
    ) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        self.service = service
        self.path = Path(logs_dir) / service / f"{service}.log"
        self.file = LogFile(self.path, max_bytes=max_bytes, backups=backups)
        self.ring = LogRing(ring_lines)
        self._splitters = {s: LineSplitter(max_line) for s in STREAMS}
        self._tags = {s: b" " + s.encode() + b" " for s in STREAMS}
        self.write_errors = 0

    def feed(self, stream: str, data: bytes, ts: float | None = None) -> list[LogLine]:
        """Take one chunk read from ``stream``; return the new lines as the ring keeps them."""
        lines = self._splitters[stream].feed(data)
        if not lines:
            return []
        return self._record(stream, lines, time.time() if ts is None else ts)

    def eof(self, stream: str, ts: float | None = None) -> list[LogLine]:
        """The stream ended: its partial last line becomes a line."""
        tail = self._splitters[stream].flush()
        if tail is None:
            return []
        return self._record(stream, [tail], time.time() if ts is None else ts)

    def _record(self, stream: str, lines: list[bytes], ts: float) -> list[LogLine]:
        # Every line of a chunk shares one prefix, so the file side is a single C-level join.
        prefix = format_stamp(ts) + self._tags[stream]
        try:
            self.file.write_lines(prefix, lines)
        except OSError as exc:  # disk full, I/O error: keep capturing, the ring still has them
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                _log.error(
                    "%s: cannot write %s (%d failed writes): %s",
                    self.service,
                    self.path,
                    self.write_errors,
                    exc,
                )
        return self.ring.append_many(stream, ts, lines)

    def flush(self) -> None:
        """Writes already reached the kernel; unterminated lines stay held back for their end."""
        self.file.flush()

    def close(self) -> None:
        """Write what is held back of unterminated lines, then fsync and close the file."""
        if self.file.closed:
            return
        for stream in STREAMS:
            self.eof(stream)
        self.file.close()


# --------------------------------------------------------------------------- asyncio side


#: How long a wake-up waits before reading, so a busy writer's output is read in big chunks.
BATCH_DELAY = 0.001
#: Reads per batch at most (each up to READ_CHUNK) before the loop serves others again.
MAX_READS_PER_BATCH = 8


class ReaderState(enum.Enum):
    IDLE = "idle"  # not attached yet
    READING = "reading"  # at least one stream can still deliver
    EOF = "eof"  # both streams ended: no writer is left
    DETACHED = "detached"  # stopped by the daemon; the fds stay open in LogPipes


class LogReader:
    """Reads a service's FIFOs on an asyncio loop into its ServiceLog.

    ``LogReader().attach(loop, pipes, log, on_lines)``; ``on_lines`` gets the new lines of each
    read (one call per read, batched). ``LogLine`` is the wire type of ``protocol.messages``.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: dict[str, int] = {}
        self._batches: dict[str, asyncio.TimerHandle] = {}
        self.state = ReaderState.IDLE

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        pipes: LogPipes,
        log: ServiceLog,
        on_lines: Callable[[list[LogLine]], None],
    ) -> LogReader:
        """Start reading ``pipes`` (read ends open: after ``prepare`` or ``reattach``)."""
        if self.state is not ReaderState.IDLE:
            raise RuntimeError("a LogReader is attached once; make a new one")
        self._loop = loop
        self.pipes = pipes
        self.log = log
        self._on_lines = on_lines
        self._fds = dict(zip(STREAMS, pipes.read_fds, strict=True))
        self.state = ReaderState.READING
        for stream, fd in self._fds.items():
            loop.add_reader(fd, self._readable, stream)
            # One read now: a FIFO reopened after its writers are gone reports no POLLHUP to a
            # new reader, so without this probe a reattach to a dead child would never see EOF.
            loop.call_soon(self._read_once, stream)
        return self

    def _readable(self, stream: str) -> None:
        """Data is waiting: read it a moment later, in one batch. A writer going flat out then
        fills the pipe meanwhile and we take it in big reads, instead of waking (and making the
        writer wait on us) every few lines; a quiet service's line shows up BATCH_DELAY later."""
        assert self._loop is not None
        fd = self._fds.get(stream)
        if fd is None or stream in self._batches:
            return
        self._loop.remove_reader(fd)
        self._batches[stream] = self._loop.call_later(BATCH_DELAY, self._read_batch, stream)

    def _read_batch(self, stream: str) -> None:
        assert self._loop is not None
        self._batches.pop(stream, None)
        for _ in range(MAX_READS_PER_BATCH):
            if not self._read_once(stream):
                break
        fd = self._fds.get(stream)
        if fd is not None and self.state is ReaderState.READING:
            self._loop.add_reader(fd, self._readable, stream)

    def _read_once(self, stream: str) -> bool:
        """One os.read on ``stream``; False when nothing more is to be had right now."""
        fd = self._fds.get(stream)
        if fd is None:
            return False
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError as exc:
            _log.error("%s: reading %s failed: %s", self.log.service, stream, exc)
            data = b""
        if not data:
            self._end(stream)
            lines = self.log.eof(stream)
        else:
            lines = self.log.feed(stream, data)
        if lines:
            try:
                self._on_lines(lines)
            except Exception:
                _log.exception("%s: log line callback failed", self.log.service)
        return bool(data)

    def _end(self, stream: str) -> None:
        assert self._loop is not None
        fd = self._fds.pop(stream)
        self._loop.remove_reader(fd)
        if not self._fds:
            self.state = ReaderState.EOF

    async def drain(self, timeout: float) -> bool:
        """Read everything still buffered (call after the process exited, before reporting it).

        True when every stream was read up to EAGAIN or EOF, False when ``timeout`` ran out
        (a grandchild still writing flat out).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for stream in STREAMS:
            while self._read_once(stream):
                if loop.time() > deadline:
                    return False
                await asyncio.sleep(0)
        return True

    def detach(self) -> None:
        """Stop reading; the fds stay open (``LogPipes.close`` closes them)."""
        if self._loop is not None:
            for fd in self._fds.values():
                self._loop.remove_reader(fd)
        for handle in self._batches.values():
            handle.cancel()
        self._batches.clear()
        self._fds.clear()
        if self.state in (ReaderState.IDLE, ReaderState.READING):
            self.state = ReaderState.DETACHED


# --------------------------------------------------------------------------- the daemon's own log


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def daemon_logger(logs_dir: Path, level: int = logging.INFO) -> logging.Logger:
    """The ``runyard`` logger, writing to ``logs/runyard/daemon.log`` (10 MiB × 3 backups).

    Idempotent: a second call replaces the handler it installed before.
    """
    log_dir = Path(logs_dir) / "runyard"
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("runyard")
    for old in [h for h in logger.handlers if getattr(h, "_runyard_daemon_log", False)]:
        logger.removeHandler(old)
        old.close()
    handler = logging.handlers.RotatingFileHandler(
        log_dir / "daemon.log", maxBytes=10 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._runyard_daemon_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger
