"""``LogReader``: the asyncio side, reading a service's FIFOs in batches into its ServiceLog.

A stream is read in one of two modes (``StreamMode``). A quiet stream waits in the loop's
epoll for data (readiness), then is read ``BATCH_DELAY`` later in one batch. A hot stream (a
read came back with ``HOT_READ`` or more) leaves epoll and is read on a timer every
``POLL_INTERVAL``, taking everything the pipe holds, until a read comes back under
``COOL_READ``. Why: on Linux 6.x a pipe that was ever polled runs its readers' wait queue on
every write, so while the fd sits in an epoll set every ``write`` of a line-buffered child
pays the epoll callback, and wakes the daemon's core when it sleeps; with no waiter on the
pipe a write is nearly free. A child writing one 100-byte line per ``write`` into a 1 MiB pipe
read with plain reads: 317 MB/s read as before, 381 MB/s on a 1 ms timer (a probe; the bench's
figures are in docs/ARCHITECTURE.md). A hot
stream's pipe is raised to 1 MiB (``LogPipes.enlarge``) if it is smaller and the daemon's pipe
budget allows (an unprivileged daemon with many services, see ``fifo``), so a timer period
does not fill it; a quiet one is left as it is.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence

from runyard.protocol.messages import LogLine

from .fifo import PIPE_SIZE, STREAMS, LogPipes, pipe_size
from .service_log import ServiceLog

__all__ = [
    "BATCH_DELAY",
    "COOL_READ",
    "HOT_READ",
    "MAX_READS_PER_BATCH",
    "POLL_INTERVAL",
    "READ_CHUNK",
    "LogReader",
    "ReaderState",
    "StreamMode",
]

_log = logging.getLogger("runyard.logs")

#: Bytes asked of each take: a full 1 MiB pipe in one read.
READ_CHUNK = 1024 * 1024
#: How long a wake-up waits before reading, so a busy writer's output is read in big chunks.
BATCH_DELAY = 0.001
#: Reads per batch at most (each up to READ_CHUNK) before the loop serves others again: one
#: read of a full pipe takes a millisecond or two, and a `status` call must not wait longer.
MAX_READS_PER_BATCH = 1
#: A read at least this big says the writer is ahead of us: the next batch comes at the next
#: turn of the loop, with no delay (the pipe is full again by then). Half the pipe at most.
FULL_READ = 256 * 1024
#: A read at least this big makes a stream hot: read on a timer, out of epoll.
HOT_READ = 32 * 1024
#: A hot stream's read smaller than this sends it back to readiness (epoll).
COOL_READ = 4 * 1024
#: A hot stream's period: its lines reach the file within about this (plus one read's work).
POLL_INTERVAL = 0.001


class ReaderState(enum.Enum):
    IDLE = "idle"  # not attached yet
    READING = "reading"  # at least one stream can still deliver
    EOF = "eof"  # both streams ended: no writer is left
    DETACHED = "detached"  # stopped by the daemon; the fds stay open in LogPipes


class StreamMode(enum.Enum):
    READY = "ready"  # in the loop's epoll, read BATCH_DELAY after it reports data
    HOT = "hot"  # out of epoll, read every POLL_INTERVAL until a read comes back small


class LogReader:
    """Reads a service's FIFOs on an asyncio loop into its ServiceLog.

    ``LogReader().attach(loop, pipes, log, on_lines)``; ``on_lines`` gets the new lines of each
    read (one call per read, batched). ``LogLine`` is the wire type of ``protocol.messages``.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: dict[str, int] = {}
        self._batches: dict[str, asyncio.Handle] = {}
        self._full: dict[str, int] = {}
        self.state = ReaderState.IDLE
        self.modes = dict.fromkeys(STREAMS, StreamMode.READY)
        #: Switches to HOT and back to READY so far (tests count them).
        self.heated = 0
        self.cooled = 0

    def attach(
        self,
        loop: asyncio.AbstractEventLoop,
        pipes: LogPipes,
        log: ServiceLog,
        on_lines: Callable[[Sequence[LogLine]], None],
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
            self._full[stream] = _full_read(pipe_size(fd))
            # One read first, then epoll (the batch's end registers the fd, or keeps a hot one
            # on the timer): a FIFO reopened after its writers are gone reports no POLLHUP to a
            # new reader, so without this probe a reattach to a dead child would never see EOF.
            # A batch, so that what the probe drains is compacted in the spool like any read.
            self._batches[stream] = loop.call_soon(self._read_batch, stream)
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

    def _read_batch(self, stream: str, chasing: bool = False) -> None:
        """One batch; ``chasing``: it follows a full read at once, so a small read says
        nothing about the writer's pace (it had no time to write), and cools nothing."""
        assert self._loop is not None
        self._batches.pop(stream, None)
        size = 0
        for _ in range(MAX_READS_PER_BATCH):
            size = self.log.last_read if self._read_once(stream) else 0
            if size < self._full[stream]:
                break
        fd = self._fds.get(stream)
        if fd is None or self.state is not ReaderState.READING:
            return
        hot = self.modes[stream] is StreamMode.HOT
        if not hot and size >= HOT_READ:
            hot = self._heat(stream, fd)
        if size >= self._full[stream]:  # more is waiting: read it after whatever else is ready
            self._batches[stream] = self._loop.call_soon(self._read_batch, stream, True)
        elif hot and (chasing or size >= COOL_READ):
            self._batches[stream] = self._loop.call_later(POLL_INTERVAL, self._read_batch, stream)
        else:
            if hot:
                self.modes[stream] = StreamMode.READY
                self.cooled += 1
            self.log.drained(stream)
            self._loop.add_reader(fd, self._readable, stream)

    def _heat(self, stream: str, fd: int) -> bool:
        """``stream`` goes hot (out of epoll: it is read on a timer, nothing waits on the pipe);
        its pipe is raised to 1 MiB first if it is smaller (within the daemon's pipe budget),
        so a period does not fill it."""
        self.modes[stream] = StreamMode.HOT
        self.heated += 1
        if pipe_size(fd) < PIPE_SIZE:
            self._full[stream] = _full_read(self.pipes.enlarge(stream))
        return True

    def _read_once(self, stream: str) -> bool:
        """One take on ``stream``; False when nothing more is to be had right now."""
        fd = self._fds.get(stream)
        if fd is None:
            return False
        try:
            lines = self.log.take(stream, fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            _log.error("%s: reading %s failed: %s", self.log.service, stream, exc)
            lines = None
        ended = lines is None
        if ended:
            self._end(stream)
            lines = self.log.eof(stream)
        if lines:
            try:
                self._on_lines(lines)
            except Exception:
                _log.exception("%s: log line callback failed", self.log.service)
        return not ended

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


def _full_read(size: int) -> int:
    """A read this big may have emptied a full pipe of ``size`` bytes (0: unknown)."""
    return min(FULL_READ, size // 2) if size > 0 else FULL_READ
