"""Safe extraction of downloaded service archives (.tar.gz, .tar.xz, .zip) into the tree.

This module owns the rule that an archive can only ever create files inside its own install
directory. Every member is checked before a single byte is written; the members are then
written by us (never ``extractall``) into a temp dir beside the destination, which is renamed
into place in one step. On any failure the temp dir is removed, so a destination either holds
a complete, checked extraction or does not exist.

What is refused (UnsafeArchiveError, one line naming the archive, the member and the reason):
absolute names, ``..`` components, NUL and empty names; symlinks that point outside the root,
alone or through other symlinks; hard links to anything but an earlier regular file member;
devices, FIFOs and every other special type; setuid, setgid and sticky bits; members placed
under a symlink or under a regular file; duplicate names; more bytes than ``max_bytes``.
Backslashes count as separators, so ``..\\x`` is caught on every OS. The rules themselves
live in ``archive_rules.py``, shared with runtime bundles (``bundle/``).

Kept: regular files (the permission bits, minus group/other write and plus owner read/write),
directories (always 0o755), relative symlinks that stay inside, and hard links. Dropped:
owners and mtimes. The returned digests cover regular files and hard links, not symlinks: a
symlink's content is its target's, which is listed under the target's own name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from runyard.runtime.acquisition.archive_rules import (
    Entry,
    check_plan,
    clean_name,
    fail,
    reading,
    tar_entry,
    zip_entry,
)
from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.errors import TreeError, UnsafeArchiveError
from runyard.runtime.core.space import on_disk

__all__ = ["CHUNK_SIZE", "archive_format", "extract_archive"]

CHUNK_SIZE = 1 << 20


def archive_format(path: Path | str) -> str:
    """ "tar.gz", "tar.xz" or "zip", from the file name alone."""
    name = Path(path).name
    lower = name.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith((".tar.xz", ".txz")):
        return "tar.xz"
    if lower.endswith(".zip"):
        return "zip"
    raise UnsafeArchiveError(
        f"{name}: unsupported archive format (expected .tar.gz, .tar.xz or .zip)"
    )


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    bin_path: str | None = None,
    max_bytes: int | None = None,
    reserve: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """Extract ``archive`` to ``dest`` (which must not exist); return {posix path: sha256}.

    ``bin_path``, relative to the archive root, must be a regular file member and is made
    executable. ``max_bytes`` caps the total size of the regular files. ``reserve`` is called
    with the bytes the extraction will take on ``dest``'s file system (the declared sizes, in
    whole blocks), after every member is checked and before anything is written; it raises to
    refuse (a decompression bomb is refused there, not when the disk is full).
    """
    archive = Path(archive)
    dest = Path(dest)
    label = archive.name
    fmt = archive_format(archive)
    if os.path.lexists(dest):
        raise TreeError(f"{dest} already exists")
    with _open_archive(archive, fmt) as (entries, open_member):
        check_plan(entries, label)
        files = {e.name: e for e in entries if e.kind in ("file", "hardlink")}
        if bin_path is not None:
            _check_bin_path(bin_path, entries, files, label)
        total = sum(e.size for e in entries if e.kind == "file")
        if max_bytes is not None and total > max_bytes:
            raise UnsafeArchiveError(
                f"{label}: archive expands to {total} bytes, more than the limit of {max_bytes}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if reserve is not None:
            others = sum(1 for e in entries if e.kind != "file")
            reserve(on_disk(dest.parent, (e.size for e in entries if e.kind == "file"), others))
        temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            digests = _write_all(entries, temp, open_member, label)
            if bin_path is not None:
                exe = temp / clean_name(bin_path)[0]
                os.chmod(exe, stat.S_IMODE(os.lstat(exe).st_mode) | 0o111)
            os.chmod(temp, 0o755)
            # Checked again, as late as possible: rename() would replace an empty dir silently.
            if os.path.lexists(dest):
                raise TreeError(f"{dest} already exists")
            os.rename(temp, dest)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    fsync_dir(dest.parent)
    return digests


# --- reading --------------------------------------------------------------------------------


_Opener = Callable[[Entry], IO[bytes]]


@contextlib.contextmanager
def _open_archive(archive: Path, fmt: str) -> Iterator[tuple[list[Entry], _Opener]]:
    """The archive's members as entries, and a way to read a file entry's bytes."""
    label = archive.name
    with contextlib.ExitStack() as stack:
        handle: tarfile.TarFile | zipfile.ZipFile
        with reading(label):
            if fmt == "zip":
                handle = stack.enter_context(zipfile.ZipFile(archive))
                entries = [zip_entry(handle, info, label) for info in handle.infolist()]
            else:
                mode = "r:gz" if fmt == "tar.gz" else "r:xz"
                handle = stack.enter_context(tarfile.open(archive, mode))
                entries = [tar_entry(m, label) for m in handle.getmembers()]
        yield entries, lambda entry: _open_member(handle, entry)


def _open_member(handle: tarfile.TarFile | zipfile.ZipFile, entry: Entry) -> IO[bytes]:
    if isinstance(handle, zipfile.ZipFile):
        assert isinstance(entry.source, zipfile.ZipInfo)
        return handle.open(entry.source)
    assert isinstance(entry.source, tarfile.TarInfo)
    fh = handle.extractfile(entry.source)
    if fh is None:  # only for non-regular members, which never get here
        raise tarfile.ReadError(f"member {entry.name!r} has no data")
    return fh


def _check_bin_path(
    bin_path: str, entries: list[Entry], files: dict[str, Entry], label: str
) -> None:
    name, problem = clean_name(bin_path)
    if problem or name not in files:
        others = {e.name: e.kind for e in entries}
        if not problem and name in others:
            raise UnsafeArchiveError(
                f"{label}: binPath {bin_path!r} is a {others[name]}, not a regular file"
            )
        raise UnsafeArchiveError(f"{label}: binPath {bin_path!r} is not in the archive")


# --- writing --------------------------------------------------------------------------------


def _write_all(
    entries: list[Entry], root: Path, open_member: _Opener, label: str
) -> dict[str, str]:
    """Create every entry under ``root``: dirs and files, then hard links, then symlinks.

    Symlinks come last so that no write can pass through one even if a check above were wrong;
    files are opened O_EXCL | O_NOFOLLOW for the same reason.
    """
    made_dirs: set[str] = {""}
    digests: dict[str, str] = {}
    order = {"dir": 0, "file": 0, "hardlink": 1, "symlink": 2}
    for e in sorted(entries, key=lambda e: order[e.kind]):  # stable: archive order otherwise
        if e.name == "":
            continue
        parent = e.name.rpartition("/")[0]
        _make_dirs(root, parent, made_dirs)
        path = root / e.name
        try:
            if e.kind == "dir":
                _make_dirs(root, e.name, made_dirs)
            elif e.kind == "file":
                digests[e.name] = _write_file(path, e, open_member, label)
            elif e.kind == "hardlink":
                os.link(root / e.target, path, follow_symlinks=False)
                digests[e.name] = digests[e.target]
            else:
                os.symlink(e.target, path)
        except FileExistsError:
            # Only a case- or normalisation-insensitive file system gets here: the names
            # differ in the archive but are one path on disk.
            raise fail(label, e.name, "collides with another member on this file system") from None
    for rel in sorted(made_dirs, key=len, reverse=True):
        fsync_dir(root / rel)
    return digests


def _make_dirs(root: Path, rel: str, made: set[str]) -> None:
    if rel in made:
        return
    parent = rel.rpartition("/")[0]
    _make_dirs(root, parent, made)
    path = root / rel
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise
    # mkdir's mode is filtered by the umask; the tree's directories are always 0o755.
    os.chmod(path, 0o755)
    made.add(rel)


def _write_file(path: Path, entry: Entry, open_member: _Opener, label: str) -> str:
    """Stream one member to a new file, hashing as it goes; return the sha256 hex."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        with reading(label):
            src = open_member(entry)
        with src:
            written = 0
            while True:
                with reading(label):
                    chunk = src.read(CHUNK_SIZE)
                if not chunk:
                    break
                written += len(chunk)
                if written > entry.size:
                    # The size checked against max_bytes was the declared one; hold it to that.
                    raise fail(
                        label, entry.name, f"holds more than its declared {entry.size} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, entry.mode)
    return digest.hexdigest()
