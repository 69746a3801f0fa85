"""Catalogs: where archives of service binaries come from, and which one a spec resolves to.

A catalog is a JSON file ``{"version": "1", "archives": [...]}`` on disk or behind a URL. Each
archive names one (name, version, os, arch) with its URL, sha256 and size, the path of the
program inside the archive, and defaults copied into the manifest on install. A relative ``url``
is relative to the catalog's own location. The catalog used last is remembered in the tree
(``config/runyard/catalog.json``) so ``--catalog`` is needed only once.

An http(s) catalog may carry credentials (``https://user:token@host/catalog.json``, see
``urls.py``): they are sent to the catalog's origin, for the catalog and for archives on the same
origin, and are never written down. The tree remembers the URL without them; a later ensure
without ``--catalog`` gets them from ``~/.netrc`` or not at all.

The last catalog fetched is also kept, whole, in ``config/runyard/catalog-copy.json`` (its
source URL, when it was fetched, and the validated catalog; written atomically). When a fetch
fails (``CatalogUnreachable``: host down, HTTP error), acquisition resolves against that copy
instead and says so, with its age: an edge box on a flaky link needs the network only for
bytes it does not have yet.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from runyard.runtime.acquisition.urls import (
    Credentials,
    open_url,
    redact_url,
    split_credentials,
)
from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import CatalogError, CatalogUnreachable, FileRefused, ResolveError
from runyard.runtime.core.manifest import HEX64, PortDef, decode_error_message, unsafe_relative_path
from runyard.runtime.core.platform import ARCHES, OSES, normalize_arch, normalize_os
from runyard.runtime.core.tree import RESERVED_NAMES, RuntimeTree, check_name
from runyard.runtime.core.versions import Version, VersionSpec, pick_highest

__all__ = [
    "Catalog",
    "CatalogArchive",
    "LoadedCatalog",
    "SavedCatalog",
    "load_catalog",
    "load_catalog_copy",
    "remember_catalog",
    "remembered_catalog",
    "save_catalog_copy",
    "source_url",
]

#: Catalogs are small; anything bigger is a wrong URL, not a catalog.
MAX_CATALOG_BYTES = 16 * 1024 * 1024
TIMEOUT_SECS = 30


class CatalogArchive(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    name: str
    version: str
    os: str
    arch: str
    url: str
    sha256: str
    size: int
    bin_path: str
    kind: Literal["service", "engine"] | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    default_ports: list[PortDef] | None = None

    @property
    def platform(self) -> str:
        return f"{self.os}-{self.arch}"


class Catalog(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    version: Literal["1"]
    archives: list[CatalogArchive]


@dataclass(frozen=True)
class LoadedCatalog:
    """A validated catalog and the URL it was read from (relative archive URLs hang off it).

    ``url`` carries no credentials; those it was given with are ``credentials``, for fetching
    archives on the same origin.
    """

    url: str
    catalog: Catalog
    credentials: Credentials | None = None

    def archive_url(self, archive: CatalogArchive) -> str:
        return urllib.parse.urljoin(self.url, archive.url)

    def resolve(self, name: str, spec: str, os_name: str, arch: str) -> CatalogArchive:
        """The highest version of ``name`` matching ``spec`` for this os/arch."""
        try:
            parsed = VersionSpec.parse(spec)
        except ValueError as exc:
            raise ResolveError(str(exc)) from None
        named = [a for a in self.catalog.archives if a.name == name]
        if not named:
            names = sorted({a.name for a in self.catalog.archives})
            raise ResolveError(
                f"no service {name!r} in catalog {redact_url(self.url)} (available: {', '.join(names) or 'none'})"
            )
        here = [a for a in named if a.os == os_name and a.arch == arch]
        chosen = pick_highest(parsed, (a.version for a in here))
        if chosen is None:
            if here:
                versions = sorted({a.version for a in here}, key=Version.parse, reverse=True)
                have = ", ".join(versions)
                raise ResolveError(
                    f"no version of {name!r} matches {spec!r} for {os_name}-{arch} "
                    f"(available: {have})"
                )
            platforms = sorted({a.platform for a in named})
            raise ResolveError(
                f"{name!r} has no archive for {os_name}-{arch} (available: {', '.join(platforms)})"
            )
        return next(a for a in here if a.version == chosen)


def source_url(source: str, base: Path | None = None) -> str:
    """A catalog argument (path, file://, http://, https://) as an absolute URL (an http(s)
    URL keeps its credentials: ``split_credentials`` takes them off)."""
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("http", "https", "file"):
        return source
    if len(scheme) > 1:
        raise CatalogError(
            f"catalog {redact_url(source)!r}: unsupported scheme {scheme!r} "
            "(expected a path, file://, http:// or https://)"
        )
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.absolute().as_uri()


def read_url(url: str, what: str, limit: int) -> bytes:
    """Bytes behind a file:// or http(s):// URL, at most ``limit``; credentials in the URL
    are sent as Basic auth, and shown redacted."""
    shown = redact_url(url)
    try:
        if url.startswith("file:"):
            path = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
            data = read_capped(path, limit)
        else:
            with open_url(url, None, TIMEOUT_SECS, CatalogUnreachable, f"{what} ") as resp:
                data = resp.read(limit + 1)
    except OSError as exc:
        raise CatalogUnreachable(f"{what} {shown}: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:  # the body cut short
        raise CatalogUnreachable(f"{what} {shown}: {type(exc).__name__}") from None
    except FileRefused as exc:
        raise CatalogError(f"{what} {exc}") from None
    if len(data) > limit:
        raise CatalogError(f"{what} {shown}: larger than {limit} bytes")
    return data


_decoder = msgspec.json.Decoder(Catalog)


def validate_catalog(catalog: Catalog) -> Catalog:
    """Normalise os/arch aliases and check what types cannot; returns the normalised catalog."""
    for i, a in enumerate(catalog.archives):
        at = f"archives[{i}]"
        problem = check_name(a.name)
        if problem:
            raise CatalogError(f"{at}.name: {problem}")
        if a.name in RESERVED_NAMES:
            raise CatalogError(f"{at}.name: {a.name!r} is reserved for Runyard itself")
        if Version.try_parse(a.version) is None or unsafe_relative_path(a.version):
            raise CatalogError(f"{at}.version: {a.version!r} is not a version")
        os_name = normalize_os(a.os)
        if os_name is None:
            raise CatalogError(f"{at}.os: expected one of {', '.join(OSES)}, got {a.os!r}")
        arch = normalize_arch(a.arch)
        if arch is None:
            raise CatalogError(f"{at}.arch: expected one of {', '.join(ARCHES)}, got {a.arch!r}")
        a.os, a.arch = os_name, arch
        if not HEX64.match(a.sha256):
            raise CatalogError(f"{at}.sha256: expected 64 lowercase hex characters")
        if a.size < 0:
            raise CatalogError(f"{at}.size: expected a byte count >= 0, got {a.size}")
        if not a.url:
            raise CatalogError(f"{at}.url: must not be empty")
        problem = unsafe_relative_path(a.bin_path)
        if problem:
            raise CatalogError(f"{at}.binPath: {problem}")
    return catalog


def load_catalog(source: str, base: Path | None = None) -> LoadedCatalog:
    """Read and validate a catalog from a path or URL (credentials in it are split off)."""
    given = source_url(source, base)
    data = read_url(given, "catalog", MAX_CATALOG_BYTES)
    shown = redact_url(given)
    try:
        catalog = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CatalogError(f"catalog {shown}: {decode_error_message(exc)}") from None
    try:
        validate_catalog(catalog)
    except CatalogError as exc:
        raise CatalogError(f"catalog {shown}: {exc}") from None
    url, credentials = split_credentials(given)
    return LoadedCatalog(url, catalog, credentials)


def _remembered_path(tree: RuntimeTree) -> Path:
    return tree.own_config_dir / "catalog.json"


def remember_catalog(tree: RuntimeTree, url: str) -> None:
    """Remember ``url`` for the next ensure, without credentials: a secret is not kept at rest
    in the tree (a later ensure gets them from ``--catalog`` again or from ~/.netrc)."""
    tree.own_config_dir.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"source": split_credentials(url)[0]}, indent=2) + "\n"
    atomic_write_bytes(_remembered_path(tree), body.encode())


def remembered_catalog(tree: RuntimeTree) -> str | None:
    path = _remembered_path(tree)
    try:
        data = json.loads(read_capped(path, SMALL_FILE))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: unreadable ({exc}); pass --catalog again") from None
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str) or not source:
        raise CatalogError(f"{path}: no 'source' string; pass --catalog again")
    return source


# --- the saved copy of the last catalog fetched -----------------------------------------------


class SavedCatalog(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """``config/runyard/catalog-copy.json``: the last catalog fetched, and from where."""

    source: str
    #: time.time() of the fetch.
    fetched_at: float
    catalog: Catalog

    @property
    def loaded(self) -> LoadedCatalog:
        return LoadedCatalog(self.source, self.catalog)

    def age(self, now: float | None = None) -> str:
        """``3h 12m``: how long ago the copy was fetched."""
        secs = max(0, int((time.time() if now is None else now) - self.fetched_at))
        days, rest = divmod(secs, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        if days:
            return f"{days}d {hours}h"
        if hours:
            return f"{hours}h {minutes}m"
        return f"{minutes}m {secs}s" if minutes else f"{secs}s"


_copy_decoder = msgspec.json.Decoder(SavedCatalog)
_copy_encoder = msgspec.json.Encoder(order="sorted")


def _copy_path(tree: RuntimeTree) -> Path:
    return tree.own_config_dir / "catalog-copy.json"


def save_catalog_copy(tree: RuntimeTree, loaded: LoadedCatalog) -> None:
    """Keep ``loaded`` as the copy to fall back on (atomic: the old copy or the new one)."""
    tree.own_config_dir.mkdir(parents=True, exist_ok=True)
    # Never written with credentials: the catalog's URL has none already, and those an archive
    # URL carries are taken off (resolving against the copy, archives on the catalog's
    # origin still get the catalog's credentials; others get netrc's or none).
    source = split_credentials(loaded.url)[0]
    archives = [
        msgspec.structs.replace(a, url=split_credentials(a.url)[0]) for a in loaded.catalog.archives
    ]
    catalog = msgspec.structs.replace(loaded.catalog, archives=archives)
    saved = SavedCatalog(source=source, fetched_at=time.time(), catalog=catalog)
    atomic_write_bytes(_copy_path(tree), _copy_encoder.encode(saved) + b"\n")


def load_catalog_copy(tree: RuntimeTree, source: str) -> SavedCatalog | None:
    """The saved copy of the catalog at ``source`` (an absolute URL, without credentials), or
    None when the tree keeps none of it (none saved, another source, or a copy that no longer
    validates)."""
    path = _copy_path(tree)
    try:
        data = read_capped(path, MAX_CATALOG_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CatalogError(f"{path}: unreadable: {exc.strerror or exc}") from None
    try:
        saved = _copy_decoder.decode(data)
        validate_catalog(saved.catalog)
    except (msgspec.DecodeError, CatalogError):
        return None  # a damaged copy is no copy: the fetch error stands
    return saved if saved.source == source else None
