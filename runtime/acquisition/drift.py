"""Drift check of installed binaries: re-hash every file under each install dir and compare it
with the digests recorded in the manifest at install time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from runyard.runtime.core.digest import hash_file
from runyard.runtime.core.manifest import RuntimeManifest, load_manifest
from runyard.runtime.core.tree import RuntimeTree

__all__ = ["Drift", "verify_installed"]


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


def _walk(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            path = Path(dirpath, name)
            found[path.relative_to(root).as_posix()] = path
    return found


def verify_installed(tree: RuntimeTree, manifest: RuntimeManifest | None = None) -> DriftReport:
    """Every file that changed, vanished or appeared since install, per installed entry;
    ``manifest``: the tree's, loaded (and validated) by the caller already."""
    if manifest is None:
        manifest = load_manifest(tree)
    drift: list[Drift] = []
    checked = 0
    for entry in manifest.services:
        root = tree.root / entry.install_rel
        on_disk = _walk(root) if root.is_dir() else {}

        def add(path: str, problem: str, entry=entry) -> None:
            drift.append(Drift(entry.name, entry.version, entry.platform, path, problem))  # type: ignore[arg-type]

        for rel, digest in sorted(entry.files.items()):
            path = on_disk.pop(rel, None)
            if path is None:
                add(rel, "vanished")
                continue
            checked += 1
            if path.is_symlink() or not path.is_file():
                add(rel, "not a regular file")
            elif hash_file(path)[0] != digest:
                add(rel, "changed")
        for rel, path in sorted(on_disk.items()):
            # Symlinks shipped in the archive are not hashed at install; only new files count.
            if not path.is_symlink():
                add(rel, "appeared")
    return DriftReport(checked_files=checked, services=len(manifest.services), drift=drift)
