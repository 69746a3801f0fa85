"""Licenses: what tier a tree runs at and with which limits, checked against trusted issuer keys.

A license is one JSON object, ``config/runyard/license.json`` in the tree (or any file given)::

    {"tier": "professional", "licensee": "ACME GmbH", "issued": "2025-01-01",
     "expires": "2026-01-01", "limits": {"max_services": 500}, "signature": "<base64>"}

- ``tier``: professional | enterprise | regulated | sovereign (community needs no license);
- ``issued`` and ``expires``: RFC 3339 full-dates; the license is good through the whole of its
  ``expires`` day, UTC;
- ``limits``: ``max_services`` (an int >= 1) is required and enforced; other limits are kept
  and shown, not enforced;
- ``signature``: base64 of the Ed25519 signature over the RFC 8785 canonical bytes of the
  object without ``signature`` (any other member is covered too).

Trusted issuers are Ed25519 public keys (PEM ``*.pub``) in ``config/runyard/license-issuers/``
of the tree, which the operator places there (a runtime bundle never carries ``config/runyard/``;
an install prefix shares it across versions), plus those in the directory named by
``RUNYARD_LICENSE_ISSUERS`` (development and tests) and any given explicitly. Runyard embeds no
issuer key of its own. Whoever can write the tree (its owner, root) can add an issuer key and
sign any license: a license keeps honest operators within what they bought and makes a change
deliberate and visible; it is not copy protection (docs/OPERATIONS.md).

``check_license`` never raises for a bad license: it returns a ``LicenseStatus`` whose
``status`` is valid, missing, expired, forged (no trusted key verifies the signature: signed by
another key, or any signed member changed), unverified (no trusted issuer key at all) or
malformed (also: JSON nested deeper than ``MAX_DEPTH``, which is refused before anything
recurses over it); anything but valid runs with ``COMMUNITY_LIMITS``. ``cryptography`` is imported only
when there is a license to check.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import FileRefused, LicenseError, LicenseNotHonoured
from runyard.runtime.core.tree import RuntimeTree

__all__ = [
    "COMMUNITY_LIMITS",
    "ISSUERS_ENV",
    "TIERS",
    "LicenseError",
    "LicenseStatus",
    "check_license",
    "issuer_dir",
    "license_path",
    "sign_license",
    "tree_license",
    "trusted_issuers",
]

#: The tiers a license can grant, cheapest first. ``community`` is the absence of a license.
TIERS = ("professional", "enterprise", "regulated", "sovereign")
#: What a tree runs with when there is no valid license: no cap. The community tier limits
#: nothing a box with no license needs; only a license's own limits are enforced.
COMMUNITY_LIMITS: Mapping[str, int] = {}
ISSUERS_ENV = "RUNYARD_LICENSE_ISSUERS"
REQUIRED = ("tier", "licensee", "issued", "expires", "limits", "signature")
#: Deepest nesting a license may have (a real one has 3 levels); deeper is malformed.
MAX_DEPTH = 32


def _depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def license_path(tree: RuntimeTree) -> Path:
    return tree.config_dir / "runyard" / "license.json"


def issuer_dir(tree: RuntimeTree) -> Path:
    return tree.config_dir / "runyard" / "license-issuers"


class LicenseStatus(msgspec.Struct, frozen=True):
    #: valid | missing | expired | forged | unverified | malformed
    status: str
    #: The tier in force: the license's when valid, else ``community``.
    tier: str
    #: The limits in force: the license's when valid, else COMMUNITY_LIMITS.
    limits: Mapping[str, Any]
    #: One line: why this status (empty when valid or missing).
    reason: str = ""
    path: str | None = None
    #: What the file claims (shown even when it is not valid).
    claimed_tier: str | None = None
    licensee: str | None = None
    issued: str | None = None
    expires: str | None = None
    claimed_limits: Mapping[str, Any] = msgspec.field(default_factory=dict)
    #: The issuer key file that verified the signature.
    issuer: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("valid", "missing")

    @property
    def max_services(self) -> int | None:
        value = self.limits.get("max_services")
        return value if isinstance(value, int) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "tier": self.tier,
            "limits": dict(self.limits),
            "reason": self.reason,
            "path": self.path,
            "licensee": self.licensee,
            "issued": self.issued,
            "expires": self.expires,
            "claimed": {
                "tier": self.claimed_tier,
                "licensee": self.licensee,
                "issued": self.issued,
                "expires": self.expires,
                "limits": dict(self.claimed_limits),
            },
            "issuer": self.issuer,
        }

    def summary(self) -> str:
        """One line for the daemon log."""
        limits = ", ".join(f"{k} {v}" for k, v in sorted(self.limits.items())) or "no limits"
        if self.status == "valid":
            return f"license: {self.tier} for {self.licensee}, expires {self.expires} ({limits})"
        if self.status == "missing":
            return f"license: none; community tier ({limits})"
        return f"license: {self.reason}; running with community limits ({limits})"


def _community(
    status: str, reason: str = "", path: Path | None = None, **claims: Any
) -> LicenseStatus:
    return LicenseStatus(
        status, "community", dict(COMMUNITY_LIMITS), reason, str(path) if path else None, **claims
    )


def trusted_issuers(
    tree: RuntimeTree | None = None, extra: Iterable[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Issuer key files: the tree's ``license-issuers/*.pub``, ``$RUNYARD_LICENSE_ISSUERS/*.pub``
    and ``extra`` (files or directories), in that order."""
    found: list[Path] = []
    dirs: list[Path] = []
    if tree is not None:
        dirs.append(issuer_dir(tree))
    env = os.environ.get(ISSUERS_ENV)
    if env:
        dirs.append(Path(env))
    for item in extra:
        p = Path(item)
        if p.is_dir():
            dirs.append(p)
        else:
            found.append(p)
    keys = [k for d in dirs if d.is_dir() for k in sorted(d.glob("*.pub")) if k.is_file()]
    return keys + found


def _date(value: Any, name: str) -> datetime.date:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an RFC 3339 date (YYYY-MM-DD), got {value!r}")
    try:
        if len(value) != 10:
            raise ValueError
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be an RFC 3339 date (YYYY-MM-DD), got {value!r}") from None


def _shape(doc: Any) -> tuple[dict[str, Any], bytes, datetime.date]:
    """(claims, signature bytes, expiry date); ValueError naming the first problem."""
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if doc["tier"] not in TIERS:
        raise ValueError(f"tier {doc['tier']!r} is not one of {', '.join(TIERS)}")
    if not isinstance(doc["licensee"], str) or not doc["licensee"].strip():
        raise ValueError("licensee must be a non-empty string")
    issued = _date(doc["issued"], "issued")
    expires = _date(doc["expires"], "expires")
    if expires < issued:
        raise ValueError(f"expires {expires} is before issued {issued}")
    limits = doc["limits"]
    if not isinstance(limits, dict):
        raise ValueError("limits must be an object")
    ms = limits.get("max_services")
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 1:
        raise ValueError(f"limits.max_services must be an integer >= 1, got {ms!r}")
    sig = doc["signature"]
    try:
        raw = base64.b64decode(sig, validate=True) if isinstance(sig, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise ValueError("signature must be the base64 of a 64-byte Ed25519 signature")
    claims = {k: v for k, v in doc.items() if k != "signature"}
    return claims, raw, expires


def _claims(doc: Any) -> dict[str, Any]:
    """What a (possibly bad) license says, for display; never raises."""
    if not isinstance(doc, dict):
        return {}
    limits = doc.get("limits")
    return {
        "claimed_tier": doc.get("tier") if isinstance(doc.get("tier"), str) else None,
        "licensee": doc.get("licensee") if isinstance(doc.get("licensee"), str) else None,
        "issued": doc.get("issued") if isinstance(doc.get("issued"), str) else None,
        "expires": doc.get("expires") if isinstance(doc.get("expires"), str) else None,
        "claimed_limits": dict(limits) if isinstance(limits, dict) else {},
    }


def _verifier(issuers: list[Path], data: bytes, signature: bytes) -> tuple[str | None, list[str]]:
    """(the issuer file whose key verifies, problems reading the others)."""
    from runyard.runtime.signing.ed25519 import (
        verifies,  # cryptography: only with a license to check
    )
    from runyard.runtime.signing.keys import KeyFileError, load_public_key

    problems: list[str] = []
    for path in issuers:
        try:
            key = load_public_key(path)
        except KeyFileError as exc:
            problems.append(str(exc))
            continue
        if verifies(key, signature, data):
            return str(path), problems
    return None, problems


def check_license(
    path: str | os.PathLike[str],
    issuers: Iterable[str | os.PathLike[str]],
    *,
    today: datetime.date | None = None,
) -> LicenseStatus:
    """The status of the license at ``path`` against the issuer key files ``issuers``."""
    p = Path(path)
    try:
        doc = _read_doc(p)
        claims = _claims(doc)
        body, signed, signature, expires = _signed_body(p, doc, claims)
        issuer = _trusted_issuer(p, list(issuers), signed, signature, claims)
    except LicenseNotHonoured as exc:
        return exc.status
    day = today or datetime.datetime.now(datetime.UTC).date()
    if day > expires:
        return _community(
            "expired",
            f"{p}: expired on {expires.isoformat()} ({body['tier']} for {body['licensee']})",
            p,
            issuer=issuer,
            **claims,
        )
    return LicenseStatus(
        "valid",
        body["tier"],
        dict(body["limits"]),
        "",
        str(p),
        issuer=issuer,
        **claims,
    )


def _not_honoured(
    status: str, reason: str = "", path: Path | None = None, **claims: Any
) -> LicenseNotHonoured:
    """The refusal of one step of ``check_license``: the tree runs at the community tier."""
    return LicenseNotHonoured(reason, _community(status, reason, path, **claims))


def _read_doc(p: Path) -> Any:
    """The license file's JSON value, read under its cap and nested no deeper than MAX_DEPTH."""
    try:
        data = read_capped(p, SMALL_FILE)
    except FileNotFoundError:
        raise _not_honoured("missing", path=None) from None
    except FileRefused as exc:
        raise _not_honoured("malformed", str(exc), p) from None
    except OSError as exc:
        raise _not_honoured("malformed", f"{p}: cannot read: {exc.strerror or exc}", p) from None
    try:
        doc = json.loads(data)
    except RecursionError:
        raise _not_honoured("malformed", f"{p}: malformed: JSON nested too deeply", p) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _not_honoured("malformed", f"{p}: malformed: not JSON: {exc}", p) from None
    if _depth_over(doc, MAX_DEPTH):
        raise _not_honoured(
            "malformed", f"{p}: malformed: JSON nested deeper than {MAX_DEPTH} levels", p
        )
    return doc


def _signed_body(
    p: Path, doc: Any, claims: dict[str, Any]
) -> tuple[dict[str, Any], bytes, bytes, datetime.date]:
    """(the license without its signature, the bytes signed, the signature, the expiry day)."""
    from runyard.runtime.core.canonical import (
        canonical_bytes,  # rfc8785: only with a license to check
    )

    try:
        body, signature, expires = _shape(doc)
        signed = canonical_bytes(body)
    except (ValueError, TypeError) as exc:
        raise _not_honoured("malformed", f"{p}: malformed: {exc}", p, **claims) from None
    return body, signed, signature, expires


def _trusted_issuer(
    p: Path,
    keys: list[str | os.PathLike[str]],
    signed: bytes,
    signature: bytes,
    claims: dict[str, Any],
) -> str:
    """The issuer key file that verifies the signature; unverified without any key, forged
    when none verifies."""
    if not keys:
        raise _not_honoured(
            "unverified",
            f"{p}: unverified: no trusted issuer key to check it against "
            "(config/runyard/license-issuers/*.pub)",
            p,
            **claims,
        )
    issuer, problems = _verifier([Path(k) for k in keys], signed, signature)
    if issuer is None:
        extra = f" ({'; '.join(problems)})" if problems else ""
        raise _not_honoured(
            "forged",
            f"{p}: forged: the signature does not verify with any of {len(keys)} trusted "
            f"issuer key(s){extra}",
            p,
            **claims,
        )
    return issuer


def tree_license(
    tree: RuntimeTree, path: str | os.PathLike[str] | None = None, extra_issuers: Iterable[str] = ()
) -> LicenseStatus:
    """The license of ``tree`` (or the file ``path``), checked against the tree's issuers."""
    p = Path(path) if path is not None else license_path(tree)
    if not p.exists():
        if path is None:
            return _community("missing")
        return _community("malformed", f"{p}: no such license file", p)
    return check_license(p, trusted_issuers(tree, extra_issuers))


def sign_license(doc: Mapping[str, Any], key_path: str | os.PathLike[str]) -> dict[str, Any]:
    """``doc`` with ``signature`` set (replaced) by the Ed25519 private key at ``key_path``."""
    from runyard.runtime.core.canonical import canonical_bytes
    from runyard.runtime.signing.ed25519 import sign_base64
    from runyard.runtime.signing.keys import load_signing_key

    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        data = canonical_bytes(body)
    except RecursionError:
        raise LicenseError("the license is nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise LicenseError(f"the license is not canonical JSON: {exc}") from None
    key = load_signing_key(key_path)
    return {**body, "signature": sign_base64(key, data)}
