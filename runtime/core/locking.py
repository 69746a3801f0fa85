"""Advisory file locks (flock) that serialise work between processes sharing one tree.

Locks live in ``temp/locks/``. flock is released by the kernel when the holder dies, so a
crashed ``ensure`` never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from runyard.runtime.core.tree import RuntimeTree

__all__ = ["tree_lock"]


@contextlib.contextmanager
def tree_lock(tree: RuntimeTree, name: str) -> Iterator[None]:
    """Hold the exclusive lock ``name`` of ``tree`` for the duration of the block."""
    locks = tree.temp_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
