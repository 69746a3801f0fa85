"""``ServiceLog``: one service's captured output, taken chunk by chunk from its FIFOs (through
its spool, when it has one) into its line splitters, its rotated file and its ring."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from runyard.protocol.messages import LogLine
from runyard.runtime.core.tree import check_name

from .fifo import STREAMS
from .history import read_history
from .logfile import DEFAULT_MODE, LogFile, find_log_file, format_stamp
from .ring import LogRing
from .splitter import MAX_LINE, LineSplitter
from .spool import Intent, Spool

__all__ = ["ServiceLog"]

_log = logging.getLogger("runyard.logs")


class ServiceLog:
    """The captured output of one service: splitters per stream, the rotated file, the ring.

    With ``spool_dir`` (the daemon's spool directory, spool_home.py) every byte taken from a
    FIFO goes through the service's ``Spool`` first, so no line is lost if the daemon dies
    (spool.py); creating the ServiceLog then recovers what a killed daemon left: the log file
    is made to match the journal and the spool is replayed. A spool an earlier daemon left in
    ``old_spool_dir`` (``temp/fifo`` before spools moved to tmpfs) is recovered and moved into
    ours first. Without ``spool_dir`` (tests, tools) ``take`` is a plain read.
    """

    def __init__(
        self,
        service: str,
        logs_dir: Path,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        ring_lines: int = 1000,
        max_line: int = MAX_LINE,
        mode: int = DEFAULT_MODE,
        spool_dir: Path | None = None,
        owner: tuple[int, int] | None = None,
        old_spool_dir: Path | None = None,
    ) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        self.service = service
        self.path = Path(os.path.join(logs_dir, service, f"{service}.log"))  # one parse, not 3
        self.ring = LogRing(ring_lines)
        self._splitters = {s: LineSplitter(max_line) for s in STREAMS}
        self._tags = {s: b" " + s.encode() + b" " for s in STREAMS}
        self.write_errors = 0
        #: Bytes the last ``take`` got (the reader's sign that a writer is ahead of it).
        self.last_read = 0
        #: Where the spools go when ``spool_dir`` cannot take them (a full tmpfs).
        self._fallback = None if old_spool_dir is None else Path(old_spool_dir)
        self._spool_dir = None if spool_dir is None else Path(spool_dir)
        self._backups = backups
        self.spool = None if spool_dir is None else self._open_spool()
        self.file = LogFile(self.path, max_bytes=max_bytes, backups=backups, mode=mode, owner=owner)
        if self.spool is not None:
            self.file.before_rotate = self.spool.settle
            for stream in STREAMS:  # what the previous daemon took and did not write
                self._process(stream, self.spool.unprocessed(stream), time.time())

    def _resolve_intent(self, spool: Spool, backups: int) -> None:
        """Did the write the journal announced happen? Cut short: take its start back."""
        intent, written = spool.intent, True
        if intent is not None:
            found = find_log_file(self.path, backups, intent.dev, intent.ino)
            if found is not None:
                size = found.stat().st_size
                if size < intent.after:
                    written = False
                    if size > intent.before:
                        os.truncate(found, intent.before)
        spool.resolve(written)

    def _open_spool(self) -> Spool:
        assert self._spool_dir is not None
        spool = None
        try:
            spool = Spool(self._spool_dir, self.service)
            self._resolve_intent(spool, self._backups)
            if self._fallback is not None and self._fallback != self._spool_dir:
                self._adopt_old_spool(spool, self._fallback, self._backups)
        except OSError as exc:
            if not self._can_move():
                if spool is not None:
                    spool.close()
                raise
            return self._move_spool(spool, exc)
        return spool

    def _can_move(self) -> bool:
        return self._fallback is not None and self._fallback != self._spool_dir

    def _move_spool(self, spool: Spool | None, exc: OSError) -> Spool:
        """``spool``'s directory cannot take more (a full tmpfs): the spools go to the
        fallback directory, with what ``spool`` holds and the log does not (its unfinished
        lines). A kill during the move can write a line twice, never lose one."""
        assert self._fallback is not None
        _log.error("%s: log spools kept in %s: %s", self.service, self._fallback, exc)
        self._spool_dir = self._fallback
        moved = Spool(self._fallback, self.service)
        self._resolve_intent(moved, self._backups)  # one an older daemon left there
        if spool is not None:
            with contextlib.suppress(OSError):  # settled in memory even if not recorded
                spool.settle()
            moved.adopt(spool)
        return moved

    def _adopt_old_spool(self, spool: Spool, old_dir: Path, backups: int) -> None:
        if not Spool.exists(old_dir, self.service):
            return
        try:
            old = Spool(old_dir, self.service)
        except OSError as exc:
            _log.error("%s: cannot read the log spool in %s: %s", self.service, old_dir, exc)
            return
        try:
            self._resolve_intent(old, backups)
            spool.adopt(old)
        finally:
            old.close()  # adopt closed it unless it failed: then it stays whole, on disk

    def set_limits(self, *, max_bytes: int, backups: int, mode: int | None = None) -> None:
        """The rotation limits (and mode) of a reloaded definition, in force from now."""
        self.file.set_limits(max_bytes=max_bytes, backups=backups, mode=mode)

    # --- taking output -----------------------------------------------------------------------

    def take(self, stream: str, fd: int, size: int) -> Sequence[LogLine] | None:
        """Take up to ``size`` bytes from the FIFO ``fd``; the new lines, or None at EOF.

        BlockingIOError when nothing is waiting.
        """
        spool = self.spool
        if spool is None:
            data = os.read(fd, size)
        else:
            try:
                data = spool.take(stream, fd, size)
            except (BlockingIOError, InterruptedError):
                raise
            except OSError as exc:
                data = self._take_elsewhere(stream, fd, size, exc)
        self.last_read = len(data)
        if not data:
            return None
        return self._process(stream, data, time.time())

    def _take_elsewhere(self, stream: str, fd: int, size: int, exc: OSError) -> bytes:
        """The spool could not take the bytes: a spool in the fallback directory does, or
        (that failing too) none, and the pipe is read directly."""
        assert self.spool is not None
        if self._can_move():
            try:
                self.spool = self._move_spool(self.spool, exc)
                self.file.before_rotate = self.spool.settle
                return self.spool.take(stream, fd, size)
            except (BlockingIOError, InterruptedError):
                raise
            except OSError as again:
                exc = again
        self._give_up_spool(exc)
        return os.read(fd, size)

    def drained(self, stream: str) -> None:
        """The pipe of ``stream`` is empty for now: compact its spool, so an idle service
        holds only its unfinished line (spools may be RAM, spool_home.py)."""
        if self.spool is not None:
            try:
                self.spool.compact(stream, force=True)
            except OSError as exc:
                self._give_up_spool(exc)

    def _give_up_spool(self, exc: OSError) -> None:
        """The spool cannot be written (a full disk, a file system without splice): read the
        FIFOs directly from now on; a kill -9 may then lose what was read and not written."""
        level = logging.ERROR if exc.errno != errno.EINVAL else logging.WARNING
        _log.log(
            level, "%s: log spool given up, lines may be lost on a crash: %s", self.service, exc
        )
        assert self.spool is not None
        self.file.before_rotate = None
        spool, self.spool = self.spool, None
        spool.abandon()
        spool.close()

    def feed(self, stream: str, data: bytes, ts: float | None = None) -> Sequence[LogLine]:
        """Take one chunk that was read from ``stream`` by other means (no spool)."""
        if self.spool is not None:
            raise RuntimeError("a spooled ServiceLog takes its input with take()")
        return self._process(stream, data, time.time() if ts is None else ts)

    def _process(self, stream: str, data: bytes, ts: float) -> Sequence[LogLine]:
        start = self.spool.committed[stream] if self.spool is not None else 0
        block = self._splitters[stream].feed_block(data)
        if not block:
            return []
        return self._record(stream, block, ts, start)

    def eof(self, stream: str, ts: float | None = None) -> Sequence[LogLine]:
        """The stream ended: its partial last line becomes a line."""
        start = self.spool.committed[stream] if self.spool is not None else 0
        tail = self._splitters[stream].flush()
        lines: Sequence[LogLine] = (
            []
            if tail is None
            else self._record(stream, tail + b"\n", time.time() if ts is None else ts, start)
        )
        if self.spool is not None:
            try:
                self.spool.compact(stream, force=True)
            except OSError as exc:
                self._give_up_spool(exc)
        return lines

    def _record(self, stream: str, block: bytes, ts: float, start: int) -> Sequence[LogLine]:
        """Write and keep the lines of ``block`` (each ending in ``\\n``): every line of a
        read shares one prefix, so the file side is one C-level replace and one write, and
        the replace's length tells how many lines there are."""
        prefix = format_stamp(ts) + self._tags[stream]
        text = block.replace(b"\n", b"\n" + prefix)
        count = (len(text) - len(block)) // len(prefix)
        spool = self.spool
        before_write = None
        if spool is not None:
            end = spool.end[stream] - self._splitters[stream].pending

            def before_write(upto: int, size_before: int, size_after: int) -> None:
                offset = end if upto == count else self._offset_after(stream, block, start, upto)
                dev, ino = self.file.identity
                spool.intend(Intent(stream, offset, dev, ino, size_before, size_after))

        try:
            self.file.write_block(prefix, block, text, before_write)
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
        if spool is not None:
            try:
                spool.compact(stream)
            except OSError as exc:
                self._give_up_spool(exc)
        return self.ring.append_chunk(stream, ts, block, count)

    def _offset_after(self, stream: str, block: bytes, start: int, upto: int) -> int:
        """The spool offset just past the first ``upto`` lines of ``block``, which begin at
        ``start``: a line took its bytes and its newline, a piece of an overlong line only its
        bytes. Runs only when a write is split by a rotation."""
        assert self.spool is not None
        raw = self.spool.read(stream, start, self.spool.end[stream] - start)
        pos = 0
        for line in block.split(b"\n", upto)[:upto]:
            pos += len(line)
            if raw[pos : pos + 1] == b"\n":
                pos += 1
        return start + pos

    def tail(self, n: int, after_seq: int | None = None) -> list[LogLine]:
        """The last ``n`` lines (with seq > ``after_seq``): from the ring, and when it is short
        (a daemon restart began a new one) from the files before it. File lines older than the
        ring are numbered down from its first seq (0 and below for an earlier daemon's lines);
        the files are used only when their newest lines are the ring's, so none is doubled."""
        ring = self.ring.tail(n, after_seq=after_seq)
        first = self.ring.last_seq - len(self.ring) + 1
        if (
            len(ring) >= n
            or self.write_errors
            or (after_seq is not None and after_seq >= first - 1)
        ):
            return ring
        kept = self.ring.tail()
        history = read_history(self.path, self.file.backups, n + len(kept))
        if len(history) < len(kept):
            return ring
        overlap = history[len(history) - len(kept) :]
        if any((s, t) != (k.stream, k.line) for (_, s, t), k in zip(overlap, kept, strict=True)):
            return ring
        older = history[: len(history) - len(kept)]
        seq0 = first - len(older)
        lines = [LogLine(seq0 + i, ts, s, t) for i, (ts, s, t) in enumerate(older)] + kept
        if after_seq is not None:
            lines = [line for line in lines if line.seq > after_seq]
        return lines[-n:] if n > 0 else []

    def flush(self) -> None:
        """Writes already reached the kernel; unterminated lines stay held back for their end."""
        self.file.flush()

    def close(self) -> None:
        """fsync and close the file. Unterminated lines are written as lines, except with a
        spool: there they wait for the next daemon, which goes on with them."""
        if self.file.closed:
            return
        if self.spool is None:
            for stream in STREAMS:
                self.eof(stream)
        else:
            self.spool.settle()
            self.spool.close(remove=True)
        self.file.close()
