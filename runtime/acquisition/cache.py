"""The archive cache: ``cache/archives/`` and its index ``cache/index.json``.

The index records, for every cached archive, what it is (name, version, platform, sha256, size,
source URL) and when it was last used by an ``ensure``. Eviction (``gc``) goes by that recorded
last use, never by atime, which many boxes mount with ``noatime``.
"""

from __future__ import annotations

import contextlib
import os
import time

import msgspec

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import ManifestError
from runyard.runtime.core.locking import tree_lock
from runyard.runtime.core.manifest import decode_error_message, load_manifest
from runyard.runtime.core.tree import RuntimeTree

__all__ = [
    "CacheEntry",
    "CacheIndex",
    "GcReport",
    "archive_file_name",
    "cache_owner",
    "collect_garbage",
    "load_index",
    "record_use",
    "record_use_of",
]

INDEX_LOCK = "cache-index"


class CacheEntry(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: str
    version: str
    os: str
    arch: str
    sha256: str
    size: int
    url: str
    fetched_at: int = 0
    #: time.time_ns() of the last ensure that used this archive.
    last_used: int = 0


class CacheIndex(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    version: str = "1"
    archives: dict[str, CacheEntry] = {}


class Removed(msgspec.Struct):
    file: str
    bytes: int
    name: str | None = None
    version: str | None = None


class GcReport(msgspec.Struct):
    removed: list[Removed]
    freed_bytes: int
    kept_bytes: int
    max_bytes: int
    dry_run: bool
    #: Archives kept though over budget, because an installed version needs them.
    protected: list[str]


_decoder = msgspec.json.Decoder(CacheIndex)
_encoder = msgspec.json.Encoder(order="sorted")


def archive_file_name(name: str, version: str, platform: str, sha256: str, url: str) -> str:
    """``hello-1.0.0-linux-amd64-0123456789ab.tar.gz``: readable, and unique per content."""
    base = url.rsplit("/", 1)[-1].split("?", 1)[0].lower()
    for ext in (".tar.gz", ".tgz", ".tar.xz", ".txz", ".zip"):
        if base.endswith(ext):
            break
    else:
        ext = os.path.splitext(base)[1] or ".bin"
    return f"{name}-{version}-{platform}-{sha256[:12]}{ext}"


def load_index(tree: RuntimeTree) -> CacheIndex:
    try:
        data = read_capped(tree.cache_index_path, SMALL_FILE)
    except FileNotFoundError:
        return CacheIndex()
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{tree.cache_index_path}: {decode_error_message(exc)}") from None


def _save_index(tree: RuntimeTree, index: CacheIndex) -> None:
    tree.cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(tree.cache_index_path, msgspec.json.format(_encoder.encode(index)) + b"\n")


def record_use(tree: RuntimeTree, file_name: str, entry: CacheEntry | None = None) -> None:
    """Mark ``file_name`` as used now; ``entry`` adds or replaces its record."""
    with tree_lock(tree, INDEX_LOCK):
        index = load_index(tree)
        now = time.time_ns()
        if entry is not None:
            index.archives[file_name] = entry
        found = index.archives.get(file_name)
        if found is None:
            return
        found.last_used = max(now, found.last_used + 1)
        _save_index(tree, index)


def record_use_of(tree: RuntimeTree, sha256: str) -> None:
    """Mark every cached archive with ``sha256`` as used now (an install used without its
    catalog is known by its checksum, not by its archive's file name)."""
    for name, entry in load_index(tree).archives.items():
        if entry.sha256 == sha256:
            record_use(tree, name)


def collect_garbage(
    tree: RuntimeTree, max_bytes: int, *, dry_run: bool = False, include_installed: bool = False
) -> GcReport:
    """Evict least-recently-used archives until the cache holds at most ``max_bytes``.

    Archives of versions the manifest lists as installed stay unless ``include_installed``;
    files in ``cache/archives/`` that the index does not know count as never used.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    installed = {s.checksum for s in load_manifest(tree).services}
    with tree_lock(tree, INDEX_LOCK):
        index = load_index(tree)
        files: dict[str, int] = {}
        if tree.archives_dir.is_dir():
            with os.scandir(tree.archives_dir) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False) and not e.name.startswith("."):
                        files[e.name] = e.stat(follow_symlinks=False).st_size
        total = sum(files.values())

        def last_used(name: str) -> int:
            entry = index.archives.get(name)
            return entry.last_used if entry else 0

        removed: list[Removed] = []
        protected: list[str] = []
        for name in sorted(files, key=lambda n: (last_used(n), n)):
            if total <= max_bytes:
                break
            entry = index.archives.get(name)
            if entry and entry.sha256 in installed and not include_installed:
                protected.append(name)
                continue
            removed.append(
                Removed(
                    name,
                    files[name],
                    entry.name if entry else None,
                    entry.version if entry else None,
                )
            )
            total -= files[name]
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tree.archives_dir / name)
                index.archives.pop(name, None)
        if not dry_run:
            # Forget index records whose file is gone (removed by hand, or by us just now).
            for name in [n for n in index.archives if n not in files]:
                index.archives.pop(name)
            _save_index(tree, index)
    return GcReport(
        removed=removed,
        freed_bytes=sum(r.bytes for r in removed),
        kept_bytes=total,
        max_bytes=max_bytes,
        dry_run=dry_run,
        protected=protected if total > max_bytes else [],
    )


def cache_owner(tree: RuntimeTree) -> dict[str, str]:
    """Archive file name -> service name, for disk-usage attribution."""
    return {name: e.name for name, e in load_index(tree).archives.items()}
