"""``LogFile``: the append-only ``logs/{svc}/{svc}.log`` rotated by size, the background fsync
of rotated files, and ``format_stamp`` (the timestamp each line starts with)."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from runyard.runtime.core.atomic import fsync_dir

__all__ = ["DEFAULT_MODE", "LogFile", "find_log_file", "format_stamp"]

#: before_write(upto, size_before, size_after), see LogFile.write_lines.
BeforeWrite = Callable[[int, int, int], None]
#: Service logs are the owner's and the group's to read, not everyone's.
DEFAULT_MODE = 0o640

_log = logging.getLogger("runyard.logs")

#: Bytes written between two ``POSIX_FADV_DONTNEED`` advices on what is already written.
DROP_EVERY = 8 * 1024 * 1024


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
    loses nothing already written). Every 8 MiB written, what is written is dropped from the
    page cache (``_drop_behind``). fsync only on rotate and close: on rotate the old file is
    fsynced and closed by a background thread, because on an SD card that can take a second and
    the event loop must not stall for it. A file never grows past ``max_bytes`` unless a single
    line is longer than that.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        mode: int = DEFAULT_MODE,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.set_limits(max_bytes=max_bytes, backups=backups)
        self.mode = mode
        #: (uid, gid) the directory and every file of this log belong to (the service's user,
        #: who may read its own logs); None: whoever the daemon is. Only root can give files away.
        self.owner = owner if os.geteuid() == 0 else None
        #: Called before each rotation (the spool's journal settles what was written).
        self.before_rotate: Callable[[], None] | None = None
        if not os.path.isdir(os.path.dirname(self.path)):  # a stat, not a failing mkdir and a stat
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._chown_dir()
        self._syncing: collections.deque[concurrent.futures.Future[None]] = collections.deque()
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        try:  # found: every start but the first, one open (not a failing O_EXCL one first)
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode & 0o600)
            except FileExistsError:  # made meanwhile
                fd = os.open(self.path, flags)
        st = os.fstat(fd)  # a file made here passes the check
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            # The directory may be the service user's: a hard link planted there must not
            # make the daemon chmod/chown (or append to) a file elsewhere. Start afresh.
            os.close(fd)
            os.unlink(self.path)
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, self.mode & 0o600)
            st = os.fstat(fd)
        # Exactly the configured mode, whatever the umask, and also for a file an older daemon
        # left readable by everyone.
        os.fchmod(fd, self.mode)
        self._fd = fd
        self._chown_file()  # neither this nor fchmod changes the size, device or inode
        self.size = st.st_size
        #: The last two drop-behind advices began here (see _drop_behind).
        self._advised = self._advised_from = self.size
        self._identity = (st.st_dev, st.st_ino)

    def set_limits(self, *, max_bytes: int, backups: int, mode: int | None = None) -> None:
        """New limits (a reload): the next write rotates when the file is already past them."""
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups not negative")
        self.max_bytes = max_bytes
        self.backups = backups
        if mode is not None and self._fd is not None and mode != self.mode:
            os.fchmod(self._fd, mode)
        if mode is not None:
            self.mode = mode

    def set_owner(self, owner: tuple[int, int] | None) -> None:
        """A reload's new ``user``/``group``: the directory and the file written now change
        hands at once (rotated files keep theirs)."""
        self.owner = owner if os.geteuid() == 0 else None
        self._chown_dir()
        if self._fd is not None:
            self._chown_file()

    def _chown_dir(self) -> None:
        if self.owner is None:
            return
        st = os.lstat(self.path.parent)
        if (st.st_uid, st.st_gid) != self.owner:
            os.lchown(self.path.parent, *self.owner)

    def _chown_file(self) -> None:
        assert self._fd is not None
        if self.owner is None:
            return
        st = os.fstat(self._fd)
        if (st.st_uid, st.st_gid) != self.owner:
            os.fchown(self._fd, *self.owner)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def backup_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    @property
    def identity(self) -> tuple[int, int]:
        """(st_dev, st_ino) of the file written now: the journal names it (spool.py)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: log file is closed")
        return self._identity

    def write_block(
        self, prefix: bytes, block: bytes, text: bytes, before_write: BeforeWrite | None = None
    ) -> None:
        """``write_lines`` for lines given as one block, each line ending in ``\\n``, and
        ``text``, the block with every newline followed by ``prefix`` (one C-level
        ``replace``: no object per line); it goes out in one write."""
        total = len(text)
        count = (total - len(block)) // len(prefix)
        if self._fd is None or self.size + total > self.max_bytes:
            lines = block.split(b"\n")
            lines.pop()
            self.write_lines(prefix, lines, before_write)
            return
        if before_write is not None:
            before_write(count, self.size, self.size + total)
        # The last newline's prefix is not sent (writev of a view, no copy).
        body = memoryview(text)[: total - len(prefix)]
        written = os.writev(self._fd, (prefix, body))
        self.size += written
        if written < total:  # only on a full disk or a signal; finish byte-exact
            self._write_all((prefix + bytes(body))[written:])
        if self.size - self._advised >= DROP_EVERY:
            self._drop_behind()

    def _drop_behind(self) -> None:
        """Tell the kernel the last ~16 MiB written will not be read back: the pages already
        written back are dropped now, the rest start their writeback and go at the next call.

        Why: a flood's log filled the page cache with fresh pages, and on a VM a page the
        guest never touched costs a fault in the host inside the copy itself: perf showed 47%
        of the daemon's CPU in copy_folio_from_iter_atomic for the log's writev under
        ``scripts/bench daemon``, 3% for the same bytes into the spool's recycled tmpfs pages.
        Dropped pages go back to the allocator and the next writes reuse them, warm. The
        ring and the history reader keep recent lines; older ones are read from the disk.
        """
        assert self._fd is not None
        with contextlib.suppress(OSError):
            os.posix_fadvise(
                self._fd,
                self._advised_from,
                self.size - self._advised_from,
                os.POSIX_FADV_DONTNEED,
            )
        self._advised_from, self._advised = self._advised, self.size

    def write_lines(
        self, prefix: bytes, lines: list[bytes], before_write: BeforeWrite | None = None
    ) -> None:
        """Append ``prefix + line + \\n`` for every line: one C-level join, one syscall.

        ``before_write(upto, size_before, size_after)`` is called before each write to the
        file, which holds ``lines[:upto]`` once it is done (more than one write only when the
        lines do not fit and the file rotates between them).
        """
        joined = (b"\n" + prefix).join(lines)
        total = len(prefix) + len(joined) + 1
        if self._fd is not None and self.size + total <= self.max_bytes:
            if before_write is not None:
                before_write(len(lines), self.size, self.size + total)
            # writev, not prefix + joined + b"\n": two more copies of a 300 KiB buffer cost
            # more than the join itself (fresh big allocations page-fault).
            written = os.writev(self._fd, (prefix, joined, b"\n"))
            self.size += written
            if written < total:  # only on a full disk or a signal; finish byte-exact
                self._write_all((prefix + joined + b"\n")[written:])
            return
        if before_write is None:
            self.write(prefix + joined + b"\n")
        else:
            self._write_parts(prefix, lines, before_write)

    def _write_parts(self, prefix: bytes, lines: list[bytes], before_write: BeforeWrite) -> None:
        """write_lines when they do not fit: whole lines per file, one write (and one
        before_write) per file. A line per loop turn: this runs once per rotation."""
        if self._fd is None:
            raise ValueError(f"{self.path}: log file is closed")
        extra = len(prefix) + 1
        i, n = 0, len(lines)
        while i < n:
            room = self.max_bytes - self.size
            j, used = i, 0
            while j < n and used + extra + len(lines[j]) <= room:
                used += extra + len(lines[j])
                j += 1
            if j == i:
                if self.size > 0:
                    self.rotate()
                    continue
                j, used = i + 1, extra + len(lines[i])  # one line bigger than a whole file
            before_write(j, self.size, self.size + used)
            self._write_all(prefix + (b"\n" + prefix).join(lines[i:j]) + b"\n")
            i = j
            if i < n:
                self.rotate()

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
        if self.before_rotate is not None:
            self.before_rotate()
        if self.backups == 0:
            os.ftruncate(self._fd, 0)
            self.size = 0
            return
        old, self._fd = self._fd, None
        # The oldest backup is dropped by the replace below; held open, it loses only its name
        # there, and its blocks are freed when the sync thread closes it (freeing 50 MB took
        # 10-15 ms on a discard-mounted ext4: the event loop's longest stall under a flood).
        dropped = _hold(self.backup_path(self.backups))
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
            self._syncing.append(
                _sync_executor().submit(_sync_and_close, old, self.path.parent, dropped)
            )

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


def find_log_file(path: Path, backups: int, dev: int, ino: int) -> Path | None:
    """The log file ``path`` or the backup of it that is (dev, ino), if any is still there."""
    for candidate in (path, *(path.with_name(f"{path.name}.{i}") for i in range(1, backups + 1))):
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            continue
        if (st.st_dev, st.st_ino) == (dev, ino):
            return candidate
    return None


_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _sync_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="runyard-logsync")
    return _executor


def _hold(path: Path) -> int | None:
    """A descriptor on ``path`` (None when there is no such file): its blocks outlive its name."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None


def _sync_and_close(fd: int, directory: Path, dropped: int | None = None) -> None:
    """fsync the rotated file and the directory; close the dropped backup (freeing it here)."""
    try:
        os.fsync(fd)
        fsync_dir(directory)
    except OSError as exc:
        _log.error("fsync of a rotated log in %s failed: %s", directory, exc)
    finally:
        os.close(fd)
        if dropped is not None:
            os.close(dropped)
