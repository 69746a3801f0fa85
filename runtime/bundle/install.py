"""``install_bundle`` and ``rollback``: a bundle into ``DIR/versions/<version>/``, then the switch.

    read manifest ─ signature ─ plan ─ lock ─ version policy ─ free space ─ stream members into
    versions/.<v>.tmp-XXXX (unpack.py: each checked, hashed, fsynced) ─ rename to
    versions/<v> ─ previous := old current ─ current := <v> ─ audit

Everything before the switch happens off to the side, so a failed or interrupted install
(SIGKILL, power cut) leaves ``current`` exactly as it was; the temp dir it leaves is removed by
the next install. Fully offline: nothing but the bundle file is read.

Version policy against the current version (docs/BUNDLES.md):

- none installed: install;
- higher, same major: upgrade; higher major: only with ``migrate`` (its data/ may need it);
- lower: only with ``force`` (``rollback`` is the way back to the previous version);
- the same version already in versions/: nothing to extract when the bundle is identical (same
  manifest but for the signature), refused when it differs unless ``force``; the *current*
  version is never replaced in place, even with ``force``.

A short cut or a refusal extracts nothing, so it reads every member against the signed
digests first (``unpack.check_members``): a tampered bundle is named, whatever is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.core.capped import MANIFEST_FILE, read_json_capped
from runyard.runtime.core.errors import ManifestError, RunyardError
from runyard.runtime.core.manifest import parse_manifest
from runyard.runtime.core.sizes import ByteStyle, format_bytes
from runyard.runtime.core.space import free_bytes, on_disk
from runyard.runtime.core.versions import Version
from runyard.runtime.ops.audit_action import audited

from .layout import DIR_MODE, MANIFEST, BundleError
from .plan import BundlePlan
from .prefix import Prefix
from .reader import BundleReader
from .signing import SignatureCheck, check_signature
from .unpack import check_members, extract_members

__all__ = ["InstallResult", "decide_action", "install_bundle", "rollback"]


@dataclass
class InstallResult:
    prefix: str
    version: str
    #: install | upgrade | downgrade | reinstall | switch | unchanged | rollback
    action: str
    #: The version that was current before (None: first install).
    previous: str | None
    path: str
    signature: str = ""
    signed_by: str = ""
    removed_stale: list[str] = field(default_factory=list)


def decide_action(current: str | None, new: str, *, migrate: bool, force: bool) -> str:
    """What installing ``new`` over ``current`` is; BundleError when the policy refuses it."""
    if current is None:
        return "install"
    if new == current:
        return "reinstall"
    cv, nv = Version.parse(current), Version.parse(new)
    if nv > cv:
        if nv.numbers[0] > cv.numbers[0] and not migrate:
            raise BundleError(
                f"{new} is a major upgrade from the current {current}: its data/ may need "
                "migrating; pass --migrate to install it"
            )
        return "upgrade"
    if nv < cv:
        if not force:
            raise BundleError(
                f"{new} is older than the current {current}: `runyard bundle rollback` goes back "
                "to the previous version; pass --force to install an older one"
            )
        return "downgrade"
    if not force:
        raise BundleError(f"{new} has the same precedence as the current {current}; pass --force")
    return "reinstall"


def _content_id(doc: dict[str, Any]) -> str:
    """What makes two bundles identical: the manifest without its signature fields."""
    bundle = dict(doc.get("bundle") or {})
    for name in ("signature", "keyFingerprint", "publicKey"):
        bundle.pop(name, None)
    try:
        return hashlib.sha256(canonical_bytes({**doc, "bundle": bundle})).hexdigest()
    except (ValueError, TypeError) as exc:  # validation bounds integers; never a traceback
        raise BundleError(f"{MANIFEST}: has no canonical form: {exc}") from None


def _installed_id(version_dir: Path) -> str | None:
    try:
        return _content_id(read_json_capped(version_dir / MANIFEST, MANIFEST_FILE))
    except (OSError, ValueError, TypeError, RunyardError):
        return None


def _check_free_space(p: Prefix, plan: BundlePlan, manifest: bytes, label: str) -> None:
    """Refuse, before extracting, a bundle whose files (by the sizes its manifest lists, each
    rounded up to whole blocks) do not fit in the free space of the prefix's filesystem."""
    where = p.versions_dir if p.versions_dir.is_dir() else p.root
    need = on_disk(where, [len(manifest), *(plan.sizes or {}).values()])
    free = free_bytes(where)
    if need > free:
        raise BundleError(
            f"{label}: needs {format_bytes(need, ByteStyle.PROSE)} in {p.root} but only {format_bytes(free, ByteStyle.PROSE)} is free there; "
            "free some space and retry"
        )


# --- install and rollback ----------------------------------------------------------------------


def install_bundle(
    bundle: str | os.PathLike[str],
    prefix: str | os.PathLike[str],
    *,
    pubkey: str | os.PathLike[str] | None = None,
    migrate: bool = False,
    force: bool = False,
    fmt: str | None = None,
) -> InstallResult:
    """Install ``bundle`` into ``prefix`` and make it current (see the module doc); ``fmt``
    names the format of a file whose name does not say it."""
    p = Prefix(prefix)
    # A forged or broken bundle is worth a line, in a prefix that has a log already.
    with audited(
        p.root / "logs", "install", error_key="reason", strict=True, refusal_needs_log=True
    ) as act:
        public = None
        if pubkey is not None:
            from runyard.runtime.signing.keys import load_public_key

            public = load_public_key(pubkey)
        with BundleReader(bundle, fmt) as reader:
            data, doc, plan, sig = _read_plan(reader, public)
            version = act.target = plan.contents.version
            with p.lock():
                p.ensure_shared()
                stale = p.clean_stale()
                current = p.current()
                result = _install_locked(p, reader, plan, data, doc, current, migrate, force)
                result.signature, result.signed_by = sig.state, sig.fingerprint
                result.removed_stale = stale
                act.changed = result.action != "unchanged"
                if act.changed:
                    act.action = "upgrade" if result.action == "upgrade" else "install"
                    act.detail = {
                        "from": current or "",
                        "to": version,
                        "kind": result.action,
                        "bundle": reader.label,
                        "signer": sig.fingerprint,
                        "provenance": sig.state,
                    }
                    act.commit()  # under the lock: entries in the order of the switches
    return result


def _read_plan(
    reader: BundleReader, public: Any
) -> tuple[bytes, dict[str, Any], BundlePlan, SignatureCheck]:
    """The manifest (bytes, document, plan) and the signature verdict; BundleError when the
    bundle cannot be installed as it is."""
    label = reader.label
    data = reader.read_manifest()
    try:
        manifest = parse_manifest(data, source=f"{label}: {MANIFEST}")
    except ManifestError as exc:
        raise BundleError(str(exc)) from None
    doc = json.loads(data)
    sig = check_signature(doc, public)
    if not sig.ok:
        raise BundleError(f"{label}: signature: {sig.detail}")
    plan = BundlePlan(manifest)
    problems = plan.problems()
    if problems:
        more = f" (and {len(problems) - 1} more: see `runyard bundle verify`)"
        raise BundleError(f"{label}: {problems[0]}{more if len(problems) > 1 else ''}")
    return data, doc, plan, sig


def _install_locked(
    p: Prefix,
    reader: BundleReader,
    plan: BundlePlan,
    data: bytes,
    doc: dict[str, Any],
    current: str | None,
    migrate: bool,
    force: bool,
) -> InstallResult:
    version = plan.contents.version
    try:
        action = decide_action(current, version, migrate=migrate, force=force)
    except BundleError:
        check_members(reader, plan)  # a tampered bundle is named before the policy speaks
        raise
    target = p.version_dir(version)
    replace = False
    if os.path.lexists(target):
        same = _installed_id(target) == _content_id(doc)
        if same or current == version or not force:
            # A short cut or a refusal extracts nothing, so nothing else would read the members:
            # they are checked against the signed digests first, whatever is installed.
            check_members(reader, plan)
        if same:
            if current == version:
                return InstallResult(str(p.root), version, "unchanged", current, str(target))
            p.make_current(version)
            return InstallResult(str(p.root), version, "switch", current, str(target))
        if current == version:
            raise BundleError(
                f"{version} is current in {p.root} and differs from this bundle; it cannot be "
                "replaced in place: install another version first, then this one with --force"
            )
        if not force:
            raise BundleError(
                f"{version} is already installed in {p.root} with other contents; "
                "pass --force to replace it (or pack another version)"
            )
        replace = True
    _check_free_space(p, plan, data, reader.label)
    temp = p.new_temp_dir(version)
    try:
        extract_members(reader, plan, data, temp)
        os.chmod(temp, DIR_MODE)
        if replace:
            aside = p.new_aside_dir(version)
            os.rename(target, aside / "old")
        os.rename(temp, target)
        fsync_dir(p.versions_dir)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if replace:
        shutil.rmtree(aside, ignore_errors=True)
    p.make_current(version)
    return InstallResult(str(p.root), version, action, current, str(target))


def rollback(prefix: str | os.PathLike[str]) -> InstallResult:
    """Make the previous version current again (and the current one previous)."""
    p = Prefix(prefix)
    if not p.versions_dir.is_dir():
        raise BundleError(f"{p.root}: no bundle installed here (no versions/)")
    with (
        audited(
            p.root / "logs", "rollback", error_key="reason", strict=True, refusal_needs_log=True
        ) as act,
        p.lock(),
    ):
        current, previous = p.current(), p.previous()
        act.target = previous or ""
        if current is None:
            raise BundleError(f"{p.root}: no current version to roll back from")
        if previous is None:
            raise BundleError(
                f"{p.root}: no previous version to roll back to (current is {current})"
            )
        if not (p.version_dir(previous) / MANIFEST).is_file():
            raise BundleError(f"{p.root}: previous version {previous} is missing from versions/")
        p.make_current(previous)
        result = InstallResult(
            str(p.root), previous, "rollback", current, str(p.version_dir(previous))
        )
        act.detail = {"from": current, "to": previous}
        act.commit()  # under the lock, as an install's
    return result
