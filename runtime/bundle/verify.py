"""``verify_bundle_file``: every check a bundle file must pass, every failure on its own line.

    archive     the file reads to the end; no member breaks the archive rules (traversal,
                absolute names, links out, devices, FIFOs, setuid/setgid/sticky)
    manifest    the first member is manifest.json; it parses and validates
    plan        what the manifest lists is acceptable (see plan.py)
    members     every member is listed, once, with the right kind, mode and link target
    size        every file's archive header gives the size bundle.sizes lists (a file that
                does not is not read further)
    sha256      every file has the sha256 the manifest lists
    complete    nothing listed is missing
    signature   see signing.py: with --pubkey the bundle must be signed by that key
    attestation the in-toto sidecar BUNDLE.intoto.jsonl, when present: subjects are the archive
                and its member files, predicate from the manifest (attestation.py)
    attestation-signature  its DSSE signature, by --pubkey or the key the manifest names

Verification only reads the file; it never extracts anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import msgspec

from runyard.runtime.core.checks import Check
from runyard.runtime.core.errors import ManifestError, UnsafeArchiveError
from runyard.runtime.core.manifest import parse_manifest

from .attestation import check_bundle_attestation
from .layout import MANIFEST, BundleError
from .plan import BundlePlan
from .reader import BundleReader, copy_member
from .signing import check_signature

__all__ = ["BundleReport", "Check", "verify_bundle_file"]


class BundleReport(msgspec.Struct, kw_only=True):
    bundle: str
    checks: list[Check]
    format: str = ""
    version: str = ""
    services: list[str] = []
    members: int = 0
    #: unsigned | self-consistent | valid | invalid | wrong-key | missing ("" when unknown).
    signature: str = ""
    signed_by: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["ok"] = self.ok
        return out


class _Verifier:
    def __init__(self, path: Path) -> None:
        self.report = BundleReport(bundle=str(path), checks=[])

    def add(self, name: str, ok: bool, detail: str, skipped: bool = False) -> None:
        self.report.checks.append(Check(name, ok, detail, skipped))

    def passed(self, name: str, detail: str) -> None:
        if not any(c.name == name and not c.ok for c in self.report.checks):
            self.add(name, True, detail)


def verify_bundle_file(
    path: str | os.PathLike[str],
    pubkey: str | os.PathLike[str] | None = None,
    fmt: str | None = None,
) -> BundleReport:
    """Check a bundle file; the report lists every failure. Raises only for a missing file,
    an unknown format or an unreadable --pubkey."""
    path = Path(path)
    public = None
    if pubkey is not None:
        from runyard.runtime.signing.keys import load_public_key

        public = load_public_key(pubkey)
    if not path.is_file() and not path.is_fifo():
        raise BundleError(f"{path}: no such file")
    v = _Verifier(path)
    reader = BundleReader(path, fmt)
    v.report.format = reader.format
    try:
        with reader:
            try:
                data = reader.read_manifest()
                manifest = parse_manifest(data, source=MANIFEST)
            except (BundleError, ManifestError) as exc:
                v.add("manifest", False, str(exc))
                return v.report
            doc = json.loads(data)
            v.add("manifest", True, f"{MANIFEST} parses and validates")
            plan = BundlePlan(manifest)
            c = plan.contents
            v.report.version = c.version
            v.report.services = sorted({s.name for s in manifest.services})
            for problem in plan.problems():
                v.add("plan", False, problem)
            counts = f"{len(c.files)} files, {len(c.links)} links"
            v.passed("plan", f"{counts}, {len(manifest.services)} service entries")
            _read_members(v, reader, plan)
    except UnsafeArchiveError as exc:  # unreadable before the members: nothing to go on
        v.add("archive", False, str(exc))
        return v.report
    sig = check_signature(doc, public)
    v.report.signature, v.report.signed_by = sig.state, sig.fingerprint
    v.add("signature", sig.ok, sig.detail)
    for name, ok, detail, skipped in check_bundle_attestation(path, data, doc, public):
        v.add(name, ok, detail, skipped)
    return v.report


def _read_members(v: _Verifier, reader: BundleReader, plan: BundlePlan) -> None:
    label = reader.label
    count = 1
    try:
        for item in reader.items():
            count += 1
            if item.entry is None:
                v.add("archive", False, item.problem or f"{item.raw!r}: unsafe member")
                continue
            problem = plan.expect(item.entry)
            if problem:
                v.add("members", False, problem)
                continue
            if item.open is None:
                continue
            problem = plan.check_size(item.entry)
            if problem:
                v.add("size", False, problem)
                continue
            digest = hashlib.sha256()
            with item.open() as src:
                copy_member(src, digest.update, item.entry.size, label)
            problem = plan.check_digest(item.entry.name, digest.hexdigest())
            if problem:
                v.add("sha256", False, problem)
    except UnsafeArchiveError as exc:
        v.add("archive", False, str(exc))
        v.add("complete", False, "not checked: the archive could not be read to its end", True)
        v.report.members = count
        return
    v.report.members = count
    v.passed("archive", f"{count} members, none unsafe")
    v.passed("members", "every member is listed in manifest.json")
    v.passed("size", "every file has its listed size")
    v.passed("sha256", "every file has its listed sha256")
    for problem in plan.finish():
        v.add("complete", False, problem)
    v.passed("complete", "every listed member is present")
