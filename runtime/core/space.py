"""Free space: checked before writing what we can size, and a full disk named when it comes anyway.

Two halves, both ending in one ``NoSpaceError`` line of the same shape (``no space left on
device while extracting svc2 1.0.0 into bin/: needs 1.0 GiB, 12.0 MiB free``):

- ``require_space(path, need, doing)`` before a write whose size is known (a download by its
  catalog size, an extraction by the sizes its members declare), so a disk is never filled by
  something that could not fit. ``on_disk`` rounds each file up to whole blocks, as the file
  system will.
- ``no_space_as_error(path, doing)`` around the write itself, for what no check can see: the
  space another process takes meanwhile, inodes, metadata. ENOSPC and EDQUOT become the same
  line; the caller's own cleanup (temp files, temp dirs) runs as the exception passes.

Free space is ``f_bavail`` (what an unprivileged writer may use), not ``f_bfree``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator

from runyard.runtime.core.errors import NoSpaceError
from runyard.runtime.core.sizes import ByteStyle, format_bytes

__all__ = ["free_bytes", "no_space_as_error", "on_disk", "require_space"]

#: What a file system adds per directory and per file beyond its data blocks, roughly.
_DIR_BYTES = 4096


def _existing(path: str | os.PathLike[str]) -> str:
    """``path`` or its nearest existing parent: statvfs needs something that exists."""
    p = os.path.abspath(path)
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    return p


def free_bytes(path: str | os.PathLike[str]) -> int:
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def on_disk(path: str | os.PathLike[str], sizes: Iterable[int], dirs: int = 0) -> int:
    """The bytes files of ``sizes`` (and ``dirs`` directories) take on ``path``'s file system."""
    block = os.statvfs(_existing(path)).f_frsize or 4096
    return sum(-(-size // block) * block for size in sizes) + dirs * _DIR_BYTES


def require_space(path: str | os.PathLike[str], need: int, doing: str) -> None:
    """NoSpaceError unless ``need`` bytes are free on ``path``'s file system."""
    free = free_bytes(path)
    if need > free:
        raise NoSpaceError(
            f"no space left on device while {doing}: needs {format_bytes(need, ByteStyle.PROSE)}, "
            f"{format_bytes(free, ByteStyle.PROSE)} free"
        )


@contextlib.contextmanager
def no_space_as_error(
    path: str | os.PathLike[str], doing: str, need: int | None = None
) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT raised in the block into one NoSpaceError line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        needs = f"needs {format_bytes(need, ByteStyle.PROSE)}, " if need is not None else ""
        raise NoSpaceError(
            f"no space left on device while {doing}: {needs}{format_bytes(free_bytes(path), ByteStyle.PROSE)} free"
        ) from None
