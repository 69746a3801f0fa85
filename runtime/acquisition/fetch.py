"""Fetching archives into the cache: streamed, hashed and size-checked while written.

The bytes go to a temp file beside the final name and are renamed into place only when their
sha256 and size match the catalog; a mismatch deletes the partial file, and so does a full
disk. The catalog's size is checked against the free space before the first request. A
per-archive lock makes two concurrent fetches of one archive download it once: the second
finds the file in place.

An http(s) URL is opened by ``urls.open_url``: credentials in it, or those of the catalog it
came from, go to that origin only, and every message shows the URL redacted.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Protocol

from runyard.runtime.acquisition.urls import Credentials, open_url, redact_url
from runyard.runtime.core.atomic import atomic_output
from runyard.runtime.core.digest import hash_file
from runyard.runtime.core.errors import AcquisitionError, ChecksumMismatch
from runyard.runtime.core.locking import tree_lock
from runyard.runtime.core.space import no_space_as_error, on_disk, require_space
from runyard.runtime.core.tree import RuntimeTree

__all__ = ["Progress", "fetch_into_cache", "hash_file", "open_source"]

CHUNK = 256 * 1024
TIMEOUT_SECS = 60


class Progress(Protocol):
    def __call__(self, done: int, total: int) -> None: ...


def open_source(url: str, credentials: Credentials | None = None) -> BinaryIO:
    """A readable binary stream for a path, file://, http:// or https:// URL; ``credentials``
    (those of the catalog) are sent only when the URL is on their origin."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return open_url(url, credentials, TIMEOUT_SECS, AcquisitionError)  # type: ignore[return-value]
    try:
        if scheme == "file":
            return open(urllib.request.url2pathname(parts.path), "rb")
        if len(scheme) <= 1:  # a plain path (or a Windows drive letter)
            return open(url, "rb")
    except OSError as exc:
        raise AcquisitionError(f"{redact_url(url)}: {exc.strerror or exc}") from None
    raise AcquisitionError(f"{redact_url(url)}: unsupported scheme {scheme!r}")


def tty_progress(label: str) -> Progress | None:
    """A one-line progress bar on stderr when it is a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{label} [{bar:<30}] {frac:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _download(
    url: str,
    target: Path,
    sha256: str,
    size: int,
    progress: Progress | None,
    credentials: Credentials | None,
) -> None:
    shown = redact_url(url)
    # 0600 as mkstemp made it: a cached archive is the tree owner's.
    with (
        atomic_output(target, 0o600, suffix=".part") as out,
        open_source(url, credentials) as src,
    ):
        digest = hashlib.sha256()
        got = 0
        while True:
            try:
                chunk = src.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise AcquisitionError(f"{shown}: read failed: {exc}") from None
            if not chunk:
                break
            got += len(chunk)
            if got > size:
                raise ChecksumMismatch(
                    f"{shown}: size mismatch: expected {size} bytes, got more than that"
                )
            digest.update(chunk)
            out.write(chunk)
            if progress:
                progress(got, size)
        if got != size:
            raise ChecksumMismatch(f"{shown}: size mismatch: expected {size} bytes, got {got}")
        actual = digest.hexdigest()
        if actual != sha256:
            raise ChecksumMismatch(f"{shown}: sha256 mismatch: expected {sha256}, got {actual}")


def fetch_into_cache(
    tree: RuntimeTree,
    url: str,
    file_name: str,
    sha256: str,
    size: int,
    progress: Progress | None = None,
    *,
    label: str | None = None,
    credentials: Credentials | None = None,
) -> tuple[Path, bool]:
    """The cached archive ``file_name``, downloading it when absent or damaged.

    Returns (path, fetched): ``fetched`` is False when the cache already held the right bytes,
    in which case no network I/O happened. A download that the catalog's size says cannot fit
    is refused before the first request (NoSpaceError naming ``label``, the archive file name
    by default); a disk that fills up anyway is the same error, with the partial file gone.
    ``credentials`` are the catalog's, sent only if ``url`` is on the catalog's origin.
    """
    tree.archives_dir.mkdir(parents=True, exist_ok=True)
    target = tree.archives_dir / file_name
    with tree_lock(tree, f"fetch-{file_name}"):
        if target.is_file():
            actual, got = hash_file(target)
            if actual == sha256 and got == size:
                return target, False
            # Damaged or replaced behind our back: fetch it again rather than trust it.
            target.unlink()
        doing = f"downloading {label or file_name} into cache/"
        need = on_disk(tree.archives_dir, [size])
        require_space(tree.archives_dir, need, doing)
        with no_space_as_error(tree.archives_dir, doing, need):
            _download(url, target, sha256, size, progress, credentials)
    return target, True
