"""``Spool``: what was taken from a service's FIFOs and is not yet in its log file.

Why: a line the daemon has read from a pipe lives only in its memory until it is written, and a
``kill -9`` in between lost it (40 lines in one of 40 kills under a flood), as it lost the
unterminated line held back for its end. So the daemon never ``read``s a FIFO: ``splice(2)``
moves the bytes from the FIFO into a spool file, ``{svc}.out.spool`` (``.err.spool``) in the
tree's spool directory, inside the kernel, so a byte is always in the pipe or in the spool,
never only in the daemon. The daemon reads the copy, and a journal, ``{svc}.journal`` beside
it, says how far each spool has reached the log file:

- before each write to the log file the journal records the intent: "stream S up to spool
  offset T, into log file (dev, ino) from size A to size B";
- a new daemon resolves the intent by that file's size: B or more, the write happened (the
  committed offset becomes T); between A and B it was cut short (truncated back to A); A or
  less, it did not happen; then it replays each spool from its committed offset. No line is
  lost and none is written twice; the unterminated last line waits in the spool.

Where: the spool directory is a private one on tmpfs, ``/dev/shm/runyard-{uid}-{digest of the
tree}``, found again by the next daemon (spool_home.py), and ``temp/fifo`` when no tmpfs is
usable. On the tree's disk the spool was a second page-cache copy of every log byte that the
kernel also wrote back to the disk; on tmpfs it is RAM, held only until the log write. The
file's size is the spool's end (``splice`` grows it with the bytes it moves, atomically as far
as a kill is concerned), which is why the bytes are not read into a mapping of the file
instead: a ``readv`` into it would leave no trace of how far it got if the daemon died
right after.

The journal is two fixed slots written alternately, each with a generation and a CRC, so a
record torn by the kill leaves the previous one. Nothing here is fsynced: this guards against the
daemon's death, not the machine's (log files are not fsynced per write either). Spools are
compacted once their processed part passes ``COMPACT_AT``, and whenever the service's pipe is
drained (``ServiceLog.drained``: an idle service's spool holds only its unfinished line): the
unfinished line (less than ``MAX_LINE``) is copied to offset 0, the journal says "committed 0,
truncate to its length", the file is truncated, and the journal says so again before anything
is spliced in. Empty spools are unlinked at a clean close.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from runyard.runtime.core.tree import check_name

from .fifo import STREAMS

__all__ = ["COMPACT_AT", "Intent", "Spool"]

#: Processed bytes a spool may hold before it is compacted.
COMPACT_AT = 1024 * 1024
#: gen, committed (out, err), truncate_to + 1 (out, err; 0: none), intent stream (0: none),
#: intent offset, log dev, log ino, log size before, log size after; then a CRC32.
_RECORD = struct.Struct("<QQQQQBQQQQQ")
_CRC = struct.Struct("<I")
_SLOT = 128


class Intent(NamedTuple):
    """A log write that was about to happen: resolved by the log file's size at recovery."""

    stream: str
    offset: int
    dev: int
    ino: int
    before: int
    after: int


class Spool:
    """The spool files and journal of one service (see the module docstring)."""

    def __init__(self, spool_dir: Path, service: str) -> None:
        problem = check_name(service)
        if problem:
            raise ValueError(problem)
        if not os.path.isdir(spool_dir):  # one stat, not a failing mkdir and a stat, per service
            Path(spool_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fds: dict[str, int] = {}
        self._journal = -1
        # joined as text: ``service`` is a checked name (no pathlib parse per file)
        self._paths = [os.path.join(spool_dir, f"{service}.{s}.spool") for s in STREAMS]
        self._paths.append(_journal_path(spool_dir, service))
        try:
            for stream, path in zip(STREAMS, self._paths, strict=False):
                self._fds[stream] = os.open(path, flags, 0o600)
            self._journal = os.open(self._paths[-1], flags, 0o600)
        except BaseException:
            self.close()
            raise
        self.end = {s: os.fstat(fd).st_size for s, fd in self._fds.items()}
        self.committed = dict.fromkeys(STREAMS, 0)
        #: The last recorded intent, until a later record supersedes it.
        self.intent: Intent | None = None
        self._gen = 0
        self._load()

    @staticmethod
    def exists(spool_dir: Path, service: str) -> bool:
        """Whether a daemon left a spool of ``service`` in ``spool_dir``."""
        return os.path.lexists(_journal_path(spool_dir, service))

    @property
    def empty(self) -> bool:
        """Nothing is waiting in either spool and no write is in flight."""
        return self.intent is None and all(self.end[s] == self.committed[s] for s in STREAMS)

    # --- the journal ---------------------------------------------------------------------------

    def _load(self) -> None:
        raw = os.pread(self._journal, 2 * _SLOT, 0)
        best: tuple[int, ...] | None = None
        for slot in (0, 1):
            chunk = raw[slot * _SLOT : slot * _SLOT + _RECORD.size + _CRC.size]
            if len(chunk) < _RECORD.size + _CRC.size:
                continue
            body, (crc,) = chunk[: _RECORD.size], _CRC.unpack(chunk[_RECORD.size :])
            if zlib.crc32(body) != crc:
                continue
            fields = _RECORD.unpack(body)
            if best is None or fields[0] > best[0]:
                best = fields
        if best is None:
            return
        gen, c_out, c_err, t_out, t_err, which, offset, dev, ino, before, after = best
        self._gen = gen
        for stream, committed, truncate in (("out", c_out, t_out), ("err", c_err, t_err)):
            if truncate:  # a compaction was cut short between the record and the truncate
                os.ftruncate(self._fds[stream], truncate - 1)
                self.end[stream] = truncate - 1
            self.committed[stream] = min(committed, self.end[stream])
        if which:
            self.intent = Intent(STREAMS[which - 1], offset, dev, ino, before, after)

    def _record(self, truncate: dict[str, int] | None = None) -> None:
        self._gen += 1
        truncate = truncate or {}
        i = self.intent
        body = _RECORD.pack(
            self._gen,
            self.committed["out"],
            self.committed["err"],
            truncate.get("out", -1) + 1,
            truncate.get("err", -1) + 1,
            0 if i is None else STREAMS.index(i.stream) + 1,
            *((0, 0, 0, 0, 0) if i is None else (i.offset, i.dev, i.ino, i.before, i.after)),
        )
        os.pwrite(self._journal, body + _CRC.pack(zlib.crc32(body)), (self._gen % 2) * _SLOT)

    def _settle(self) -> None:
        """The last intent's write is over (done, or failed and given up): it is committed."""
        if self.intent is not None:
            self.committed[self.intent.stream] = self.intent.offset
            self.intent = None

    def intend(self, intent: Intent) -> None:
        """Record that ``intent`` is about to be written (call right before the write)."""
        self._settle()
        self.intent = intent
        self._record()

    def settle(self) -> None:
        """Make the journal say that every write so far is over (before a log rotation)."""
        if self.intent is not None:
            self._settle()
            self._record()

    def resolve(self, written: bool) -> None:
        """Recovery: the recorded intent did (True) or did not happen."""
        if self.intent is not None and not written:
            self.intent = None
        self._settle()
        self._record()

    # --- the spool files -----------------------------------------------------------------------

    def take(self, stream: str, fd: int, size: int) -> bytes:
        """Move up to ``size`` bytes from the pipe ``fd`` to the spool and return them.

        b"" at EOF; BlockingIOError when the pipe is empty; OSError when the spool cannot take
        them (a full disk): then nothing left the pipe.
        """
        at = self.end[stream]
        moved = os.splice(fd, self._fds[stream], size, offset_dst=at, flags=os.SPLICE_F_NONBLOCK)
        if not moved:
            return b""
        self.end[stream] = at + moved
        return self.read(stream, at, moved)

    def read(self, stream: str, offset: int, size: int) -> bytes:
        chunks = []
        while size > 0:
            data = os.pread(self._fds[stream], size, offset)
            if not data:
                break
            chunks.append(data)
            offset += len(data)
            size -= len(data)
        return b"".join(chunks)

    def unprocessed(self, stream: str) -> bytes:
        """What the spool holds past the committed offset (replayed at recovery)."""
        start = self.committed[stream]
        return self.read(stream, start, self.end[stream] - start)

    def compact(self, stream: str, force: bool = False) -> None:
        """Drop the processed part once it passes COMPACT_AT (or whenever, with ``force``)."""
        self._settle()
        done, end = self.committed[stream], self.end[stream]
        rest = end - done
        if done == 0 or (done < COMPACT_AT and not force) or rest > done:
            return
        fd = self._fds[stream]
        if rest:  # into bytes already processed: the copy never overwrites what it copies
            os.pwrite(fd, self.read(stream, done, rest), 0)
        self.committed[stream] = 0
        self.end[stream] = rest
        self._record(truncate={stream: rest})
        os.ftruncate(fd, rest)
        self._record()

    def adopt(self, other: Spool) -> None:
        """Take over what ``other`` (the same service's spool in another directory, its intent
        resolved) has not processed, appended to ours; ``other`` is then removed. A kill in
        between leaves the bytes in both: at worst a line written twice, once. When ours cannot
        take them all (a full tmpfs), what was copied is taken back and ``other`` is left as it
        was: OSError."""
        ends = dict(self.end)
        try:
            for stream in STREAMS:
                data = memoryview(other.unprocessed(stream))
                while data:
                    moved = os.pwrite(self._fds[stream], data, self.end[stream])
                    self.end[stream] += moved
                    data = data[moved:]
        except OSError:
            for stream, end in ends.items():
                with contextlib.suppress(OSError):  # shrinking a file takes no room
                    os.ftruncate(self._fds[stream], end)
                self.end[stream] = end
            raise
        other.abandon()
        other.close(remove=True)

    def abandon(self) -> None:
        """Give the spool up (it cannot be written): empty it, and the journal says so."""
        self.intent = None
        for stream, fd in self._fds.items():
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            self.committed[stream] = self.end[stream] = 0
        with contextlib.suppress(OSError):
            self._record()

    def close(self, remove: bool = False) -> None:
        """Close the files; with ``remove``, also unlink them when nothing waits in them."""
        remove = remove and self.empty
        fds = [*self._fds.values(), self._journal]
        self._fds, self._journal = {}, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if remove:
            for path in self._paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _journal_path(spool_dir: str | os.PathLike[str], service: str) -> str:
    return os.path.join(spool_dir, f"{service}.journal")
