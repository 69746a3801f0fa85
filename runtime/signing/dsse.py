"""DSSE envelopes (Dead Simple Signing Envelope, v1.0) signed with Runyard's Ed25519 keys.

DSSE is what in-toto, Sigstore and SLSA tooling read, so it is the form of every attestation
Runyard writes; Runyard's own hashes stay RFC 8785 (canonical JSON). What is signed is the
pre-authentication encoding (PAE) of the payload, never the JSON around it:

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the length in bytes as ASCII decimal, no leading zeros. An envelope is one JSON object,
``{"payload": base64(body), "payloadType": type, "signatures": [{"keyid", "sig"}]}``, with
standard base64 (padded), and ``keyid`` the key's fingerprint (sha256 of the 32 raw public key
bytes, hex, as ``runyard keys gen`` prints it). An unsigned envelope has ``"signatures": []``.
Envelope files are JSON Lines (``.intoto.jsonl``): one envelope per line, a newline after it.

``openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in PAE_FILE -sigfile SIG`` checks the
same signature from the raw PAE bytes (``pae``) and the decoded ``sig``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runyard.runtime.core.errors import AttestationError

from .ed25519 import fingerprint, sign, verifies

__all__ = [
    "INTOTO_PAYLOAD_TYPE",
    "Envelope",
    "encode_envelope",
    "pae",
    "parse_envelope",
    "seal_envelope",
]

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding: the exact bytes a signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    #: (keyid, raw signature bytes), in the file's order.
    signatures: tuple[tuple[str, bytes], ...]

    def signed_by(self, public: Ed25519PublicKey) -> bool:
        """True when a signature with this key's fingerprint as keyid verifies over the PAE."""
        keyid = fingerprint(public)
        message = pae(self.payload_type, self.payload)
        return any(k == keyid and verifies(public, sig, message) for k, sig in self.signatures)


def seal_envelope(
    payload: bytes, payload_type: str, key: Ed25519PrivateKey | None = None
) -> Envelope:
    """An envelope of ``payload``, signed by ``key`` when one is given (else unsigned)."""
    sigs: tuple[tuple[str, bytes], ...] = ()
    if key is not None:
        sigs = ((fingerprint(key.public_key()), sign(key, pae(payload_type, payload))),)
    return Envelope(payload, payload_type, sigs)


def encode_envelope(env: Envelope) -> bytes:
    """One JSON Lines line (sorted keys, no spaces, a final newline)."""
    doc = {
        "payload": base64.b64encode(env.payload).decode("ascii"),
        "payloadType": env.payload_type,
        "signatures": [
            {"keyid": k, "sig": base64.b64encode(s).decode("ascii")} for k, s in env.signatures
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise AttestationError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AttestationError(f"{what} is not valid base64") from None


def parse_envelope(data: bytes, source: str = "envelope") -> Envelope:
    """The one envelope a ``.intoto.jsonl`` file holds; AttestationError naming what is wrong."""
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    if len(lines) != 1:
        raise AttestationError(f"{source}: {len(lines)} JSON lines, expected one DSSE envelope")
    try:
        doc = json.loads(lines[0])
    except (ValueError, UnicodeDecodeError) as exc:
        raise AttestationError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AttestationError(f"{source}: not a JSON object")
    payload_type = doc.get("payloadType")
    if not isinstance(payload_type, str):
        raise AttestationError(f"{source}: payloadType is missing")
    payload = _b64(doc.get("payload"), f"{source}: payload")
    raw_sigs = doc.get("signatures")
    if not isinstance(raw_sigs, list):
        raise AttestationError(f"{source}: signatures is not an array")
    sigs: list[tuple[str, bytes]] = []
    for i, item in enumerate(raw_sigs):
        if not isinstance(item, dict):
            raise AttestationError(f"{source}: signatures[{i}] is not an object")
        keyid = item.get("keyid", "")
        sigs.append((keyid if isinstance(keyid, str) else "", _b64(item.get("sig"), f"sig {i}")))
    return Envelope(payload, payload_type, tuple(sigs))
