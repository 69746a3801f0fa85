"""Drift check of installed binaries: re-hash every file under each install dir and compare it
with the digests recorded in the manifest at install time.

``scan_dir`` lists a directory tree as ``os.walk`` would, with each entry's lstat: the startup
checks walk bin/ once with it, and that one walk serves both this check and the bin/ modes check
(``runtime/ops/doctor.py``). Every listed file is still re-hashed at each check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any, Literal

import msgspec
from msgspec import UNSET

from runyard.runtime.core.digest import hash_file
from runyard.runtime.core.manifest import RuntimeManifest, load_manifest
from runyard.runtime.core.tree import RuntimeTree

__all__ = ["Drift", "Listing", "bundle_drift", "scan_dir", "verify_installed"]

#: A listed directory's entries: (not a directory, name, lstat st_mode or None when lstat
#: failed), sorted, so the directories (as os.walk tells them: a symlink to one counts) first.
Row = tuple[bool, str, int | None]
#: Directory (relative to the scanned root, e.g. ``bin/s1``) -> its entries, in os.walk's order.
Listing = Mapping[str, list[Row]]
_GONE = object()


class Drift(msgspec.Struct):
    service: str
    version: str
    platform: str
    path: str
    problem: Literal["changed", "vanished", "appeared", "not a regular file"]


class DriftReport(msgspec.Struct):
    """The installed tree against its manifest (a sealed run's check is ``runs.VerifyReport``)."""

    checked_files: int
    services: int
    drift: list[Drift]

    @property
    def ok(self) -> bool:
        return not self.drift


def scan_dir(root: str, top: str) -> dict[str, list[Row]]:
    """``os.walk(root/top)`` with an lstat of every entry: dir (``top``, ``top/sub``...) -> its
    rows, top first then each subdir in sorted order. Like os.walk: not into a symlinked dir,
    and a dir that cannot be listed (or fails while listed) is left out. Never raises."""
    base = root.rstrip("/")
    listed: dict[str, list[Row]] = {}
    stack = [top]
    while stack:
        rel = stack.pop()
        rows: list[Row] = []
        try:
            with os.scandir(f"{base}/{rel}") as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    try:
                        mode: int | None = entry.stat(follow_symlinks=False).st_mode
                    except OSError:
                        mode = None
                    rows.append((not is_dir, entry.name, mode))
        except OSError:
            continue
        rows.sort()
        listed[rel] = rows
        stack += [
            f"{rel}/{name}"
            for not_dir, name, mode in reversed(rows)
            if not not_dir and not (mode is not None and S_ISLNK(mode))
        ]
    return listed


def _files(listed: Listing, top: str) -> dict[str, int | None]:
    """The files (os.walk's non-dirs) under ``top``, by path relative to it -> lstat st_mode."""
    found: dict[str, int | None] = {}
    stack = [(top, "")]
    while stack:
        rel, sub = stack.pop()
        for not_dir, name, mode in listed.get(rel, ()):
            if not_dir:
                found[sub + name] = mode
            elif f"{rel}/{name}" in listed:  # walked: a real dir, not a symlink to one
                stack.append((f"{rel}/{name}", f"{sub}{name}/"))
    return found


def verify_installed(
    tree: RuntimeTree, manifest: RuntimeManifest | None = None, listed: Listing | None = None
) -> DriftReport:
    """Every file that changed, vanished or appeared since install, per installed entry;
    ``manifest``: the tree's, loaded (and validated) by the caller already; ``listed``: bin/
    scanned already (``scan_dir(root, "bin")``); an install dir it does not hold is walked here."""
    if manifest is None:
        manifest = load_manifest(tree)
    root = str(tree.root).rstrip("/")
    drift: list[Drift] = []
    checked = 0
    for entry in manifest.services:
        top = entry.install_rel
        if listed is not None and top in listed:
            on_disk = _files(listed, top)
        else:  # not reached by the scan (a symlink on the way, unreadable, missing): as ever
            on_disk = _files(scan_dir(root, top), top) if (tree.root / top).is_dir() else {}

        def add(path: str, problem: str, entry=entry) -> None:
            drift.append(Drift(entry.name, entry.version, entry.platform, path, problem))  # type: ignore[arg-type]

        base = f"{root}/{top}/"
        for rel, digest in sorted(entry.files.items()):
            mode = on_disk.pop(rel, _GONE)
            if mode is _GONE:
                add(rel, "vanished")
                continue
            checked += 1
            if mode is None:  # lstat failed in the walk: as pathlib says now (it may raise)
                regular = not Path(base + rel).is_symlink() and Path(base + rel).is_file()
            else:
                regular = S_ISREG(mode)  # type: ignore[arg-type]
            if not regular:
                add(rel, "not a regular file")
            elif hash_file(base + rel)[0] != digest:
                add(rel, "changed")
        for rel, mode in sorted(on_disk.items()):
            # Symlinks shipped in the archive are not hashed at install; only new files count.
            if not (Path(base + rel).is_symlink() if mode is None else S_ISLNK(mode)):
                add(rel, "appeared")
    return DriftReport(checked_files=checked, services=len(manifest.services), drift=drift)


#: Top-level dirs an installed bundle owns: every file under them is listed in
#: ``bundle.files`` (but for ``config/runyard``, Runyard's own shared config, never packed).
BUNDLE_TOPS = ("bin", "config", "schemas", "wheels")
BUNDLE_TOP_FILES = ("install.sh",)
_OWN_CONFIG = "config/runyard"


def bundle_drift(tree: RuntimeTree, manifest: Any) -> tuple[int, list[str]]:
    """(files checked, problems) of the bundle members outside the services' install dirs.

    ``bundle.files`` of an installed bundle lists every file it brought (config/, schemas/,
    wheels/, install.sh, and bin/); the files under each service's install dir are already
    checked against ``services[].files``, so they are skipped here. Files under the owned
    top-level dirs that the bundle did not bring (outside the install dirs) have appeared.
    """
    files = manifest.bundle.files
    if files is UNSET or not files:
        return 0, []
    installs = tuple(f"{e.install_rel.rstrip('/')}/" for e in manifest.services)

    def ours(rel: str) -> bool:
        return not rel.startswith(installs) and not (
            rel == _OWN_CONFIG or rel.startswith(_OWN_CONFIG + "/")
        )

    expected = {rel: digest for rel, digest in files.items() if ours(rel)}
    on_disk: dict[str, Path] = {}
    for top in BUNDLE_TOPS:
        base = tree.root / top
        if not base.is_dir():
            continue
        for dirpath, dirs, names in os.walk(base):
            rel_dir = Path(dirpath).relative_to(tree.root).as_posix()
            # Not into the install dirs (checked above) nor config/runyard (not the bundle's).
            dirs[:] = sorted(d for d in dirs if ours(f"{rel_dir}/{d}/"))
            for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(dirpath, d)))]:
                rel = f"{rel_dir}/{name}"
                if ours(rel):
                    on_disk[rel] = Path(dirpath, name)
    for name in BUNDLE_TOP_FILES:
        path = tree.root / name
        if path.exists() or path.is_symlink():
            on_disk[name] = path
    problems: list[str] = []
    checked = 0
    for rel, digest in sorted(expected.items()):
        path = on_disk.pop(rel, None)
        if path is None:
            problems.append(f"vanished: {rel}")
            continue
        checked += 1
        if path.is_symlink() or not path.is_file():
            problems.append(f"not a regular file: {rel}")
        elif hash_file(path)[0] != digest:
            problems.append(f"changed: {rel}")
    links = manifest.bundle.links if manifest.bundle.links is not UNSET else {}
    for rel, path in sorted(on_disk.items()):
        if not (path.is_symlink() and rel in links):
            problems.append(f"appeared: {rel}")
    return checked, problems
