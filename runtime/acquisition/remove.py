"""Removing an installed version: ``remove_installed(tree, name, version)``.

The manifest entries go first (under the manifest lock, written atomically), then the install
directories: a crash between the two leaves files no entry names, which ``runtime verify``
ignores and a later ensure replaces, never an entry whose files are gone. The archive stays in
``cache/`` (``runtime gc`` evicts it), so ensuring the version again needs no network.

Whether a process runs from the version is the caller's question (the CLI asks the daemon):
``runtime/`` does not talk to daemons. The caller's ``check`` runs with the install lock of
every platform of the version held, and the removal follows under the same locks: ``ensure``
takes that lock to install the version and the daemon takes it (shared, tried once) to spawn
from it, so no start can come between a check that found the version unused and its removal
(runtime/core/locking.py).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from runyard.runtime.core.errors import LockBusy, ResolveError
from runyard.runtime.core.locking import install_lock, tree_lock
from runyard.runtime.core.manifest import ServiceEntry, load_manifest, save_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.core.versions import Version
from runyard.runtime.ops.audit_action import audited

from .ensure import MANIFEST_LOCK

__all__ = ["installed_versions", "remove_installed"]

#: How long a removal waits for an ensure of the same version to finish.
LOCK_TIMEOUT = 60.0
#: Rounds of "lock what is installed, read again" before giving up (one is the rule).
_HOLD_TRIES = 5


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


def remove_installed(
    tree: RuntimeTree,
    name: str,
    version: str,
    check: Callable[[list[ServiceEntry]], None] | None = None,
    *,
    lock_timeout: float | None = LOCK_TIMEOUT,
) -> list[ServiceEntry]:
    """Remove every platform of ``name`` ``version`` from the manifest and from ``bin/``;
    returns the entries removed. ``check(entries)`` runs first under the install locks and
    refuses by raising (nothing removed, nothing recorded). Recorded in the audit trail
    (``remove``)."""
    with contextlib.ExitStack() as held:
        gone = _hold_installs(held, tree, name, version, lock_timeout)
        if check is not None:
            check(gone)
        with audited(tree.logs_dir, "remove", target=name, detail={"version": version}) as act:
            keys = {(e.name, e.version, e.os, e.arch) for e in gone}
            with tree_lock(tree, MANIFEST_LOCK):
                manifest = load_manifest(tree)
                manifest.services = [
                    s for s in manifest.services if (s.name, s.version, s.os, s.arch) not in keys
                ]
                save_manifest(tree, manifest)
            for entry in gone:
                _remove_dir(tree.root / entry.install_rel, tree.bin_dir)
            act.detail["platforms"] = sorted(e.platform for e in gone)
    return gone


def _hold_installs(
    held: contextlib.ExitStack, tree: RuntimeTree, name: str, version: str, timeout: float | None
) -> list[ServiceEntry]:
    """Take the install lock of each platform of the version (in name order, as found), then
    read its entries again: an ensure of another platform may have finished meanwhile, whose
    lock is then taken too."""
    locked: set[str] = set()
    for _ in range(_HOLD_TRIES):
        entries = installed_versions(tree, name, version)
        wanted = sorted({install_lock(e.name, e.version, e.platform) for e in entries} - locked)
        if not wanted:
            return entries
        for lock in wanted:
            held.enter_context(tree_lock(tree, lock, timeout=timeout))
            locked.add(lock)
    raise LockBusy(tree.temp_dir / "locks", None, timeout)


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
