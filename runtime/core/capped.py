"""Reading the files we parse (JSON, TOML, keys, sums) with a size cap, refused by name unread.

Every such file is read through ``read_capped``: it opens the path (with ``O_NOFOLLOW`` when
``follow_symlinks`` is False, as a sealed run's files are read: verify never follows a link
out of a bundle), ``fstat``s the open file and refuses, before reading a byte, anything that is
not a regular file (a device such as ``/dev/zero``, a FIFO, a directory) or is larger than the
cap. It then reads at most ``limit + 1`` bytes, so a file that grows meanwhile is refused too.
A 2 GiB sparse ``RUN_META.json`` costs one ``fstat``, not 2 GiB of memory.

The caps, one per kind of file, live here so they can be compared at a glance:

    SMALL_FILE     16 MiB   catalogs, indexes, state, licenses, config, keys, definitions
    MANIFEST_FILE  256 MiB  manifest.json lists every installed file (bundle.reader's cap)
    RUN_FILE       256 MiB  a sealed run's documents carry an engine's outputs (its stdout cap)

``FileRefused`` (a ``RunyardError``) says which file, and why, in one line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tomllib
from typing import Any

from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.sizes import ByteStyle, format_bytes

__all__ = [
    "MANIFEST_FILE",
    "RUN_FILE",
    "SMALL_FILE",
    "check_capped",
    "read_capped",
    "read_json_capped",
    "read_toml_capped",
]

MiB = 1024 * 1024
SMALL_FILE = 16 * MiB
MANIFEST_FILE = 256 * MiB
RUN_FILE = 256 * MiB

_KIND = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symlink",
}


def _problem(st: os.stat_result, limit: int) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return f"is {_KIND.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, not a regular file"
    if st.st_size > limit:
        return f"is {format_bytes(st.st_size, ByteStyle.PROSE)}, more than the {format_bytes(limit, ByteStyle.PROSE)} it may be"
    return None


def check_capped(
    path: str | os.PathLike[str], limit: int, *, follow_symlinks: bool = True
) -> str | None:
    """Why ``read_capped`` would refuse ``path`` (one line, without the path), or None.

    FileNotFoundError when it does not exist; a symlink is refused when not followed.
    """
    st = os.stat(path, follow_symlinks=follow_symlinks)
    return _problem(st, limit)


def read_capped(path: str | os.PathLike[str], limit: int, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; FileRefused when it is
    larger, not a regular file, or (``follow_symlinks`` False) a symlink. OSError as ``open``
    raises it otherwise (FileNotFoundError for a missing file)."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise FileRefused(f"{path}: is a symlink; not followed") from None
        raise
    try:
        problem = _problem(os.fstat(fd), limit)
        if problem:
            raise FileRefused(f"{path}: {problem}; refused unread")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileRefused(
            f"{path}: grew past the {format_bytes(limit, ByteStyle.PROSE)} it may be while read"
        )
    return data


def read_json_capped(path: str | os.PathLike[str], limit: int = SMALL_FILE, **kw: bool) -> Any:
    """``json.loads`` of ``read_capped``; ValueError (with the path) for bytes that are not JSON."""
    data = read_capped(path, limit, **kw)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None


def read_toml_capped(
    path: str | os.PathLike[str], limit: int = SMALL_FILE, **kw: bool
) -> dict[str, Any]:
    """``tomllib.loads`` of ``read_capped``; TOMLDecodeError / UnicodeDecodeError pass through."""
    return tomllib.loads(read_capped(path, limit, **kw).decode("utf-8"))
