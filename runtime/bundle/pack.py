"""``pack_bundle``: a runtime tree (or some of its services) into one deterministic bundle file.

    select services ─ collect + hash + scan ─ refuse secrets ─ manifest (+ sign) ─ write
    ─ BUNDLE.intoto.jsonl beside it (attestation.py)

Nothing is written before every check has passed: an unknown service, a drifted install dir,
a secret, a bad version or key is refused first, with one line. The version is ``version``
(``--version``; semver) or the project file's ``version``. ``createdAt`` is chosen so that it
cannot break determinism: ``created_at`` (``--created-at``, RFC 3339), else
``SOURCE_DATE_EPOCH``, else the newest ``installedAt`` of the packed services, else
1980-01-01T00:00:00Z; it is also the mtime of every member.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from runyard.runtime.core.digest import file_sha256
from runyard.runtime.core.errors import ManifestError
from runyard.runtime.core.manifest import (
    SEMVER_RE,
    BundleInfo,
    RuntimeManifest,
    encode_manifest,
    load_manifest,
    validate_manifest,
)
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.signing.ed25519 import key_identity, sign_base64

from .attestation import attest_bundle
from .collect import Member, collect_members, select_manifest
from .layout import EXEC_MODE, MANIFEST, BundleError, Finding, SecretsFound, bundle_format
from .secrets import scan_env
from .signing import signing_payload
from .writer import DEFAULT_LEVEL, write_bundle

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["PackResult", "check_version", "pack_bundle", "resolve_created_at"]

_FLOOR = "1980-01-01T00:00:00Z"


@dataclass
class PackResult:
    path: str
    format: str
    version: str
    sha256: str
    size: int
    #: Regular files in the bundle, manifest.json included.
    files: int
    services: list[str]
    created_at: str
    signed_by: str = ""
    allowed: list[str] = field(default_factory=list)
    #: --format deb|rpm|run: the package name, and the sha256 of the bundle inside it.
    package: str = ""
    bundle_sha256: str = ""
    #: The in-toto attestation written beside the bundle (attestation.py); "" for a package.
    attestation: str = ""


def check_version(version: str | None) -> str:
    if not version:
        raise BundleError(
            "no bundle version: pass --version V (a semantic version such as 1.4.0), "
            "or set `version` in the project file"
        )
    if not SEMVER_RE.match(version):
        raise BundleError(
            f"--version {version!r}: not a semantic version (like 1.4.0 or 2.0.0-rc.1)"
        )
    return version


def _rfc3339(epoch: int) -> str:
    when = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def created_epoch(text: str) -> int:
    """The epoch seconds of an RFC 3339 time (the mtime of every member)."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise BundleError(f"createdAt {text!r}: not an RFC 3339 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def resolve_created_at(explicit: str | None, installed_at: Sequence[str]) -> str:
    """``--created-at`` > ``SOURCE_DATE_EPOCH`` > newest installedAt > 1980-01-01."""
    if explicit:
        return _rfc3339(created_epoch(explicit))
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return _rfc3339(int(epoch))
        except (ValueError, OverflowError, OSError):
            raise BundleError(f"SOURCE_DATE_EPOCH={epoch!r}: not a number of seconds") from None
    epochs = []
    for text in installed_at:
        with contextlib.suppress(BundleError):
            epochs.append(created_epoch(text))
    return _rfc3339(max(epochs)) if epochs else _FLOOR


def _packer() -> str:
    try:
        return f"runyard {dist_version('runyard')}"
    except PackageNotFoundError:  # a bare checkout
        return "runyard"


def _allowed(allow: Sequence[str], members: list[Member]) -> list[str]:
    names = {m.name for m in members if m.kind == "file"} | {MANIFEST}
    out: list[str] = []
    for raw in allow:
        rel = posixpath.normpath(raw.strip().replace("\\", "/")).lstrip("/")
        if rel not in names:
            raise BundleError(
                f"--allow {raw}: not a file of this bundle (paths are like config/web/app.toml)"
            )
        if rel not in out:
            out.append(rel)
    return sorted(out)


def _check_key_not_packed(sign_key: str | os.PathLike[str], members: list[Member]) -> None:
    real = os.path.realpath(sign_key)
    for m in members:
        if m.path is not None and os.path.realpath(m.path) == real:
            raise BundleError(f"{m.name}: is the signing key itself; a private key is never packed")


def pack_bundle(
    tree: RuntimeTree,
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    services: Sequence[str] | None = None,
    with_wheels: bool = False,
    sign_key: str | os.PathLike[str] | None = None,
    version: str | None = None,
    allow: Sequence[str] = (),
    created_at: str | None = None,
    level: int = DEFAULT_LEVEL,
) -> PackResult:
    """Pack ``tree`` into ``out``; BundleError (SecretsFound for secrets) before any write."""
    out = Path(out).absolute()
    fmt = bundle_format(out, fmt)
    version = check_version(version)
    key = None
    if sign_key is not None:
        from runyard.runtime.signing.keys import load_signing_key

        key = load_signing_key(sign_key)
    manifest = select_manifest(load_manifest(tree.require()), services)
    if not manifest.services:
        raise BundleError(f"{tree.root}: no services installed; nothing to pack")
    created = resolve_created_at(created_at, [s.installed_at for s in manifest.services])
    with contextlib.ExitStack() as stack:
        members, empty = _collect(stack, tree, manifest, out, with_wheels)
        if sign_key is not None:
            _check_key_not_packed(sign_key, members)
        allowed = _refuse_secrets(manifest, members, allow)
        manifest.bundle = _bundle_info(members, empty, created, version, allowed)
        signed_by = _seal_manifest(manifest, key)
        data = encode_manifest(manifest)
        write_bundle(out, fmt, data, members, mtime=created_epoch(created), level=level)
    sha256 = file_sha256(out)
    attestation = attest_bundle(out, sha256, data, json.loads(data), key)
    return PackResult(
        path=str(out),
        format=fmt,
        version=version,
        sha256=sha256,
        size=out.stat().st_size,
        files=sum(m.kind == "file" for m in members) + 1,
        services=sorted({s.name for s in manifest.services}),
        created_at=created,
        signed_by=signed_by,
        allowed=allowed,
        attestation=str(attestation),
    )


def _collect(
    stack: contextlib.ExitStack,
    tree: RuntimeTree,
    manifest: RuntimeManifest,
    out: Path,
    with_wheels: bool,
) -> tuple[list[Member], list[str]]:
    """The members (hashed and scanned) and empty dirs; with wheels, built in a scratch dir
    beside ``out`` that lives as long as ``stack``."""
    wheels: list[Path] | None = None
    script: bytes | None = None
    if with_wheels:
        from .wheels import collect_wheels, install_script

        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f".{out.name}.wheels-", dir=out.parent)
        )
        wheels = collect_wheels(Path(scratch))
        script = install_script()
    return collect_members(tree, manifest, wheels=wheels, install_sh=script)


def _refuse_secrets(
    manifest: RuntimeManifest, members: list[Member], allow: Sequence[str]
) -> list[str]:
    """SecretsFound for any finding in a member or a service env not allowed; the allowed."""
    allowed = _allowed(allow, members)
    findings: list[Finding] = [f for m in members for f in m.findings]
    for i, s in enumerate(manifest.services):
        findings += scan_env(f"services[{i}] ({s.name} {s.version})", s.env)
    refused = [f for f in findings if f.path not in allowed]
    if refused:
        raise SecretsFound(refused)
    return allowed


def _bundle_info(
    members: list[Member], empty: list[str], created: str, version: str, allowed: list[str]
) -> BundleInfo:
    """The manifest's ``bundle`` section: what the archive holds, unsigned."""
    files = [m for m in members if m.kind == "file"]
    return BundleInfo(
        created_at=created,
        source=_packer(),
        version=version,
        files={m.name: m.sha256 for m in files},
        sizes={m.name: m.size for m in files},
        executables=[m.name for m in files if m.mode == EXEC_MODE],
        links={m.name: m.target for m in members if m.kind == "symlink"},
        dirs=empty,
        allowed=allowed,
    )


def _seal_manifest(manifest: RuntimeManifest, key: Ed25519PrivateKey | None) -> str:
    """Validate the manifest and, with a key, sign it; the signer's fingerprint or ""."""
    info = manifest.bundle
    signed_by = ""
    if key is not None:
        signed_by, raw = key_identity(key)
        info.key_fingerprint, info.public_key = signed_by, raw
    try:
        validate_manifest(manifest)
    except ManifestError as exc:
        raise BundleError(f"the bundle's manifest would be invalid: {exc}") from None
    if key is not None:
        info.signature = sign_base64(key, signing_payload(msgspec.to_builtins(manifest)))
    return signed_by
