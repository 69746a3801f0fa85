"""``LineSplitter``: a byte stream cut into lines, the partial tail kept, overlong lines cut."""

from __future__ import annotations

__all__ = ["MAX_LINE", "LineSplitter"]

MAX_LINE = 16 * 1024


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

    def feed_block(self, data: bytes) -> bytes:
        """The complete lines of ``data`` (after what was held back) as one block, each line
        ending in ``\\n``; b"" when none is complete.

        The same lines as ``feed``, without a bytes object per line: a read of whole short
        lines is returned as it is (no copy), with the partial tail held back.
        """
        last = data.rfind(b"\n")
        head, m = self._tail, self.max_line
        if (
            last < 0
            or len(data) - last - 1 > m
            or (len(head) + last >= m and _has_long_line(data, len(head), m))
        ):
            lines = self.feed(data)
            return b"\n".join(lines) + b"\n" if lines else b""
        if last == len(data) - 1:
            self._tail = b""
            return head + data if head else data
        self._tail = data[last + 1 :]
        return head + data[: last + 1]

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
