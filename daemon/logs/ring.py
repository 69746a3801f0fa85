"""``LogRing``: the last lines of a service in memory, with its per-service seq.

The ring keeps whole chunks as they were read (``Chunk``: the bytes of its complete lines,
each ending in ``\\n``, and their count), not a Python object per line: a flood of 100-byte
lines costs a ``count`` per read here. ``LogLine`` objects (decoded text, seq, time) are made
only when someone asks: ``tail`` (``logs -n``) or a ``LazyLines`` a subscriber reads.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import NamedTuple, overload

from runyard.protocol.messages import LogLine

__all__ = ["Chunk", "LazyLines", "LogRing", "last_lines"]


class Chunk(NamedTuple):
    """The lines of one read: ``blob`` holds ``count`` lines, each ending in ``\\n``."""

    first: int  # seq of its first line
    ts: float
    stream: str
    blob: bytes
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def lines(self, k: int) -> list[LogLine]:
        """Its last ``k`` lines (k <= count) as LogLines."""
        if k <= 0:
            return []
        raw = last_lines(self.blob, self.count, k)
        try:  # strict decoding is the fast path; errors="replace" costs even on clean input
            texts = list(map(bytes.decode, raw))
        except UnicodeDecodeError:
            texts = list(map(bytes.decode, raw, repeat("utf-8"), repeat("replace")))
        first = self.last - len(raw) + 1
        return list(
            map(LogLine, range(first, self.last + 1), repeat(self.ts), repeat(self.stream), texts)
        )


def last_lines(blob: bytes, count: int, k: int) -> list[bytes]:
    """The last ``k`` lines of ``blob`` (``count`` lines, each ending in ``\\n``), without
    their newlines. A few lines of a big chunk are found from its end (``rfind``), not by
    splitting all of it."""
    k = min(k, count)
    if k * 8 >= count:
        return blob.split(b"\n")[count - k : count]
    pos = len(blob) - 1
    for _ in range(k):
        pos = blob.rfind(b"\n", 0, pos)
    return blob[pos + 1 : -1].split(b"\n")


def _trim(blob: bytes, count: int, keep: int) -> tuple[bytes, int]:
    """About the last ``keep`` (at least) of the ``count`` lines of ``blob``: cut at a newline
    near where the average line length says, counted again; the whole blob if that is short."""
    guess = len(blob) - len(blob) * keep * 5 // (4 * count)
    cut = blob.find(b"\n", max(guess, 0)) + 1
    if cut <= 0:
        return blob, count
    rest = blob[cut:]
    n = rest.count(b"\n")
    return (rest, n) if n >= keep else (blob, count)


class LazyLines(Sequence[LogLine]):
    """The new lines of one read, as a sequence of LogLines made on first use.

    ``len`` and ``last_seq`` cost nothing; ``lines[-n:]`` decodes only those ``n``.
    """

    __slots__ = ("_all", "_chunk", "_n")

    def __init__(self, chunk: Chunk, n: int) -> None:
        self._chunk = chunk
        self._n = n  # the last n lines of the chunk (those the ring kept)
        self._all: list[LogLine] | None = None

    @property
    def last_seq(self) -> int:
        return self._chunk.last

    def __len__(self) -> int:
        return self._n

    def _list(self) -> list[LogLine]:
        if self._all is None:
            self._all = self._chunk.lines(self._n)
        return self._all

    @overload
    def __getitem__(self, index: int) -> LogLine: ...
    @overload
    def __getitem__(self, index: slice) -> list[LogLine]: ...
    def __getitem__(self, index: int | slice) -> LogLine | list[LogLine]:
        if self._all is None:
            if isinstance(index, int) and index == -1 and self._n:
                return self._chunk.lines(1)[0]
            if isinstance(index, slice) and index.step in (None, 1) and index.stop is None:
                start = index.start or 0
                k = self._n - start if start >= 0 else min(-start, self._n)
                return self._chunk.lines(max(0, min(k, self._n)))
        return self._list()[index]

    def __iter__(self) -> Iterator[LogLine]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return self._list() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LazyLines({self._list()!r})"


class LogRing:
    """The last ``maxlen`` lines of a service, numbered by a per-service counter.

    ``seq`` counts every line (also those a big chunk pushed past the ring), so a client that
    sees a gap knows lines are missing; ``tail(after_seq=...)`` backfills what is still here.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be positive")
        self.maxlen = maxlen
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._seq = 0

    def __len__(self) -> int:
        return self._seq - self._floor() + 1 if self._chunks else 0

    def _floor(self) -> int:
        """The seq of the oldest line kept."""
        return max(self._seq - self.maxlen + 1, self._chunks[0].first)

    @property
    def last_seq(self) -> int:
        """The seq of the last line counted (0 before the first)."""
        return self._seq

    def append_chunk(self, stream: str, ts: float, blob: bytes, count: int) -> LazyLines:
        """Number the ``count`` lines of ``blob`` (each ending in ``\\n``); the new lines kept."""
        first = self._seq + 1
        self._seq += count
        if count > 4 * self.maxlen:  # a flood's read: keep about maxlen of its lines, not 1 MiB
            blob, count = _trim(blob, count, self.maxlen)
            first = self._seq - count + 1
        chunk = Chunk(first, ts, stream, blob, count)
        chunks = self._chunks
        chunks.append(chunk)
        floor = self._seq - self.maxlen + 1
        while chunks[0].last < floor:
            chunks.popleft()
        return LazyLines(chunk, min(count, self.maxlen))

    def append_many(self, stream: str, ts: float, lines: Sequence[bytes]) -> list[LogLine]:
        """Number ``lines``, keep (at most) the last ``maxlen`` of them and return those kept."""
        if not lines:
            return []
        blob = b"\n".join(lines) + b"\n"
        return list(self.append_chunk(stream, ts, blob, len(lines)))

    def tail(self, n: int | None = None, after_seq: int | None = None) -> list[LogLine]:
        """The last ``n`` lines (all when None) among those with ``seq > after_seq``."""
        if not self._chunks or (n is not None and n <= 0):
            return []
        lo = self._floor()
        if after_seq is not None:
            lo = max(lo, after_seq + 1)
        if n is not None:
            lo = max(lo, self._seq - n + 1)
        parts: list[list[LogLine]] = []
        for chunk in reversed(self._chunks):
            if chunk.last < lo:
                break
            parts.append(chunk.lines(chunk.last - max(lo, chunk.first) + 1))
        return [line for part in reversed(parts) for line in part]
