"""``pack_package``: ``bundle pack --format deb|rpm|run``, a tree into a system package.

    pack_bundle (a signed .tar.gz, in a scratch dir beside the output) ─ wrap it:
    deb, rpm (system_package.py) or run (selfextract.py) ─ the scratch dir goes

The bundle inside is the one ``--format tar.gz`` would write, byte for byte (same tree, same
``createdAt``), so a package is as deterministic as the bundle. A package needs a signature
(``--sign KEY``): its install script verifies it before switching ``current``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from runyard.runtime.core.tree import RuntimeTree

from .layout import FORMATS, BundleError, bundle_format
from .pack import PackResult, check_version, pack_bundle
from .selfextract import build_run_installer
from .system_package import (
    DEFAULT_MAINTAINER,
    PACKAGE_FORMATS,
    build_system_package,
    package_name_problem,
)

__all__ = ["check_maintainer", "default_package_name", "output_format", "pack_package"]

_MAINTAINER_RE = re.compile(r"[^\x00-\x1f<>]+ <[^\s<>@]+@[^\s<>@]+>")


def output_format(path: str | os.PathLike[str], explicit: str | None = None) -> str:
    """``--format`` or the output name's suffix: a bundle format (tar.gz, zip) or a package
    format (deb, rpm, run); both must agree when both are given."""
    name = Path(path).name
    suffix = name.lower().rpartition(".")[2]
    if suffix not in PACKAGE_FORMATS and explicit not in PACKAGE_FORMATS:
        return bundle_format(path, explicit)  # its own messages, for bundles
    by_name = suffix if suffix in PACKAGE_FORMATS else _bundle_format_or_none(path)
    if explicit is None:
        return suffix
    if explicit not in (*FORMATS, *PACKAGE_FORMATS):
        raise BundleError(
            f"--format {explicit}: expected one of {', '.join((*FORMATS, *PACKAGE_FORMATS))}"
        )
    if by_name is not None and by_name != explicit:
        raise BundleError(f"{name}: the name says {by_name}, --format says {explicit}")
    return explicit


def _bundle_format_or_none(path: str | os.PathLike[str]) -> str | None:
    try:
        return bundle_format(path)
    except BundleError:
        return None


def check_maintainer(maintainer: str) -> str:
    """``Name <mail>`` on one line, as the Maintainer/Packager field; BundleError otherwise."""
    if not _MAINTAINER_RE.fullmatch(maintainer):
        raise BundleError(f"--maintainer {maintainer!r}: expected 'Name <user@host>' on one line")
    return maintainer


def default_package_name(tree: RuntimeTree) -> str:
    """``runyard-<tree dir name>``, lower-cased, other characters as ``-``."""
    base = re.sub(r"[^a-z0-9+.-]+", "-", tree.root.name.lower()).strip("-.+") or "runtime"
    return f"runyard-{base}"[:63]


def pack_package(
    tree: RuntimeTree,
    out: str | os.PathLike[str],
    fmt: str,
    *,
    name: str | None = None,
    maintainer: str | None = None,
    sign_key: str | os.PathLike[str] | None = None,
    version: str | None = None,
    **pack_options: Any,
) -> PackResult:
    """Pack ``tree`` into a signed bundle, then into the ``fmt`` package ``name`` at ``out``.
    ``pack_options`` are those of pack_bundle. BundleError before any write on a refusal."""
    if fmt not in PACKAGE_FORMATS:
        raise BundleError(f"--format {fmt}: expected one of {', '.join(PACKAGE_FORMATS)}")
    if sign_key is None:
        raise BundleError(
            f"--format {fmt} needs --sign KEY: the package's install script verifies the "
            "bundle's signature before switching `current`"
        )
    name = name or default_package_name(tree)
    problem = package_name_problem(name)
    if problem:
        raise BundleError(problem)
    version = check_version(version)
    maintainer = check_maintainer(maintainer or DEFAULT_MAINTAINER)
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as scratch:
        inner = Path(scratch) / f"{name}-{version}.tar.gz"
        result = pack_bundle(
            tree, inner, fmt="tar.gz", sign_key=sign_key, version=version, **pack_options
        )
        if fmt == "run":
            build_run_installer(inner, out, name)
        else:
            build_system_package(inner, out, fmt, name, maintainer)
    with open(out, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return dataclasses.replace(
        result,
        path=str(out),
        format=fmt,
        sha256=digest,
        size=out.stat().st_size,
        package=name,
        bundle_sha256=result.sha256,
        attestation="",  # the inner bundle's sidecar went with the scratch directory
    )
