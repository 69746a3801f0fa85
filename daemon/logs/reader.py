"""``LogReader``: the asyncio side, reading a service's FIFOs in batches into its ServiceLog."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Sequence

from runyard.protocol.messages import LogLine

from .fifo import STREAMS, LogPipes
from .service_log import ServiceLog

__all__ = ["BATCH_DELAY", "MAX_READS_PER_BATCH", "READ_CHUNK", "LogReader", "ReaderState"]

_log = logging.getLogger("runyard.logs")

#: Bytes asked of each take: a full 1 MiB pipe in one read.
READ_CHUNK = 1024 * 1024
#: How long a wake-up waits before reading, so a busy writer's output is read in big chunks.
BATCH_DELAY = 0.001
#: Reads per batch at most (each up to READ_CHUNK) before the loop serves others again: one
#: read of a full pipe takes a millisecond or two, and a `status` call must not wait longer.
MAX_READS_PER_BATCH = 1
#: A read at least this big says the writer is ahead of us: the next batch comes at the next
#: turn of the loop, with no BATCH_DELAY (the pipe is full again by then).
FULL_READ = 256 * 1024


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
        self._batches: dict[str, asyncio.Handle] = {}
        self.state = ReaderState.IDLE

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
            loop.add_reader(fd, self._readable, stream)
            # One read now: a FIFO reopened after its writers are gone reports no POLLHUP to a
            # new reader, so without this probe a reattach to a dead child would never see EOF.
            # A batch, so that what the probe drains is compacted in the spool like any read.
            loop.call_soon(self._read_batch, stream)
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
        behind = False
        for _ in range(MAX_READS_PER_BATCH):
            behind = self._read_once(stream) and self.log.last_read >= FULL_READ
            if not behind:
                break
        fd = self._fds.get(stream)
        if fd is None or self.state is not ReaderState.READING:
            return
        if behind:  # more is waiting: read it after whatever else is ready now
            self._batches[stream] = self._loop.call_soon(self._read_batch, stream)
        else:
            self.log.drained(stream)
            self._loop.add_reader(fd, self._readable, stream)

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
