"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader sees the old file or the new one, never a torn one, even across a power cut.

The temp file is made here (``_temp_beside``: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, a random
name, as ``tempfile.mkstemp`` does) rather than by ``tempfile``: importing tempfile imports shutil,
which loads zlib, bz2 and lzma, ~3 ms of every daemon launch on a small box (issue 16, cold
start), for one ``open`` call.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_output", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry change (a rename or a create) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Names tried before giving up (each a fresh random name; a clash is astronomically unlikely).
_TRIES = 100


def _temp_beside(target: Path, suffix: str) -> tuple[int, str]:
    """A new file ``.NAME.XXXXXXXXXXXX{suffix}`` beside ``target``, opened read-write, mode 0600,
    never an existing file or a symlink; (its descriptor, its path)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TRIES):
        tmp = os.path.join(target.parent, f".{target.name}.{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], mode: int = 0o644, suffix: str = ".tmp"
) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an exception.

    Written in a temp file beside ``path`` (``.NAME.XXXX{suffix}``), fsynced, given ``mode``,
    renamed over ``path``, and the directory fsynced; on an exception the temp file is removed
    and ``path`` is untouched.
    """
    target = Path(path)
    fd, tmp = _temp_beside(target, suffix)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_output(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)
