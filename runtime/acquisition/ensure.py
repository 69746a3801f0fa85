"""Acquisition: ``ensure_service(name, spec)`` resolves, fetches, verifies and installs a binary.

    catalog ─ resolve(name, spec, os, arch) ─▶ archive
    cache   ─ fetch (lock, stream, sha256+size) ─▶ cache/archives/<file>
    bin     ─ extract (temp dir, safety checks) ─ one rename ─▶ bin/<name>/<version>/<os>-<arch>/
    manifest ─ entry with checksum, size, binPath, file digests ─ temp + rename

An install that is already in place (same checksum, files present) returns at once with no
network I/O; an exact version that is installed needs no catalog at all. When the catalog
cannot be fetched, the copy saved by the last fetch stands in for it (``catalog_note`` says so,
with its age). Every step that can fail does so before the manifest changes, so a failed ensure
leaves the manifest as it was and nothing new under ``bin/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from runyard.runtime.acquisition.cache import (
    CacheEntry,
    archive_file_name,
    record_use,
    record_use_of,
)
from runyard.runtime.acquisition.catalog import (
    CatalogArchive,
    LoadedCatalog,
    load_catalog,
    load_catalog_copy,
    remember_catalog,
    remembered_catalog,
    save_catalog_copy,
    source_url,
)
from runyard.runtime.acquisition.extract import extract_archive
from runyard.runtime.acquisition.fetch import Progress, fetch_into_cache, tty_progress
from runyard.runtime.acquisition.urls import redact_url, split_credentials
from runyard.runtime.core.errors import CatalogError, CatalogUnreachable, ResolveError, RunyardError
from runyard.runtime.core.locking import install_lock, tree_lock
from runyard.runtime.core.manifest import (
    RuntimeManifest,
    ServiceEntry,
    init_tree,
    load_manifest,
    save_manifest,
)
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.space import no_space_as_error, require_space
from runyard.runtime.core.tree import RuntimeTree, resolve_root
from runyard.runtime.core.versions import Version, VersionSpec
from runyard.runtime.ops.audit_action import audited

__all__ = ["MANIFEST_LOCK", "ServiceBinary", "ensure_service", "get_manifest", "open_tree"]

MANIFEST_LOCK = "manifest"


class ServiceBinary(msgspec.Struct):
    """An installed service binary, as ``ensure_service`` hands it back."""

    name: str
    version: str
    os: str
    arch: str
    kind: str
    checksum: str
    size: int
    #: Absolute path of the program.
    bin_path: str
    #: Absolute path of the install dir ``bin/{name}/{version}/{os}-{arch}``.
    install_dir: str
    #: True when this call downloaded the archive; False when the cache or the tree had it.
    fetched: bool
    #: True when this call extracted the archive into ``bin/``.
    installed: bool
    #: Set when the catalog could not be fetched and its saved copy was used: one line
    #: naming the failure and the copy's age, for stderr.
    catalog_note: str | None = None


def open_tree(root: str | os.PathLike[str] | None = None) -> RuntimeTree:
    return RuntimeTree(resolve_root(root))


def get_manifest(root: str | os.PathLike[str] | None = None) -> RuntimeManifest:
    """The validated manifest of the tree at ``root`` (resolved as the CLI does)."""
    return load_manifest(open_tree(root))


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _catalog_for(
    tree: RuntimeTree, catalog: str | None
) -> tuple[LoadedCatalog, tuple[str, str] | None]:
    """The catalog, fetched now or else its saved copy; with the copy, (why the fetch failed,
    ``the copy fetched 3h 12m ago (...)``)."""
    source = catalog or remembered_catalog(tree)
    if not source:
        raise CatalogError("no catalog known for this tree: pass --catalog PATH_OR_URL once")
    try:
        loaded = load_catalog(source)
    except CatalogUnreachable as exc:
        url, credentials = split_credentials(source_url(source))
        saved = load_catalog_copy(tree, url)
        if saved is None:
            raise CatalogUnreachable(f"{exc} (and this tree keeps no copy of it)") from None
        fetched = datetime.fromtimestamp(saved.fetched_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # The credentials given now still open archives on the catalog's origin.
        copy = LoadedCatalog(saved.source, saved.catalog, credentials)
        return copy, (str(exc), f"the copy fetched {saved.age()} ago ({fetched})")
    save_catalog_copy(tree, loaded)
    return loaded, None


def _installed_exact(
    tree: RuntimeTree, name: str, spec: str, os_name: str, arch: str
) -> ServiceEntry | None:
    """The manifest entry of ``name`` at exactly ``spec`` for os/arch when its program is in
    place: what an exact version needs, with no catalog at all."""
    try:
        parsed = VersionSpec.parse(spec)
    except ValueError as exc:
        raise ResolveError(str(exc)) from None
    if parsed.kind != "exact":
        return None
    for entry in load_manifest(tree).find(name):
        if (
            (entry.os, entry.arch) == (os_name, arch)
            and Version.try_parse(entry.version) == parsed.exact
            and (tree.root / entry.bin_path).is_file()
        ):
            return entry
    return None


def _binary(
    entry: ServiceEntry, tree: RuntimeTree, fetched: bool, installed: bool
) -> ServiceBinary:
    return ServiceBinary(
        name=entry.name,
        version=entry.version,
        os=entry.os,
        arch=entry.arch,
        kind=entry.kind,
        checksum=entry.checksum,
        size=entry.size,
        bin_path=str(tree.root / entry.bin_path),
        install_dir=str(tree.root / entry.install_rel),
        fetched=fetched,
        installed=installed,
    )


def _make_read_only(root: Path) -> None:
    # bin/ is read-only after install; directories stay owner-writable so gc and
    # reinstalls can remove them without chmod games.
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~0o222)


def ensure_service(
    name: str,
    version_spec: str = "latest",
    *,
    root: str | os.PathLike[str] | None = None,
    catalog: str | None = None,
    progress: Progress | bool | None = None,
    os_name: str | None = None,
    arch: str | None = None,
) -> ServiceBinary:
    """Make ``name`` at the highest version matching ``version_spec`` present in the tree.

    ``catalog`` is a path or URL; without it the catalog used last in this tree is used.
    ``progress`` None shows a bar when stderr is a terminal; False never does.
    Recorded in the tree's audit trail (``ensure``), done or refused, whoever calls.
    """
    tree = open_tree(root)
    detail = {"version_spec": version_spec}
    if catalog:
        detail["catalog"] = redact_url(catalog)
    with audited(
        tree.logs_dir, "ensure", target=name, detail=detail, refusal_needs_log=True
    ) as act:
        # The steps name what they were writing; this names the rest (a lock file, the manifest).
        with no_space_as_error(tree.root, f"ensuring {name} {version_spec}"):
            binary = _ensure(tree, name, version_spec, catalog, progress, os_name, arch)
        act.detail.update(
            version=binary.version, installed=binary.installed, fetched=binary.fetched
        )
        return binary


def _ensure(
    tree: RuntimeTree,
    name: str,
    version_spec: str,
    catalog: str | None,
    progress: Progress | bool | None,
    os_name: str | None,
    arch: str | None,
) -> ServiceBinary:
    init_tree(tree)
    os_name = os_name or current_os()
    arch = arch or current_arch()
    have = _installed_exact(tree, name, version_spec, os_name, arch)
    if have is not None:
        with tree_lock(tree, install_lock(name, have.version, have.platform)):
            have = _installed_exact(tree, name, have.version, os_name, arch)
            if have is not None:
                entry = _update_entry(tree, have)
                record_use_of(tree, entry.checksum)
                return _binary(entry, tree, fetched=False, installed=False)
    loaded, copy = _catalog_for(tree, catalog)
    try:
        archive = loaded.resolve(name, version_spec, os_name, arch)
        if progress is None:
            progress = tty_progress(f"{name} {archive.version}")
        binary = _acquire(tree, loaded, archive, progress or None)
    except RunyardError as exc:
        if copy is None:
            raise
        # Whatever failed, it failed against the saved copy: the one line says so.
        raise type(exc)(f"{exc} (resolved against {copy[1]})") from None
    if copy is not None:
        binary.catalog_note = f"{copy[0]}; using {copy[1]}"
    elif catalog:
        # Remembered only now: a catalog that resolves nothing (a typo'd URL of a real server,
        # the wrong file) must not replace the one that worked for the next ensure.
        remember_catalog(tree, loaded.url)  # without credentials: see catalog.py
    return binary


def _acquire(
    tree: RuntimeTree, loaded: LoadedCatalog, archive: CatalogArchive, progress: Progress | None
) -> ServiceBinary:
    """Fetch, extract and record ``archive`` unless the tree already holds exactly it.

    A failure leaves ``bin/`` and ``cache/`` as they were: the install dir and the parents made
    for it are removed, and so is an archive this call downloaded (a full disk gets its space
    back; an archive that cannot be installed is not worth keeping).
    """
    name = archive.name
    url = loaded.archive_url(archive)
    # What the cache records and names its file after: the URL without a password.
    shown = redact_url(url)
    file_name = archive_file_name(name, archive.version, archive.platform, archive.sha256, shown)
    what = f"{name} {archive.version}"

    with tree_lock(tree, install_lock(name, archive.version, archive.platform)):
        existing = load_manifest(tree).get(name, archive.version, archive.os, archive.arch)
        if (
            existing is not None
            and existing.checksum == archive.sha256
            and (tree.root / existing.bin_path).is_file()
        ):
            entry = _update_entry(tree, existing)
            # Keep the archive's LRU fresh: using an install counts as using its archive.
            record_use(tree, file_name)
            return _binary(entry, tree, fetched=False, installed=False)

        cached, fetched = fetch_into_cache(
            tree,
            url,
            file_name,
            archive.sha256,
            archive.size,
            progress,
            label=what,
            credentials=loaded.credentials,
        )
        try:
            entry = _install(tree, archive, cached)
        except BaseException:
            if fetched:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cached)
            raise
        now_ns = time.time_ns()
        cache_entry = CacheEntry(
            name=name,
            version=archive.version,
            os=archive.os,
            arch=archive.arch,
            sha256=archive.sha256,
            size=archive.size,
            url=shown,
            fetched_at=now_ns,
            last_used=now_ns,
        )
        with no_space_as_error(tree.cache_dir, f"recording {what} in cache/index.json"):
            record_use(tree, file_name, cache_entry)
    return _binary(entry, tree, fetched=fetched, installed=True)


def _install(tree: RuntimeTree, archive: CatalogArchive, cached: Path) -> ServiceEntry:
    """Extract ``cached`` into its install dir and put it in the manifest; on any failure
    the install dir is as it was (absent, or the old one moved back)."""
    install_dir = tree.install_dir(archive.name, archive.version, archive.os, archive.arch)
    made = _missing_parents(install_dir.parent, tree.bin_dir)
    try:
        aside = _move_aside(install_dir)
        files = _extract(tree, archive, cached, install_dir, aside)
        _make_read_only(install_dir)
        rel_install = install_dir.relative_to(tree.root).as_posix()
        entry = _manifest_entry(archive, rel_install, files)
        _record_entry(tree, entry, install_dir, aside)
    except BaseException:
        for directory in made:  # deepest first; one that is not empty was not ours alone
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise
    return entry


def _move_aside(install_dir: Path) -> Path | None:
    """Move an existing install dir to ``aside/tree`` (a new dir beside it); None if none.

    A dir without a manifest entry is what a crash between rename and manifest write leaves;
    a dir with another checksum is a catalog that re-published the version. Either way it is
    moved aside, replaced, and removed once the manifest says so.
    """
    if not (install_dir.exists() or install_dir.is_symlink()):
        return None
    aside = Path(tempfile.mkdtemp(prefix=f".{install_dir.name}.old-", dir=install_dir.parent))
    os.rename(install_dir, aside / "tree")
    return aside


def _extract(
    tree: RuntimeTree, archive: CatalogArchive, cached: Path, install_dir: Path, aside: Path | None
) -> dict[str, str]:
    """Extract into ``install_dir``, space checked first; on failure the old dir is back."""
    doing = f"extracting {archive.name} {archive.version} into bin/"
    try:
        with no_space_as_error(tree.bin_dir, doing):
            return extract_archive(
                cached,
                install_dir,
                bin_path=archive.bin_path,
                reserve=lambda need: require_space(tree.bin_dir, need, doing),
            )
    except BaseException:
        if aside is not None:
            os.rename(aside / "tree", install_dir)
            shutil.rmtree(aside, ignore_errors=True)
        raise


def _manifest_entry(
    archive: CatalogArchive, rel_install: str, files: dict[str, str]
) -> ServiceEntry:
    return ServiceEntry(
        name=archive.name,
        version=archive.version,
        os=archive.os,
        arch=archive.arch,
        checksum=archive.sha256,
        size=archive.size,
        bin_path=f"{rel_install}/{archive.bin_path}",
        default_ports=list(archive.default_ports or []),
        env=dict(archive.env or {}),
        args=list(archive.args or []),
        kind=archive.kind or "service",
        installed_at=_now_rfc3339(),
        files=files,
    )


def _record_entry(
    tree: RuntimeTree, entry: ServiceEntry, install_dir: Path, aside: Path | None
) -> None:
    """Put ``entry`` in the manifest; the moved-aside dir goes either way, back in place when
    the manifest could not be written."""
    try:
        with no_space_as_error(
            tree.root, f"recording {entry.name} {entry.version} in manifest.json"
        ):
            _put_entry(tree, entry)
    except BaseException:
        shutil.rmtree(install_dir, ignore_errors=True)
        if aside is not None:
            os.rename(aside / "tree", install_dir)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def _missing_parents(directory: Path, stop: Path) -> list[Path]:
    """``directory`` and its parents below ``stop`` that do not exist yet, deepest first."""
    missing: list[Path] = []
    while directory != stop and stop in directory.parents and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    return missing


def _put_entry(tree: RuntimeTree, entry: ServiceEntry) -> None:
    """Add or replace ``entry`` in the manifest under the manifest lock."""
    with tree_lock(tree, MANIFEST_LOCK):
        manifest = load_manifest(tree)
        key = (entry.name, entry.version, entry.os, entry.arch)
        manifest.services = [
            s for s in manifest.services if (s.name, s.version, s.os, s.arch) != key
        ]
        manifest.services.append(entry)
        manifest.services.sort(key=lambda s: (s.name, s.version, s.os, s.arch))
        save_manifest(tree, manifest)


def _update_entry(tree: RuntimeTree, entry: ServiceEntry) -> ServiceEntry:
    """Ensuring an installed version again makes it the most recently ensured one."""
    updated = msgspec.structs.replace(entry, installed_at=_now_rfc3339())
    _put_entry(tree, updated)
    return updated
