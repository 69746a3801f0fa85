"""Writing a bundle's members into an empty directory, each checked as it streams by.

`extract_members` is the one pass of an install over the archive: every member is checked
against the plan (``plan.py``) before it is written, a file's archive header size against the
size the signed manifest lists (and no more than that is ever copied); files are created with O_EXCL and
O_NOFOLLOW, hashed as they are written and fsynced on a second thread while the next ones are
decompressed; files under ``bin/`` are made read-only (as acquisition leaves them); symlinks
are made last (so no write can pass through one), then the empty dirs, the links to the shared
dirs of the prefix (``data logs cache temp -> ../../X``), and an fsync of every directory.
Any failure raises with one line; the caller removes the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from runyard.runtime.core.atomic import atomic_write_bytes, fsync_dir
from runyard.runtime.core.errors import UnsafeArchiveError
from runyard.runtime.core.tree import TOP_DIRS

from .layout import DIR_MODE, EXEC_MODE, FILE_MODE, MANIFEST, SHARED_DIRS, BundleError
from .plan import BundlePlan
from .reader import BundleReader, copy_member

__all__ = ["check_members", "extract_members"]


class _Flusher:
    """fsyncs written files on a thread while the next ones are decompressed and written.

    It is handed a duplicate of each file's descriptor, so nothing is opened twice.
    """

    def __init__(self) -> None:
        self.queue: SimpleQueue[int | None] = SimpleQueue()
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._run, name="bundle-fsync", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (fd := self.queue.get()) is not None:
            try:
                if self.error is None:
                    os.fsync(fd)
            except OSError as exc:
                self.error = exc
            finally:
                os.close(fd)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _dir_maker(root: Path) -> Callable[[str], None]:
    """mkdir -p under ``root`` with mode 0755 whatever the umask (chmod only when needed)."""
    made: set[str] = {""}
    umask = os.umask(0o022)
    os.umask(umask)
    fix = DIR_MODE & ~umask != DIR_MODE

    def make(rel: str) -> None:
        if rel in made:
            return
        make(rel.rpartition("/")[0])
        path = root / rel
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
        if fix:
            os.chmod(path, DIR_MODE)
        made.add(rel)

    return make


def _write_member(path: Path, src: Any, size: int, mode: int, label: str) -> tuple[str, int]:
    """Write a new file from ``src``; returns (sha256, a dup of its fd for the flusher)."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        out = os.fdopen(fd, "wb", buffering=0, closefd=False)

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        copy_member(src, sink, size, label)
        os.fchmod(fd, mode)
        return digest.hexdigest(), os.dup(fd)
    finally:
        os.close(fd)


def check_members(reader: BundleReader, plan: BundlePlan) -> None:
    """Read every member against the plan, as ``extract_members`` does, writing nothing.

    What an install runs when it will extract nothing (the version is already there, or the
    policy refuses it), so a tampered bundle is named whatever is installed.
    """
    label = reader.label
    for item in reader.items():
        entry = item.entry
        if entry is None:
            raise UnsafeArchiveError(item.problem or f"{label}: unsafe member {item.raw!r}")
        problem = plan.expect(entry) or (plan.check_size(entry) if item.open else None)
        if problem:
            raise BundleError(f"{label}: {problem}")
        if item.open is None:
            continue
        digest = hashlib.sha256()
        with item.open() as src:
            copy_member(src, digest.update, plan.size_of(entry.name), label)
        problem = plan.check_digest(entry.name, digest.hexdigest())
        if problem:
            raise BundleError(f"{label}: {problem}")
    missing = plan.finish()
    if missing:
        raise BundleError(f"{label}: {missing[0]}")


def extract_members(reader: BundleReader, plan: BundlePlan, manifest: bytes, root: Path) -> None:
    """Stream every member into ``root`` (an empty temp dir), checked against the plan."""
    label = reader.label
    make_dirs = _dir_maker(root)
    links: list[tuple[str, str]] = []
    executables = plan.contents.executables
    flusher = _Flusher()
    try:
        atomic_write_bytes(root / MANIFEST, manifest, FILE_MODE)
        for item in reader.items():
            entry = item.entry
            if entry is None:
                raise UnsafeArchiveError(item.problem or f"{label}: unsafe member {item.raw!r}")
            problem = plan.expect(entry)
            if problem:
                raise BundleError(f"{label}: {problem}")
            if entry.kind == "dir":
                make_dirs(entry.name)
                continue
            if entry.kind == "symlink":
                links.append((entry.name, entry.target))
                continue
            problem = plan.check_size(entry)  # before a byte: a grown member fills no disk
            if problem:
                raise BundleError(f"{label}: {problem}")
            make_dirs(entry.name.rpartition("/")[0])
            mode = EXEC_MODE if entry.name in executables else FILE_MODE
            if entry.name.startswith("bin/"):
                mode &= ~0o222  # bin/ is read-only once installed, as acquisition leaves it
            assert item.open is not None
            with item.open() as src:
                size = plan.size_of(entry.name)
                sha, fd = _write_member(root / entry.name, src, size, mode, label)
            flusher.queue.put(fd)
            problem = plan.check_digest(entry.name, sha)
            if problem:
                raise BundleError(f"{label}: {problem}")
        missing = plan.finish()
        if missing:
            raise BundleError(f"{label}: {missing[0]}")
        for rel in plan.contents.dirs:
            make_dirs(rel)
        for rel, target in links:
            make_dirs(rel.rpartition("/")[0])
            os.symlink(target, root / rel)
        for name in TOP_DIRS:
            if name in SHARED_DIRS:
                os.symlink(f"../../{name}", root / name)
            else:
                make_dirs(name)
    finally:
        flusher.close()
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        fsync_dir(dirpath)
