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
Backslashes count as separators, so ``..\\x`` is caught on every OS.

Kept: regular files (the permission bits, minus group/other write and plus owner read/write),
directories (always 0o755), relative symlinks that stay inside, and hard links. Dropped:
owners and mtimes. The returned digests cover regular files and hard links, not symlinks: a
symlink's content is its target's, which is listed under the target's own name.
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .atomic import fsync_dir
from .errors import TreeError, UnsafeArchiveError

__all__ = ["CHUNK_SIZE", "archive_format", "extract_archive"]

CHUNK_SIZE = 1 << 20

# Longer than any PATH_MAX: a zip "symlink" bigger than this is not a link target.
_MAX_LINK_TARGET = 4096
# Like the kernel's MAXSYMLINKS: past this a chain is a loop, or built to be one.
_MAX_LINK_HOPS = 40
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_ZIP_UNIX = 3

# Everything a damaged archive can raise while being read; each becomes "cannot read archive".
_READ_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    # zipfile: encrypted members (RuntimeError) and unknown compression methods.
    RuntimeError,
    NotImplementedError,
)

_Kind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass
class _Entry:
    """One checked member: its clean name and what to create for it."""

    name: str
    kind: _Kind
    mode: int = 0
    size: int = 0
    #: symlink: the (separator-normalised) target; hardlink: the clean name of the target.
    target: str = ""
    #: The TarInfo / ZipInfo to read a regular file's bytes from.
    source: object = None


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
) -> dict[str, str]:
    """Extract ``archive`` to ``dest`` (which must not exist); return {posix path: sha256}.

    ``bin_path``, relative to the archive root, must be a regular file member and is made
    executable. ``max_bytes`` caps the total size of the regular files.
    """
    archive = Path(archive)
    dest = Path(dest)
    label = archive.name
    fmt = archive_format(archive)
    if os.path.lexists(dest):
        raise TreeError(f"{dest} already exists")
    with _open_archive(archive, fmt) as (entries, open_member):
        _check_plan(entries, label)
        files = {e.name: e for e in entries if e.kind in ("file", "hardlink")}
        if bin_path is not None:
            _check_bin_path(bin_path, entries, files, label)
        total = sum(e.size for e in entries if e.kind == "file")
        if max_bytes is not None and total > max_bytes:
            raise UnsafeArchiveError(
                f"{label}: archive expands to {total} bytes, more than the limit of {max_bytes}"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            digests = _write_all(entries, temp, open_member, label)
            if bin_path is not None:
                exe = temp / _clean_name(bin_path)[0]
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


_Opener = Callable[[_Entry], IO[bytes]]


@contextlib.contextmanager
def _open_archive(archive: Path, fmt: str) -> Iterator[tuple[list[_Entry], _Opener]]:
    """The archive's members as entries, and a way to read a file entry's bytes."""
    label = archive.name
    with contextlib.ExitStack() as stack:
        handle: tarfile.TarFile | zipfile.ZipFile
        with _reading(label):
            if fmt == "zip":
                handle = stack.enter_context(zipfile.ZipFile(archive))
                entries = _zip_entries(handle, label)
            else:
                mode = "r:gz" if fmt == "tar.gz" else "r:xz"
                handle = stack.enter_context(tarfile.open(archive, mode))
                entries = _tar_entries(handle, label)
        yield entries, lambda entry: _open_member(handle, entry)


def _open_member(handle: tarfile.TarFile | zipfile.ZipFile, entry: _Entry) -> IO[bytes]:
    if isinstance(handle, zipfile.ZipFile):
        assert isinstance(entry.source, zipfile.ZipInfo)
        return handle.open(entry.source)
    assert isinstance(entry.source, tarfile.TarInfo)
    fh = handle.extractfile(entry.source)
    if fh is None:  # only for non-regular members, which never get here
        raise tarfile.ReadError(f"member {entry.name!r} has no data")
    return fh


@contextlib.contextmanager
def _reading(label: str) -> Iterator[None]:
    """Turn a damaged-archive exception into UnsafeArchiveError naming the archive."""
    try:
        yield
    except UnsafeArchiveError:
        raise
    except _READ_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise UnsafeArchiveError(f"{label}: cannot read archive: {reason}") from None


def _fail(label: str, member: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{label}: member {member!r} {reason}")


def _clean_name(raw: str) -> tuple[str, str | None]:
    """(clean posix name, None) or (raw, why it is unsafe). "" is the archive root itself."""
    if raw == "":
        return raw, "has an empty name"
    if "\x00" in raw:
        return raw, "contains NUL"
    # Backslash is a separator on Windows; treating it as one everywhere means a name that
    # escapes there is refused here too, whatever OS the archive is checked on.
    name = raw.replace("\\", "/")
    if name.startswith("/") or _DRIVE_RE.match(name):
        return raw, "is an absolute path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return raw, "escapes the target (contains '..')"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # tarfile keeps undecodable bytes as surrogates; they could not go into the manifest.
        return raw, "has a name that is not valid UTF-8"
    return "/".join(parts), None


def _check_mode(label: str, raw: str, mode: int) -> None:
    if mode & stat.S_ISUID:
        raise _fail(label, raw, "has the setuid bit")
    if mode & stat.S_ISGID:
        raise _fail(label, raw, "has the setgid bit")
    if mode & stat.S_ISVTX:
        raise _fail(label, raw, "has the sticky bit")


def _check_link_target(label: str, raw: str, target: str) -> str:
    """The symlink target with / separators, unless it is empty, has NUL or is absolute."""
    if not target:
        raise _fail(label, raw, "is a symlink with an empty target")
    if "\x00" in target:
        raise _fail(label, raw, "is a symlink whose target contains NUL")
    target = target.replace("\\", "/")
    if target.startswith("/") or _DRIVE_RE.match(target):
        raise _fail(label, raw, f"is a symlink to an absolute path ({target!r})")
    return target


def _file_mode(perms: int) -> int:
    # Group/other write is dropped as tar does under the usual umask: a binary anyone can
    # rewrite is a binary anyone can run as us. The owner always keeps read and write, so the
    # tree can be re-hashed and removed later.
    return (perms & 0o755) | 0o600


def _tar_entries(tf: tarfile.TarFile, label: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for m in tf.getmembers():
        name, problem = _clean_name(m.name)
        if problem:
            raise _fail(label, m.name, problem)
        _check_mode(label, m.name, m.mode)
        if m.isreg():
            entries.append(_Entry(name, "file", _file_mode(m.mode), m.size, source=m))
        elif m.isdir():
            entries.append(_Entry(name, "dir"))
        elif m.issym():
            target = _check_link_target(label, m.name, m.linkname)
            entries.append(_Entry(name, "symlink", target=target))
        elif m.islnk():
            target, problem = _clean_name(m.linkname)
            if problem or not target:
                raise _fail(label, m.name, f"is a hard link to {m.linkname!r}, outside the target")
            entries.append(_Entry(name, "hardlink", target=target))
        elif m.ischr():
            raise _fail(label, m.name, "is a character device")
        elif m.isblk():
            raise _fail(label, m.name, "is a block device")
        elif m.isfifo():
            raise _fail(label, m.name, "is a FIFO")
        else:
            raise _fail(label, m.name, f"has unsupported type {m.type!r}")
    return entries


def _zip_entries(zf: zipfile.ZipFile, label: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for info in zf.infolist():
        # orig_filename: zipfile cuts `filename` at the first NUL, hiding it from us.
        raw = info.orig_filename
        name, problem = _clean_name(raw)
        if problem:
            raise _fail(label, raw, problem)
        # The high word is a Unix st_mode; type and special bits are honoured whoever made the
        # archive (refusing is the safe side), the permission bits only from Unix zips.
        unix_mode = info.external_attr >> 16
        _check_mode(label, raw, unix_mode)
        kind = stat.S_IFMT(unix_mode)
        if kind == stat.S_IFLNK:
            if info.file_size > _MAX_LINK_TARGET:
                raise _fail(label, raw, "is a symlink with an over-long target")
            data = zf.read(info)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(label, raw, "is a symlink whose target is not UTF-8") from None
            target = _check_link_target(label, raw, text)
            entries.append(_Entry(name, "symlink", target=target))
        elif kind == stat.S_IFDIR or (kind in (0, stat.S_IFREG) and info.is_dir()):
            entries.append(_Entry(name, "dir"))
        elif kind in (0, stat.S_IFREG):
            perms = unix_mode & 0o777
            if info.create_system != _ZIP_UNIX or perms == 0:
                perms = 0o644
            entries.append(_Entry(name, "file", _file_mode(perms), info.file_size, source=info))
        elif kind == stat.S_IFCHR:
            raise _fail(label, raw, "is a character device")
        elif kind == stat.S_IFBLK:
            raise _fail(label, raw, "is a block device")
        elif kind == stat.S_IFIFO:
            raise _fail(label, raw, "is a FIFO")
        else:
            raise _fail(label, raw, f"has unsupported file type {oct(kind)}")
    return entries


# --- checking the whole plan ----------------------------------------------------------------


def _fold(name: str) -> str:
    # On a case- or normalisation-insensitive file system (macOS, Windows) `Lib` and `lib` are
    # one path, so symlink checks compare names folded the same way.
    return unicodedata.normalize("NFD", name).casefold()


def _check_plan(entries: list[_Entry], label: str) -> None:
    """Rules that need every member: duplicates, parents, hard link and symlink targets."""
    kinds: dict[str, _Kind] = {}
    links = {_fold(e.name): e.target for e in entries if e.kind == "symlink"}
    for e in entries:
        if e.name == "":
            if e.kind != "dir":
                raise _fail(label, e.name, "has an empty name")
            continue
        earlier = kinds.get(e.name)
        # A directory listed twice overwrites nothing; anything else listed twice would.
        if earlier is not None and not (earlier == "dir" and e.kind == "dir"):
            raise _fail(label, e.name, "appears more than once in the archive")
        if e.kind == "hardlink" and kinds.get(e.target) not in ("file", "hardlink"):
            raise _fail(
                label, e.name, f"is a hard link to {e.target!r}, not an earlier regular file"
            )
        kinds[e.name] = e.kind
    for e in entries:
        parts = e.name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            # Catches both orders: "dir -> /tmp" then "dir/x", and "dir/x" then "dir -> /tmp".
            if _fold(prefix) in links:
                raise _fail(label, e.name, f"is under symlink {prefix!r}")
            if kinds.get(prefix) in ("file", "hardlink"):
                raise _fail(label, e.name, f"is under regular file {prefix!r}")
        if e.kind == "symlink":
            _check_symlink(label, e, links)


def _check_symlink(label: str, entry: _Entry, links: dict[str, str]) -> None:
    """Resolve the link inside the archive, following its other links; refuse any escape.

    Plain normpath is not enough: with `d -> .` at the root, `e -> d/..` normalises to `.` but
    really resolves to the root's parent.
    """
    resolved: list[str] = []
    todo = entry.name.split("/")[:-1] + entry.target.split("/")
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _fail(
                    label, entry.name, f"is a symlink to {entry.target!r}, outside the target"
                )
            resolved.pop()
            continue
        target = links.get(_fold("/".join([*resolved, part])))
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise _fail(label, entry.name, "is a symlink in a loop or a chain too long")
        if target.startswith("/") or _DRIVE_RE.match(target):
            raise _fail(label, entry.name, f"is a symlink to {entry.target!r}, outside the target")
        # A link resolves relative to its own directory, which is `resolved` as it stands.
        todo = target.split("/") + todo


def _check_bin_path(
    bin_path: str, entries: list[_Entry], files: dict[str, _Entry], label: str
) -> None:
    name, problem = _clean_name(bin_path)
    if problem or name not in files:
        others = {e.name: e.kind for e in entries}
        if not problem and name in others:
            raise UnsafeArchiveError(
                f"{label}: binPath {bin_path!r} is a {others[name]}, not a regular file"
            )
        raise UnsafeArchiveError(f"{label}: binPath {bin_path!r} is not in the archive")


# --- writing --------------------------------------------------------------------------------


def _write_all(
    entries: list[_Entry], root: Path, open_member: _Opener, label: str
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
            raise _fail(label, e.name, "collides with another member on this file system") from None
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


def _write_file(path: Path, entry: _Entry, open_member: _Opener, label: str) -> str:
    """Stream one member to a new file, hashing as it goes; return the sha256 hex."""
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        with _reading(label):
            src = open_member(entry)
        with src:
            written = 0
            while True:
                with _reading(label):
                    chunk = src.read(CHUNK_SIZE)
                if not chunk:
                    break
                written += len(chunk)
                if written > entry.size:
                    # The size checked against max_bytes was the declared one; hold it to that.
                    raise _fail(
                        label, entry.name, f"holds more than its declared {entry.size} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, entry.mode)
    return digest.hexdigest()
