"""Signing a bundle's manifest, and checking that signature.

The signed bytes are the RFC 8785 canonical JSON of manifest.json as it is in the bundle, with
``bundle.signature`` removed (``runtime.canonical``). The manifest lists every other member
with its sha256 (``bundle.files``), its mode (``bundle.executables``) and every symlink
(``bundle.links``), so the signature covers every byte that gets installed. The signature is
Ed25519, base64; ``bundle.keyFingerprint`` (sha256 of the raw public key, hex, as ``runyard
keys gen`` prints it) and ``bundle.publicKey`` (the raw key, hex) name the key, as a sealed
run's RUN_META does.

Checking (`check_signature`) never raises on a hostile manifest: one that has no RFC 8785
form (an integer beyond 2**53, which validation refuses first anyway) is an invalid signature.


    --pubkey K given       the bundle must be signed, by K (fingerprint) and validly
    no --pubkey, signed    the signature must verify with the key the manifest names; that
                           proves the manifest was not changed after signing, not who signed
                           it: reported as "not checked against a trusted key"
    no --pubkey, unsigned  reported as unsigned (not a failure)
"""

from __future__ import annotations

import base64
import binascii
import copy
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.signing.ed25519 import fingerprint, public_key_from_hex, verifies

__all__ = ["SignatureCheck", "check_signature", "signing_payload"]


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on a bundle's signature. ``state`` is one of: ``valid`` (by --pubkey),
    ``self-consistent`` (valid for the key it names; no --pubkey), ``unsigned``, ``invalid``,
    ``wrong-key``, ``missing`` (unsigned but --pubkey demands one)."""

    ok: bool
    state: str
    detail: str
    fingerprint: str = ""


def signing_payload(doc: dict[str, Any]) -> bytes:
    """RFC 8785 bytes of a manifest document without ``bundle.signature``."""
    stripped = copy.deepcopy(doc)
    bundle = stripped.get("bundle")
    if isinstance(bundle, dict):
        bundle.pop("signature", None)
    return canonical_bytes(stripped)


def check_signature(doc: dict[str, Any], pubkey: Ed25519PublicKey | None) -> SignatureCheck:
    """Check the signature of a parsed (and validated) manifest document."""
    bundle = doc.get("bundle") or {}
    text = bundle.get("signature") or ""
    named = bundle.get("keyFingerprint") or ""
    wanted = fingerprint(pubkey) if pubkey is not None else ""
    if not text:
        if pubkey is not None:
            return SignatureCheck(
                False,
                "missing",
                f"the bundle is unsigned; --pubkey requires a signature by {wanted}",
            )
        return SignatureCheck(True, "unsigned", "the bundle is unsigned (nothing to check)")
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return SignatureCheck(False, "invalid", "bundle.signature is not base64", named)
    try:
        payload = signing_payload(doc)
    except (ValueError, TypeError) as exc:  # e.g. an integer beyond 2**53: not RFC 8785
        return SignatureCheck(
            False, "invalid", f"manifest.json has no canonical form to check: {exc}", named
        )
    if pubkey is not None:
        if named and named != wanted:
            return SignatureCheck(
                False,
                "wrong-key",
                f"signed by key {named}, not by the --pubkey key {wanted}",
                named,
            )
        if not verifies(pubkey, signature, payload):
            return SignatureCheck(
                False,
                "invalid",
                f"the signature does not verify with the --pubkey key {wanted} "
                "(the manifest was changed after signing, or another key signed it)",
                named,
            )
        return SignatureCheck(True, "valid", f"signed by the --pubkey key {wanted}", wanted)
    raw = bundle.get("publicKey") or ""
    try:
        public = public_key_from_hex(raw)
    except ValueError:
        return SignatureCheck(
            False, "invalid", "signed, but bundle.publicKey is not an Ed25519 key", named
        )
    if fingerprint(public) != named:
        return SignatureCheck(
            False,
            "invalid",
            "bundle.keyFingerprint is not the fingerprint of bundle.publicKey",
            named,
        )
    if not verifies(public, signature, payload):
        return SignatureCheck(
            False,
            "invalid",
            f"the signature does not verify with the key the manifest names ({named}): "
            "the manifest was changed after signing",
            named,
        )
    return SignatureCheck(
        True,
        "self-consistent",
        f"signed by key {named}; not checked against a trusted key (give --pubkey to check)",
        named,
    )
