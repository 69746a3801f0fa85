"""The safety rules every archive Runyard reads must pass, member by member and as a whole.

Used by ``extract.py`` (service archives) and ``bundle/`` (runtime bundles), so both refuse the
same things, with the same one-line messages (UnsafeArchiveError naming the archive, the member
and the reason):

- per member (`tar_entry`, `zip_entry`): absolute names, ``..`` components, NUL and empty
  names, names that are not UTF-8; devices, FIFOs and every other special type; setuid,
  setgid and sticky bits; symlinks with an empty, NUL-holding or absolute target; hard links
  to a name that is itself unsafe. Backslashes count as separators, so ``..\\x`` is caught on
  every OS.
- over all members (`check_plan`): duplicate names; members placed under a symlink or under a
  regular file; hard links to anything but an earlier regular file member; symlinks that
  resolve outside the root, alone or through other symlinks (or in a loop).

A member that passes becomes an `Entry`: its clean posix name, its kind, and for a regular file
the mode to create it with (`file_mode`: group/other write dropped, owner read/write added).
"""

from __future__ import annotations

import contextlib
import lzma
import re
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from runyard.runtime.core.errors import UnsafeArchiveError

__all__ = [
    "READ_ERRORS",
    "Entry",
    "EntryKind",
    "check_plan",
    "clean_name",
    "fail",
    "file_mode",
    "reading",
    "tar_entry",
    "zip_entry",
]

# Longer than any PATH_MAX: a zip "symlink" bigger than this is not a link target.
_MAX_LINK_TARGET = 4096
# Like the kernel's MAXSYMLINKS: past this a chain is a loop, or built to be one.
_MAX_LINK_HOPS = 40
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_ZIP_UNIX = 3

# Everything a damaged archive can raise while being read; each becomes "cannot read archive".
READ_ERRORS: tuple[type[BaseException], ...] = (
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

EntryKind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass
class Entry:
    """One checked member: its clean name and what to create for it."""

    name: str
    kind: EntryKind
    mode: int = 0
    size: int = 0
    #: symlink: the (separator-normalised) target; hardlink: the clean name of the target.
    target: str = ""
    #: The TarInfo / ZipInfo to read a regular file's bytes from.
    source: object = None


@contextlib.contextmanager
def reading(label: str) -> Iterator[None]:
    """Turn a damaged-archive exception into UnsafeArchiveError naming the archive."""
    try:
        yield
    except UnsafeArchiveError:
        raise
    except READ_ERRORS as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise UnsafeArchiveError(f"{label}: cannot read archive: {reason}") from None


def fail(label: str, member: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{label}: member {member!r} {reason}")


def clean_name(raw: str) -> tuple[str, str | None]:
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
        raise fail(label, raw, "has the setuid bit")
    if mode & stat.S_ISGID:
        raise fail(label, raw, "has the setgid bit")
    if mode & stat.S_ISVTX:
        raise fail(label, raw, "has the sticky bit")


def _check_link_target(label: str, raw: str, target: str) -> str:
    """The symlink target with / separators, unless it is empty, has NUL or is absolute."""
    if not target:
        raise fail(label, raw, "is a symlink with an empty target")
    if "\x00" in target:
        raise fail(label, raw, "is a symlink whose target contains NUL")
    target = target.replace("\\", "/")
    if target.startswith("/") or _DRIVE_RE.match(target):
        raise fail(label, raw, f"is a symlink to an absolute path ({target!r})")
    return target


def file_mode(perms: int) -> int:
    """The mode a regular file member is created with."""
    # Group/other write is dropped as tar does under the usual umask: a binary anyone can
    # rewrite is a binary anyone can run as us. The owner always keeps read and write, so the
    # tree can be re-hashed and removed later.
    return (perms & 0o755) | 0o600


def tar_entry(m: tarfile.TarInfo, label: str) -> Entry:
    """One tar member as an Entry; UnsafeArchiveError when the member alone is unsafe."""
    name, problem = clean_name(m.name)
    if problem:
        raise fail(label, m.name, problem)
    _check_mode(label, m.name, m.mode)
    if m.isreg():
        return Entry(name, "file", file_mode(m.mode), m.size, source=m)
    if m.isdir():
        return Entry(name, "dir")
    if m.issym():
        return Entry(name, "symlink", target=_check_link_target(label, m.name, m.linkname))
    if m.islnk():
        target, problem = clean_name(m.linkname)
        if problem or not target:
            raise fail(label, m.name, f"is a hard link to {m.linkname!r}, outside the target")
        return Entry(name, "hardlink", target=target)
    if m.ischr():
        raise fail(label, m.name, "is a character device")
    if m.isblk():
        raise fail(label, m.name, "is a block device")
    if m.isfifo():
        raise fail(label, m.name, "is a FIFO")
    raise fail(label, m.name, f"has unsupported type {m.type!r}")


def zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> Entry:
    """One zip member as an Entry (a symlink's target is read from ``zf``)."""
    # orig_filename: zipfile cuts `filename` at the first NUL, hiding it from us.
    raw = info.orig_filename
    name, problem = clean_name(raw)
    if problem:
        raise fail(label, raw, problem)
    # The high word is a Unix st_mode; type and special bits are honoured whoever made the
    # archive (refusing is the safe side), the permission bits only from Unix zips.
    unix_mode = info.external_attr >> 16
    _check_mode(label, raw, unix_mode)
    kind = stat.S_IFMT(unix_mode)
    if kind == stat.S_IFLNK:
        if info.file_size > _MAX_LINK_TARGET:
            raise fail(label, raw, "is a symlink with an over-long target")
        data = zf.read(info)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(label, raw, "is a symlink whose target is not UTF-8") from None
        return Entry(name, "symlink", target=_check_link_target(label, raw, text))
    if kind == stat.S_IFDIR or (kind in (0, stat.S_IFREG) and info.is_dir()):
        return Entry(name, "dir")
    if kind in (0, stat.S_IFREG):
        perms = unix_mode & 0o777
        if info.create_system != _ZIP_UNIX or perms == 0:
            perms = 0o644
        return Entry(name, "file", file_mode(perms), info.file_size, source=info)
    if kind == stat.S_IFCHR:
        raise fail(label, raw, "is a character device")
    if kind == stat.S_IFBLK:
        raise fail(label, raw, "is a block device")
    if kind == stat.S_IFIFO:
        raise fail(label, raw, "is a FIFO")
    raise fail(label, raw, f"has unsupported file type {oct(kind)}")


# --- checking the whole plan ----------------------------------------------------------------


def _fold(name: str) -> str:
    # On a case- or normalisation-insensitive file system (macOS, Windows) `Lib` and `lib` are
    # one path, so symlink checks compare names folded the same way.
    return unicodedata.normalize("NFD", name).casefold()


def check_plan(entries: Iterable[Entry], label: str) -> None:
    """Rules that need every member: duplicates, parents, hard link and symlink targets."""
    entries = list(entries)
    kinds: dict[str, EntryKind] = {}
    links = {_fold(e.name): e.target for e in entries if e.kind == "symlink"}
    for e in entries:
        if e.name == "":
            if e.kind != "dir":
                raise fail(label, e.name, "has an empty name")
            continue
        earlier = kinds.get(e.name)
        # A directory listed twice overwrites nothing; anything else listed twice would.
        if earlier is not None and not (earlier == "dir" and e.kind == "dir"):
            raise fail(label, e.name, "appears more than once in the archive")
        if e.kind == "hardlink" and kinds.get(e.target) not in ("file", "hardlink"):
            raise fail(
                label, e.name, f"is a hard link to {e.target!r}, not an earlier regular file"
            )
        kinds[e.name] = e.kind
    for e in entries:
        parts = e.name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            # Catches both orders: "dir -> /tmp" then "dir/x", and "dir/x" then "dir -> /tmp".
            if _fold(prefix) in links:
                raise fail(label, e.name, f"is under symlink {prefix!r}")
            if kinds.get(prefix) in ("file", "hardlink"):
                raise fail(label, e.name, f"is under regular file {prefix!r}")
        if e.kind == "symlink":
            _check_symlink(label, e, links)


def _check_symlink(label: str, entry: Entry, links: dict[str, str]) -> None:
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
                raise fail(
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
            raise fail(label, entry.name, "is a symlink in a loop or a chain too long")
        if target.startswith("/") or _DRIVE_RE.match(target):
            raise fail(label, entry.name, f"is a symlink to {entry.target!r}, outside the target")
        # A link resolves relative to its own directory, which is `resolved` as it stands.
        todo = target.split("/") + todo
