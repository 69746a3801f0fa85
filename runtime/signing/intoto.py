"""in-toto Statement v1 in a DSSE envelope: building one, reading one back, and the checks every
attestation of Runyard shares (subjects against files, the DSSE signature against a key).

What a statement says (its predicate) belongs to what it attests: ``runtime.runs.attestation``
for sealed runs, ``runtime.bundle.attestation`` for runtime bundles. Both use SLSA provenance v1
as the predicate type; docs/PROVENANCE.md says what fills it and how others check it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.core.errors import AttestationError

from .dsse import INTOTO_PAYLOAD_TYPE, Envelope, encode_envelope, parse_envelope, seal_envelope

__all__ = [
    "SLSA_PROVENANCE",
    "STATEMENT_TYPE",
    "Finding",
    "attestation_bytes",
    "predicate_diff",
    "read_statement",
    "signature_finding",
    "statement",
    "subject_problems",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"

#: (check name, ok, detail, skipped), as the verifiers record them.
Finding = tuple[str, bool, str, bool]


def statement(subjects: Mapping[str, str], predicate: dict[str, Any]) -> dict[str, Any]:
    """The Statement v1 for {name: sha256} (sorted by the name's UTF-8 bytes) and a predicate."""
    ordered = sorted(subjects, key=lambda p: p.encode("utf-8"))
    return {
        "_type": STATEMENT_TYPE,
        "predicate": predicate,
        "predicateType": SLSA_PROVENANCE,
        "subject": [{"digest": {"sha256": subjects[p]}, "name": p} for p in ordered],
    }


def attestation_bytes(doc: dict[str, Any], key: Ed25519PrivateKey | None) -> bytes:
    """The ``.intoto.jsonl`` line: the statement's RFC 8785 bytes in a DSSE envelope."""
    return encode_envelope(seal_envelope(canonical_bytes(doc), INTOTO_PAYLOAD_TYPE, key))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise AttestationError("the statement repeats a member name")
    return doc


def read_statement(data: bytes, source: str) -> tuple[Envelope, dict[str, Any]]:
    """(envelope, statement) of an attestation file; AttestationError naming what is wrong."""
    env = parse_envelope(data, source)
    if env.payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(
            f"{source}: payloadType {env.payload_type!r}, expected {INTOTO_PAYLOAD_TYPE}"
        )
    try:
        doc = json.loads(env.payload, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AttestationError(f"{source}: payload is not one JSON document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        raise AttestationError(f"{source}: payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if doc.get("predicateType") != SLSA_PROVENANCE:
        raise AttestationError(
            f"{source}: predicateType {doc.get('predicateType')!r}, expected {SLSA_PROVENANCE}"
        )
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict)
        for s in subjects
    ):
        raise AttestationError(f"{source}: subject is not a list of {{name, digest}}")
    return env, doc


def subject_problems(doc: dict[str, Any], actual: Mapping[str, str], where: str) -> list[str]:
    """Every way the subjects differ from ``actual`` ({name: sha256}); ``where`` names the
    place the files are (for messages)."""
    attested: dict[str, Any] = {}
    problems: list[str] = []
    for s in doc["subject"]:
        if s["name"] in attested:
            problems.append(f"subject {s['name']} is listed twice")
        attested[s["name"]] = s["digest"].get("sha256")
    for name in sorted(set(attested) | set(actual)):
        if name not in actual:
            problems.append(f"subject {name}: not in {where}")
        elif name not in attested:
            problems.append(f"{name}: not a subject of the attestation")
        elif attested[name] != actual[name]:
            problems.append(
                f"subject {name}: attested sha256 {attested[name]}, file has {actual[name]}"
            )
    return problems


def signature_finding(env: Envelope, key: Ed25519PublicKey | None, why_key: str) -> Finding:
    """The ``attestation-signature`` finding: signed by ``key`` (``why_key`` says where that
    key came from), or unsigned when there is no key to demand."""
    name = "attestation-signature"
    if key is None:
        if env.signatures:
            return (name, False, "signed, but no key is named to check it with", False)
        return (name, True, "unsigned envelope (nothing is signed)", True)
    if env.signed_by(key):
        return (name, True, f"DSSE signature valid {why_key}", False)
    return (name, False, f"no DSSE signature verifies {why_key}", False)


def predicate_diff(got: Any, want: Any, path: str = "predicate") -> list[str]:
    """The JSON paths where two predicates differ."""
    if isinstance(got, dict) and isinstance(want, dict):
        out: list[str] = []
        for k in sorted(set(got) | set(want)):
            out += predicate_diff(got.get(k), want.get(k), f"{path}.{k}")
        return out
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        return [
            d
            for i, (a, b) in enumerate(zip(got, want, strict=True))
            for d in predicate_diff(a, b, f"{path}[{i}]")
        ]
    return [] if got == want else [path]
