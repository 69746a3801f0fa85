"""Ed25519: the one place Runyard signs, verifies and names a key.

Licenses, runtime bundles and sealed runs all sign with Ed25519; what differs between them is
what gets signed and how the signature is stored (base64 in a JSON member for licenses and
bundle manifests, raw bytes in ``SHA256SUMS.txt.sig`` for runs), and that stays with each of
them, as do their error messages, which name what was being verified. Key *files* (PEM,
``PREFIX.key`` / ``PREFIX.pub``) are read and written by ``runtime.keys``.

    fingerprint    sha256 of the 32 raw public key bytes, lower-case hex
    key identity   (fingerprint, raw public key as hex): what a signed document records
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "fingerprint",
    "key_identity",
    "public_key_from_hex",
    "sign",
    "sign_base64",
    "verifies",
]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    """sha256 (hex) of the raw 32 public key bytes."""
    return hashlib.sha256(_raw(public)).hexdigest()


def key_identity(key: Ed25519PrivateKey) -> tuple[str, str]:
    """(fingerprint, raw public key hex) of a signing key."""
    public = key.public_key()
    return fingerprint(public), _raw(public).hex()


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    """The public key whose raw bytes ``text`` spells in hex; ValueError when it is not one."""
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The raw 64-byte signature of ``data``."""
    return key.sign(data)


def sign_base64(key: Ed25519PrivateKey, data: bytes) -> str:
    """The signature of ``data`` as base64 text (for a JSON member)."""
    return base64.b64encode(key.sign(data)).decode("ascii")


def verifies(public: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``public``'s signature of ``data``; never raises for a bad
    signature (any length), so a caller says what failed in its own words."""
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True
