"""``LogRing``: the last lines of a service in memory, with its per-service seq."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from itertools import repeat

from runyard.protocol.messages import LogLine

__all__ = ["LogRing"]


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
