"""An install prefix: versions side by side, ``current`` and ``previous``, shared state.

    DIR/
      versions/1.2.0/           one installed bundle: manifest.json bin/ config/ schemas/ ...
        data -> ../../data      links to the shared dirs, so the version dir is a whole tree
        logs -> ../../logs
        cache -> ../../cache
        temp -> ../../temp
        config/runyard -> ../../../config/runyard
      versions/.1.3.0.tmp-XXXX  an install in progress (removed by the next install if stale)
      current -> versions/1.2.0     what runs: RUNYARD_ROOT=DIR/current
      previous -> versions/1.1.0    what `rollback` goes back to
      data/ logs/ cache/ temp/      shared by every version (temp/ is 0700)
      config/runyard/               Runyard's own config, shared too: license.json,
                                    license-issuers/, catalog.json (the remembered catalog)

A bundle never carries ``config/runyard/`` (``layout.member_problem``), so the link never
clashes with a member. It is made by ``make_current`` just before a version becomes current
(install, switch and rollback alike), so a version installed before the link existed gets it
too. A version whose ``config/runyard`` is still a real directory (an install made before
Runyard's config was shared) is migrated: when the shared dir is empty, the current version's
directory moves there (the license placed in ``DIR/current`` survives the upgrade); any other
real directory is moved aside to ``DIR/config/.runyard-from-<version>-XXXX`` (kept, never
read), and replaced by the link.

``current`` and ``previous`` are relative symlinks, each switched atomically: a new symlink
beside it, then ``os.replace`` (rename(2) over the old link), then an fsync of ``DIR``. A
reader sees the old target or the new one, never a missing link. ``temp/locks/bundle.lock``
(``runtime.locking``) serialises installs and rollbacks of one prefix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.capped import MANIFEST_FILE, read_json_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.locking import tree_lock
from runyard.runtime.core.manifest import SEMVER_RE
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.core.versions import Version

from .layout import OWN_CONFIG, SHARED_DIRS, BundleError

__all__ = ["LOCK_NAME", "Prefix"]

LOCK_NAME = "bundle"
_TMP_MARK = ".tmp-"
_OLD_MARK = ".old-"


class Prefix:
    """The paths of an install prefix. Creating the object touches nothing on disk."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.versions_dir = self.root / "versions"
        self.current_link = self.root / "current"
        self.previous_link = self.root / "previous"
        #: Runyard's own config, shared by every version (``versions/<v>/config/runyard``).
        self.own_config = self.root / OWN_CONFIG

    def version_dir(self, version: str) -> Path:
        return self.versions_dir / version

    # --- state -----------------------------------------------------------------------------

    def _target(self, link: Path) -> str | None:
        """The version a link points at (``versions/<v>``), None when absent or not ours."""
        try:
            target = os.readlink(link)
        except (FileNotFoundError, OSError):
            return None
        head, _, version = target.rpartition("/")
        if head != "versions" or not SEMVER_RE.match(version):
            return None
        return version

    def current(self) -> str | None:
        return self._target(self.current_link)

    def previous(self) -> str | None:
        previous = self._target(self.previous_link)
        return None if previous == self.current() else previous

    def describe(self) -> list[dict[str, Any]]:
        """One row per installed version, oldest first: what ``runyard bundle ls`` shows."""
        current, previous = self.current(), self.previous()
        rows = []
        for version in self.installed():
            info: dict[str, Any] = {}
            services: list[str] = []
            with contextlib.suppress(OSError, ValueError, TypeError, FileRefused):
                doc = read_json_capped(self.version_dir(version) / "manifest.json", MANIFEST_FILE)
                info = doc.get("bundle") or {}
                services = sorted({s.get("name", "") for s in doc.get("services") or []})
            rows.append(
                {
                    "version": version,
                    "current": version == current,
                    "previous": version == previous,
                    "created_at": info.get("createdAt", ""),
                    "signed_by": info.get("keyFingerprint", ""),
                    "services": services,
                    "path": str(self.version_dir(version)),
                }
            )
        return rows

    def installed(self) -> list[str]:
        """Versions in versions/, oldest first (temp and aside dirs excluded)."""
        if not self.versions_dir.is_dir():
            return []
        found = [
            p.name
            for p in self.versions_dir.iterdir()
            if SEMVER_RE.match(p.name) and p.is_dir() and not p.is_symlink()
        ]
        return sorted(found, key=Version.parse)

    # --- changes (all under the lock) ------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The prefix's install lock; DIR/temp/ (0700) is made first when needed."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / "temp"
        temp.mkdir(mode=0o700, exist_ok=True)
        with tree_lock(RuntimeTree(self.root), LOCK_NAME):
            yield

    def ensure_shared(self) -> None:
        """DIR/data, logs, cache (with archives/) and temp (0700): made once, kept forever."""
        for name in SHARED_DIRS:
            # A symlink to a directory is fine (data/ on another disk); anything else is not.
            path = self.root / name
            if path.is_symlink() and not path.exists():
                raise BundleError(f"{path}: a dangling symlink")
            if path.exists() and not path.is_dir():
                raise BundleError(f"{path}: exists and is not a directory")
            path.mkdir(exist_ok=True)
        (self.root / "cache" / "archives").mkdir(exist_ok=True)
        os.chmod(self.root / "temp", 0o700)
        self.versions_dir.mkdir(exist_ok=True)

    def clean_stale(self) -> list[str]:
        """Remove what an interrupted install left in versions/; returns the names removed."""
        removed: list[str] = []
        if not self.versions_dir.is_dir():
            return removed
        for p in self.versions_dir.iterdir():
            if p.name.startswith(".") and (_TMP_MARK in p.name or _OLD_MARK in p.name):
                _remove_tree(p)
                removed.append(p.name)
        return removed

    def new_temp_dir(self, version: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{version}{_TMP_MARK}", dir=self.versions_dir))

    def new_aside_dir(self, version: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{version}{_OLD_MARK}", dir=self.versions_dir))

    def switch(self, link: Path, version: str) -> None:
        """Point ``link`` at versions/<version>, atomically."""
        fd, tmp = tempfile.mkstemp(prefix=f".{link.name}.", suffix=".new", dir=self.root)
        os.close(fd)
        os.unlink(tmp)
        try:
            os.symlink(f"versions/{version}", tmp)
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(self.root)

    def make_current(self, version: str) -> str | None:
        """``previous`` := the current version (if another), then ``current`` := ``version``.

        Returns the version that was current. Should the process die between the two
        renames, ``current`` is still the old version and ``previous`` equal to it, which
        `previous()` reads as "none": never a dangling or half-switched state.
        """
        old = self.current()
        self.share_own_config(version, old)
        if old is not None and old != version:
            self.switch(self.previous_link, old)
        self.switch(self.current_link, version)
        return old

    def share_own_config(self, version: str, current: str | None = None) -> None:
        """Make ``versions/<version>/config/runyard`` the link to the shared ``DIR/config/runyard``.

        ``current`` is the version current now: its real ``config/runyard`` (a pre-sharing
        install) becomes the shared one when that is still empty. Idempotent; under the lock.
        """
        if current is not None and current != version:
            self._migrate_own_config(current)
        self._migrate_own_config(version)
        self.own_config.mkdir(parents=True, exist_ok=True)
        if not self.own_config.is_dir():
            raise BundleError(f"{self.own_config}: exists and is not a directory")
        if current is not None and current != version:
            self._link_own_config(current)
        self._link_own_config(version)

    def _link_own_config(self, version: str) -> None:
        link = self.version_dir(version) / OWN_CONFIG
        target = os.path.relpath(self.own_config, link.parent)
        with contextlib.suppress(OSError):
            if os.readlink(link) == target:
                return
        if os.path.lexists(link):
            raise BundleError(f"{link}: exists and is not the link to {self.own_config}")
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.parent / f".runyard{_TMP_MARK}link"  # one name: we hold the prefix lock
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def _migrate_own_config(self, version: str) -> None:
        """A real ``versions/<version>/config/runyard`` directory out of the version dir."""
        old = self.version_dir(version) / OWN_CONFIG
        if old.is_symlink() or not old.is_dir():
            return
        self.own_config.parent.mkdir(parents=True, exist_ok=True)
        shared_empty = not self.own_config.exists() or (
            self.own_config.is_dir() and not any(self.own_config.iterdir())
        )
        if shared_empty and version == self.current():
            with contextlib.suppress(OSError):
                self.own_config.rmdir()
            os.rename(old, self.own_config)
            fsync_dir(self.own_config.parent)
        else:
            aside = Path(
                tempfile.mkdtemp(prefix=f".runyard-from-{version}-", dir=self.own_config.parent)
            )
            os.rename(old, aside / "runyard")
        fsync_dir(old.parent)


def _remove_tree(path: Path) -> None:
    # Read-only files (bin/ is made read-only at install) go too: unlink needs a writable
    # directory, not a writable file, and every directory we make is 0755.
    shutil.rmtree(path, ignore_errors=True)
