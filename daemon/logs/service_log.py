"""``ServiceLog``: one service's captured output, fed chunk by chunk into its line splitters,
its rotated file and its ring."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from protocol.messages import LogLine
from runtime.tree import check_name

from .fifo import STREAMS
from .logfile import DEFAULT_MODE, LogFile, format_stamp
from .ring import LogRing
from .splitter import MAX_LINE, LineSplitter

__all__ = ["ServiceLog"]

_log = logging.getLogger("runyard.logs")


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
        mode: int = DEFAULT_MODE,
    ) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        self.service = service
        self.path = Path(logs_dir) / service / f"{service}.log"
        self.file = LogFile(self.path, max_bytes=max_bytes, backups=backups, mode=mode)
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
