"""``BUNDLE.intoto.jsonl`` beside a runtime bundle: the bundle described for in-toto and SLSA tools.

``pack_bundle`` writes it next to the archive it packed (``rt-1.4.0.tar.gz`` ->
``rt-1.4.0.tar.gz.intoto.jsonl``): one DSSE envelope of an in-toto Statement v1, signed with
the bundle's key when the bundle is signed (``runtime.signing.intoto``).

    subject        the archive file itself (its base name, the sha256 of its bytes), then every
                   member file: manifest.json (the sha256 of its bytes in the archive) and each
                   file ``bundle.files`` lists, by member name (links and dirs are no subjects)
    predicate      SLSA provenance v1: buildType BUNDLE_BUILD_TYPE; externalParameters = the
                   bundle version, createdAt and the services; resolvedDependencies = each
                   packed service archive (name, version, platform, its catalog sha256);
                   builder.version = the Runyard that packed it (``bundle.source``)

Why beside and not inside: a subject is the archive's own digest, which no member can hold,
and a member would have to be listed by the manifest, which the statement lists. The manifest's
signature keeps covering every installed byte; the sidecar is for tools that read in-toto.

Every value comes from the manifest, so ``check_bundle_attestation`` recomputes the statement
from the bundle and compares. A bundle without a sidecar is reported as such (skipped): a
bundle packed before attestations, or copied without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.digest import file_sha256
from runyard.runtime.core.errors import AttestationError, FileRefused
from runyard.runtime.signing.ed25519 import public_key_from_hex
from runyard.runtime.signing.intoto import (
    Finding,
    attestation_bytes,
    predicate_diff,
    read_statement,
    signature_finding,
    statement,
    subject_problems,
)

from .layout import MANIFEST

__all__ = [
    "ATTESTATION_SUFFIX",
    "BUNDLE_BUILD_TYPE",
    "attest_bundle",
    "attestation_path",
    "bundle_predicate",
    "check_bundle_attestation",
]

ATTESTATION_SUFFIX = ".intoto.jsonl"
#: Names, not links: they say which schema externalParameters and builder follow.
BUNDLE_BUILD_TYPE = "https://runyard.dev/provenance/runtime-bundle/v1"
BUILDER_ID = "https://runyard.dev/builder/operator-box/v1"


def attestation_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ATTESTATION_SUFFIX)


def _section(doc: Mapping[str, Any]) -> dict[str, Any]:
    info = doc.get("bundle")
    return info if isinstance(info, dict) else {}


def bundle_predicate(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of a bundle, from its manifest document alone."""
    info = _section(doc)
    services = [s for s in doc.get("services") or [] if isinstance(s, dict)]
    return {
        "buildDefinition": {
            "buildType": BUNDLE_BUILD_TYPE,
            "externalParameters": {
                "createdAt": info.get("createdAt"),
                "services": sorted({str(s.get("name")) for s in services}),
                "version": info.get("version"),
            },
            "internalParameters": {},
            "resolvedDependencies": [
                {
                    "digest": {"sha256": s.get("checksum")},
                    "name": f"{s.get('name')} {s.get('version')}",
                    "uri": f"runyard:service/{s.get('name')}/{s.get('version')}/"
                    f"{s.get('os')}-{s.get('arch')}",
                }
                for s in services
            ],
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"runyard": info.get("source")}},
        },
    }


def _subjects(archive: Path, archive_sha: str, manifest: bytes, doc: Mapping[str, Any]) -> dict:
    files = _section(doc).get("files")
    return {
        **(files if isinstance(files, dict) else {}),
        MANIFEST: hashlib.sha256(manifest).hexdigest(),
        archive.name: archive_sha,
    }


def attest_bundle(
    archive: Path,
    archive_sha: str,
    manifest: bytes,
    doc: Mapping[str, Any],
    key: Ed25519PrivateKey | None,
) -> Path:
    """Write the sidecar of a bundle just packed (atomically); returns its path."""
    subjects = _subjects(archive, archive_sha, manifest, doc)
    data = attestation_bytes(statement(subjects, bundle_predicate(doc)), key)
    path = attestation_path(archive)
    atomic_write_bytes(path, data)
    return path


def check_bundle_attestation(
    archive: Path, manifest: bytes, doc: Mapping[str, Any], given: Ed25519PublicKey | None
) -> list[Finding]:
    """The findings on the sidecar of ``archive`` (whose manifest.json is ``manifest``, parsed
    as ``doc``): subjects, predicate, and a DSSE signature by ``given`` (--pubkey) or, without
    one, by the key the manifest names."""
    path = attestation_path(archive)
    if not archive.is_file():  # a pipe is read once, by the other checks
        return [("attestation", True, "not checked: the bundle is not a regular file", True)]
    try:
        data = read_capped(path, SMALL_FILE, follow_symlinks=False)
    except FileNotFoundError:
        return [("attestation", True, f"no {path.name} beside the bundle", True)]
    except (OSError, FileRefused) as exc:
        return [("attestation", False, f"{path.name}: cannot be read: {exc}", False)]
    try:
        env, stmt = read_statement(data, path.name)
    except AttestationError as exc:
        return [("attestation", False, str(exc), False)]
    subjects = _subjects(archive, file_sha256(archive), manifest, doc)
    problems = subject_problems(stmt, subjects, "the bundle")
    want = bundle_predicate(doc)
    if stmt.get("predicate") != want:
        where = ", ".join(predicate_diff(stmt.get("predicate"), want))
        problems.append(f"predicate differs from manifest.json at {where}")
    found: list[Finding] = [("attestation", False, p, False) for p in problems]
    if not found:
        found.append(("attestation", True, f"{path.name}: {len(subjects)} subjects match", False))
    key, why = given, "with the given public key"
    named = _section(doc).get("publicKey")
    if key is None and isinstance(named, str) and named:
        try:
            key, why = public_key_from_hex(named), "with the key the manifest names"
        except ValueError:
            return [*found, ("attestation-signature", False, "bundle.publicKey is no key", False)]
    return [*found, signature_finding(env, key, why)]
