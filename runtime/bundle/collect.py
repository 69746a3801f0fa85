"""What goes into a bundle: the members gathered from a tree, hashed and scanned for secrets.

`select_manifest` restricts the tree's manifest to the chosen services. `collect_members`
walks what those services own (their install dirs under ``bin/``, their ``config/{svc}/``),
Runyard's generated ``schemas/`` and, when given, a wheelhouse and ``install.sh``. Every file is
read once (through mmap from 1 MiB up) on a small thread pool to get its sha256, its secret
findings and its size; every file under ``config/``, whatever its size, is also value-scanned
(one bigger than ``secrets.MAX_CONFIG_SCAN`` is a finding instead); nothing is written.

Refused (BundleError, one line): a file in an install dir that differs from the digests the
manifest recorded at install (the tree drifted: ``runyard runtime verify`` says how), a symlink
outside ``bin/`` or one that leaves its install dir, and anything that is not a regular file,
a directory or a symlink.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runyard.runtime.acquisition.archive_rules import Entry, check_plan
from runyard.runtime.core.errors import UnsafeArchiveError
from runyard.runtime.core.manifest import RuntimeManifest
from runyard.runtime.core.tree import RuntimeTree

from .layout import DIR_MODE, EXEC_MODE, FILE_MODE, INSTALL_SH, BundleError, Finding
from .secrets import MAX_CONFIG_SCAN, scan_config_text, scan_content, scan_name

__all__ = ["Member", "collect_members", "member_order", "schema_files", "select_manifest"]

_MMAP_FROM = 1 << 20
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
_HEAD = 64 * 1024


@dataclass
class Member:
    """One member to pack: a file (from disk or from bytes), a directory or a symlink."""

    name: str
    kind: str  # "file" | "dir" | "symlink"
    mode: int = FILE_MODE
    path: Path | None = None
    data: bytes | None = None
    size: int = 0
    sha256: str = ""
    target: str = ""
    #: Secret findings of this member (its name, content, config values).
    findings: list[Finding] = field(default_factory=list)
    #: (size, mtime_ns) when hashed: the writer refuses a file that changed since.
    stamp: tuple[int, int] = (0, 0)


def member_order(name: str) -> bytes:
    """Members are sorted by their UTF-8 bytes, whatever the locale."""
    return name.encode("utf-8")


def select_manifest(manifest: RuntimeManifest, services: Iterable[str] | None) -> RuntimeManifest:
    """The manifest restricted to ``services`` (None: all), bundle fields cleared."""
    names = {s.name for s in manifest.services}
    chosen = sorted(names) if services is None else list(dict.fromkeys(services))
    unknown = [n for n in chosen if n not in names]
    if unknown:
        have = ", ".join(sorted(names)) or "none"
        raise BundleError(f"--services: not in the tree: {', '.join(unknown)} (installed: {have})")
    entries = [s for s in manifest.services if s.name in chosen]
    entries.sort(key=lambda s: (s.name, s.version, s.os, s.arch))
    return RuntimeManifest(services=entries)


def schema_files() -> list[Path]:
    """Runyard's generated JSON Schemas (the ``schemas`` package: installed or the checkout)."""
    from runyard import schemas

    return sorted(Path(schemas.SCHEMA_DIR).glob("*.schema.json"))


def _name_problem(rel: str) -> str | None:
    """A name that would not come back out of the archive as the same path."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if _BAD_CHARS.search(rel):
        return "its name holds a backslash or a control character"
    return None


def _mode(st: os.stat_result) -> int:
    return EXEC_MODE if st.st_mode & 0o111 else FILE_MODE


def _walk(tree_root: Path, top: Path, members: list[Member], links_ok: bool) -> list[str]:
    """Add every file, symlink and directory under ``top``; return the empty directories."""
    empty: list[str] = []
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        base = Path(dirpath)
        rel_dir = base.relative_to(tree_root).as_posix()
        if not dirs and not files and base != top:
            empty.append(rel_dir)
        for name in sorted([*dirs, *files]):
            path = base / name
            rel = f"{rel_dir}/{name}"
            problem = _name_problem(rel)
            if problem:
                raise BundleError(f"{rel!r}: {problem}; it cannot be packed")
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                if name in dirs:
                    dirs.remove(name)  # os.walk does not follow it anyway; never descend
                if not links_ok:
                    raise BundleError(
                        f"{rel}: is a symlink; outside bin/ a bundle holds files only"
                    )
                members.append(Member(rel, "symlink", DIR_MODE, path, target=os.readlink(path)))
            elif stat.S_ISREG(st.st_mode):
                members.append(Member(rel, "file", _mode(st), path, size=st.st_size))
            elif not stat.S_ISDIR(st.st_mode):
                raise BundleError(
                    f"{rel}: is not a regular file, directory or symlink; it cannot be packed"
                )
    return empty


def _check_links(install_rel: str, links: list[Member]) -> None:
    """A symlink in an install dir must resolve inside that install dir (the archive rules)."""
    prefix = install_rel + "/"
    entries = [
        Entry(m.name[len(prefix) :], "symlink", target=m.target)
        for m in links
        if m.name.startswith(prefix)
    ]
    try:
        check_plan(entries, install_rel)
    except UnsafeArchiveError as exc:
        raise BundleError(f"{exc}; a bundle cannot carry it") from None


def _digest(member: Member, config: bool) -> None:
    """sha256, size and secret findings of a file member, from one read. A file under
    ``config/`` is value-scanned whatever its size, up to ``MAX_CONFIG_SCAN`` (bigger is a
    finding: too large to scan)."""
    assert member.path is not None
    fd = os.open(member.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        size = st.st_size
        member.stamp = (st.st_size, st.st_mtime_ns)
        if size >= _MMAP_FROM:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as data:
                with contextlib.suppress(AttributeError, OSError):
                    data.madvise(mmap.MADV_SEQUENTIAL)
                member.sha256 = hashlib.sha256(data).hexdigest()
                reasons = scan_content(data, config=config)
                head = data[:_HEAD]
                if config and size <= MAX_CONFIG_SCAN:
                    reasons += scan_config_text(member.name, data[:])
        else:
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = fh.read()
            size = len(raw)
            member.sha256 = hashlib.sha256(raw).hexdigest()
            reasons = scan_content(raw, config=config)
            head = raw[:_HEAD]
            if config:
                reasons += scan_config_text(member.name, raw)
    finally:
        os.close(fd)
    member.size = size
    if config and size > MAX_CONFIG_SCAN:
        reasons.append(
            f"is {size} bytes, too large to scan for secret values "
            f"(limit {MAX_CONFIG_SCAN // (1 << 20)} MiB)"
        )
    by_name = scan_name(member.name, head)
    if by_name:
        reasons.insert(0, by_name)
    member.findings = [Finding(member.name, r) for r in reasons]


def _digest_all(files: list[Member]) -> None:
    def one(m: Member) -> None:
        _digest(m, config=m.name.startswith("config/"))

    workers = max(1, min(4, os.cpu_count() or 1, len(files)))
    if workers == 1:
        for m in files:
            one(m)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, files))


def _check_drift(manifest: RuntimeManifest, by_name: dict[str, Member]) -> None:
    problems: list[str] = []
    for entry in manifest.services:
        prefix = entry.install_rel + "/"
        on_disk = {
            n[len(prefix) :]: m
            for n, m in by_name.items()
            if n.startswith(prefix) and m.kind == "file"
        }
        for rel, digest in sorted(entry.files.items()):
            m = on_disk.pop(rel, None)
            if m is None:
                problems.append(f"{prefix}{rel} vanished")
            elif m.sha256 != digest:
                problems.append(f"{prefix}{rel} changed")
        problems += [f"{prefix}{rel} appeared" for rel in sorted(on_disk)]
    if problems:
        raise BundleError(
            "the tree differs from what its manifest recorded at install (see `runyard runtime "
            f"verify`): {'; '.join(problems)}"
        )


def collect_members(
    tree: RuntimeTree,
    manifest: RuntimeManifest,
    *,
    wheels: list[Path] | None = None,
    install_sh: bytes | None = None,
) -> tuple[list[Member], list[str]]:
    """(members sorted by name, empty directories) of a bundle of ``manifest``'s services.

    Directories are members too: every parent of a member and every empty directory.
    """
    members: list[Member] = []
    empty: list[str] = []
    for entry in manifest.services:
        top = tree.root / entry.install_rel
        if not top.is_dir() or top.is_symlink():
            raise BundleError(
                f"{entry.install_rel}: missing; reinstall {entry.name} {entry.version}"
            )
        start = len(members)
        empty += _walk(tree.root, top, members, links_ok=True)
        _check_links(entry.install_rel, [m for m in members[start:] if m.kind == "symlink"])
    for name in sorted({s.name for s in manifest.services}):
        top = tree.config_dir / name
        if top.is_symlink():
            raise BundleError(f"config/{name}: is a symlink; a bundle holds files only")
        if top.is_dir():
            empty += _walk(tree.root, top, members, links_ok=False)
    for path in schema_files():
        members.append(Member(f"schemas/{path.name}", "file", FILE_MODE, path))
    for path in sorted(wheels or []):
        members.append(Member(f"wheels/{path.name}", "file", FILE_MODE, path))
    if install_sh is not None:
        members.append(Member(INSTALL_SH, "file", EXEC_MODE, data=install_sh))
    by_name: dict[str, Member] = {}
    for m in members:
        if m.name in by_name:
            raise BundleError(f"{m.name}: would be packed twice")
        by_name[m.name] = m
    _digest_all([m for m in members if m.kind == "file" and m.path is not None])
    for m in members:
        if m.data is not None:
            m.size = len(m.data)
            m.sha256 = hashlib.sha256(m.data).hexdigest()
            m.findings = [Finding(m.name, r) for r in scan_content(m.data)]
    _check_drift(manifest, by_name)
    dirs: set[str] = set(empty)
    for m in members:
        parts = m.name.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    members += [Member(d, "dir", DIR_MODE) for d in dirs]
    members.sort(key=lambda m: member_order(m.name))
    return members, sorted(empty, key=member_order)
