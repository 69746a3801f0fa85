"""runtime.ed25519: the one sign / verify / key-naming helper of licenses, bundles and runs."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runyard.runtime.signing.ed25519 import (
    fingerprint,
    key_identity,
    public_key_from_hex,
    sign,
    sign_base64,
    verifies,
)


def test_a_signature_verifies_only_for_its_key_and_its_bytes() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sig = sign(key, b"payload")
    assert len(sig) == 64
    assert verifies(key.public_key(), sig, b"payload")
    assert not verifies(key.public_key(), sig, b"payload!")
    assert not verifies(other.public_key(), sig, b"payload")
    assert not verifies(key.public_key(), sig[:10], b"payload")  # any length: False, no raise
    assert not verifies(key.public_key(), b"", b"payload")


def test_base64_signature_is_the_raw_one_encoded() -> None:
    import base64

    key = Ed25519PrivateKey.generate()
    text = sign_base64(key, b"doc")
    assert verifies(key.public_key(), base64.b64decode(text, validate=True), b"doc")


def test_key_identity_names_the_key_a_verifier_can_rebuild() -> None:
    key = Ed25519PrivateKey.generate()
    fp, raw = key_identity(key)
    assert fp == hashlib.sha256(bytes.fromhex(raw)).hexdigest() == fingerprint(key.public_key())
    rebuilt = public_key_from_hex(raw)
    assert verifies(rebuilt, sign(key, b"x"), b"x")


@pytest.mark.parametrize("text", ["", "zz", "00" * 31, "00" * 33])
def test_public_key_from_bad_hex_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        public_key_from_hex(text)
