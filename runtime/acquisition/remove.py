"""Removing an installed version: ``remove_installed(tree, name, version)``.

The manifest entries go first (under the manifest lock, written atomically), then the install
directories: a crash between the two leaves files no entry names, which ``runtime verify``
ignores and a later ensure replaces, never an entry whose files are gone. The archive stays in
``cache/`` (``runtime gc`` evicts it), so ensuring the version again needs no network.

Whether a process runs from the version is the caller's question (the CLI asks the daemon):
``runtime/`` does not talk to daemons.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runyard.runtime.core.errors import ResolveError
from runyard.runtime.core.locking import tree_lock
from runyard.runtime.core.manifest import ServiceEntry, load_manifest, save_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.core.versions import Version
from runyard.runtime.ops.audit_action import audited

from .ensure import MANIFEST_LOCK

__all__ = ["installed_versions", "remove_installed"]


def _same_version(a: str, b: str) -> bool:
    va, vb = Version.try_parse(a), Version.try_parse(b)
    return a == b or (va is not None and va == vb)


def installed_versions(tree: RuntimeTree, name: str, version: str) -> list[ServiceEntry]:
    """The manifest entries of ``name`` at ``version`` (every platform); ResolveError naming
    what is installed when there is none."""
    entries = load_manifest(tree).find(name)
    found = [e for e in entries if _same_version(e.version, version)]
    if not found:
        have = ", ".join(sorted({e.version for e in entries}, key=Version.parse)) or "none"
        raise ResolveError(f"{name} {version} is not installed (installed versions: {have})")
    return found


def remove_installed(tree: RuntimeTree, name: str, version: str) -> list[ServiceEntry]:
    """Remove every platform of ``name`` ``version`` from the manifest and from ``bin/``;
    returns the entries removed. Recorded in the audit trail (``remove``)."""
    with audited(tree.logs_dir, "remove", target=name, detail={"version": version}) as act:
        with tree_lock(tree, MANIFEST_LOCK):
            gone = installed_versions(tree, name, version)
            keys = {(e.name, e.version, e.os, e.arch) for e in gone}
            manifest = load_manifest(tree)
            manifest.services = [
                s for s in manifest.services if (s.name, s.version, s.os, s.arch) not in keys
            ]
            save_manifest(tree, manifest)
        for entry in gone:
            _remove_dir(tree.root / entry.install_rel, tree.bin_dir)
        act.detail["platforms"] = sorted(e.platform for e in gone)
        return gone


def _remove_dir(path: Path, stop: Path) -> None:
    """``path`` and then its parents below ``stop`` that are left empty (bin/NAME/VERSION,
    bin/NAME). Its files are read-only, but its directories stay owner-writable (ensure.py),
    which is what removing needs."""
    shutil.rmtree(path, ignore_errors=not path.is_dir())
    parent = path.parent
    while parent != stop and stop in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty (another platform or version), or gone already
            break
        parent = parent.parent
