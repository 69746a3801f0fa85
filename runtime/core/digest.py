"""sha256 for the whole tree: of bytes (``sha256``) and of files read in chunks (``hash_file``).

``sha256()`` is CPython's own implementation (``_sha2``, ``_sha256`` before 3.12; ``random``
takes its ``_sha512`` the same way), not hashlib's: importing hashlib maps OpenSSL's libcrypto
and initialises it, about 3.5 MiB of resident memory for the rest of the process's life, a
tenth of an idle daemon's (docs/ARCHITECTURE.md, "Idle footprint"). The digests are the same.
The builtin is as fast on the small inputs the daemon hashes (audit lines, endpoint names,
spec digests) and about 4.5x slower on bulk data (205 vs 930 MB/s on the bench box). So a file
goes to OpenSSL when it is loaded anyway (a fetch, a bundle) or once this process has hashed
``BUILTIN_BULK`` bytes of files with the builtin: a daemon whose installed files are small
(scripts, sleepers) never maps libcrypto, and one with large binaries pays at most ~0.15 s
for the first ``BUILTIN_BULK`` of its startup checksum check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

try:
    from _sha2 import sha256 as _builtin_sha256  # type: ignore[import-not-found]
except ImportError:  # Python 3.11
    try:
        from _sha256 import sha256 as _builtin_sha256  # type: ignore[import-not-found,no-redef]
    except ImportError:  # a CPython built without it: OpenSSL's it is
        from hashlib import sha256 as _builtin_sha256  # type: ignore[assignment]

__all__ = ["BUILTIN_BULK", "file_sha256", "hash_file", "sha256"]

#: Bytes of files a process hashes with the builtin before it takes OpenSSL's speed.
BUILTIN_BULK = 32 << 20
CHUNK = 256 * 1024
_budget = [BUILTIN_BULK]  # what is left of it in this process


def sha256(data: bytes = b"") -> Any:
    """A sha256 hash object (``update``, ``digest``, ``hexdigest``), without OpenSSL."""
    return _builtin_sha256(data)


def _for_file(size: int) -> Any:
    # libcrypto already mapped (hashlib, or ssl for a fetch): its speed costs nothing more.
    if "_hashlib" not in sys.modules and "_ssl" not in sys.modules and size <= _budget[0]:
        _budget[0] -= size
        return _builtin_sha256()
    import hashlib

    return hashlib.sha256()


def hash_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """sha256 hex and size of a file's bytes, read in chunks (never the whole file at once)."""
    with open(path, "rb") as fh:
        digest = _for_file(os.fstat(fh.fileno()).st_size)
        size = 0
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_sha256(path: str | os.PathLike[str] | Path) -> str:
    """Hex sha256 of the file's bytes."""
    return hash_file(path)[0]
