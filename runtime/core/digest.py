"""The sha256 of a file, read in chunks: the one helper packing, attesting and wheels share."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file's bytes (``hashlib.file_digest``: no whole-file read)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
