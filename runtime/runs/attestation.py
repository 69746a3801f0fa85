"""RUN_ATTESTATION.intoto.jsonl: a sealed run described for supply-chain tools (in-toto, SLSA).

The file is one DSSE envelope (``runtime.signing.dsse``, payloadType
``application/vnd.in-toto+json``) whose payload is an in-toto Statement v1, in RFC 8785 bytes:

    _type          https://in-toto.io/Statement/v1
    subject        every file of the run directory with its sha256, sorted by path (UTF-8),
                   except SHA256SUMS.txt.sig (a signature, not content) and the attestation
                   itself; SHA256SUMS.txt and ARTIFACT_INDEX.json are subjects
    predicateType  https://slsa.dev/provenance/v1
    predicate      buildDefinition: buildType RUN_BUILD_TYPE; externalParameters = the engine
                   (name, code, version), project_id and inputs_hash; resolvedDependencies =
                   the engine binary (its sha256, the one the manifest recorded at install,
                   re-hashed before the run), the engine archive, and each upstream artifact
                   consumed (its sha256, run id, engine code, and the sha256 of that upstream
                   run's SHA256SUMS.txt when the upstream run is in the tree)
                   runDetails: builder {id, version: runyard, python, runtime manifest format},
                   metadata {invocationId = run id, startedOn, finishedOn}, byproducts = the
                   outputs_hash of RUN_OUTPUT.json (annotated, see docs/PROVENANCE.md)

It is written last, after SHA256SUMS.txt (and its .sig), because it names them: SHA256SUMS.txt
cannot list a file that lists SHA256SUMS.txt, so it does not list the attestation (the .sig,
a signature and not content, is in neither). Signed with the run's key when the run is signed.

``check_attestation`` is what ``verify_run`` asks: the file is one envelope holding a
Statement v1 whose subjects are exactly the files present with their actual sha256, whose
predicate agrees with the sealed RUN_* files, and whose DSSE signature verifies with the run's
key whenever the run is signed (or a key is given). A run sealed before attestations existed
has none: the check is skipped with a note (whatever the run's signature: SHA256SUMS.txt and
its .sig still cover every file, so removing the attestation hides no change).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.errors import AttestationError
from runyard.runtime.core.tree import RuntimeTree
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

from .jsonio import JSONInputError, canonical, strict_loads
from .layout import RUN_CONDITIONS, RUN_ID_RE, RUN_INPUT, RUN_META, RUN_OUTPUT, SUMS_FILE

__all__ = [
    "ATTESTATION_FILE",
    "RUN_BUILD_TYPE",
    "attest_run",
    "check_attestation",
    "run_predicate",
]

ATTESTATION_FILE = "RUN_ATTESTATION.intoto.jsonl"
#: Names, not links: they say which schema externalParameters and builder follow.
RUN_BUILD_TYPE = "https://runyard.dev/provenance/sealed-run/v1"
BUILDER_ID = "https://runyard.dev/builder/operator-box/v1"


def _doc(run_dir: Path, name: str) -> dict[str, Any]:
    try:
        value = strict_loads((run_dir / name).read_bytes())
    except (OSError, JSONInputError):
        return {}
    return value if isinstance(value, dict) else {}


def _obj(docs: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = docs.get(name)
    return value if isinstance(value, dict) else {}


def _upstream(index: Any, tree: RuntimeTree | None) -> list[dict[str, Any]]:
    """One resolved dependency per upstream artifact consumed (``input_artifact_index``)."""
    found: list[dict[str, Any]] = []
    for e in index if isinstance(index, list) else []:
        if not isinstance(e, dict):
            continue
        run_id, path = str(e.get("run_id", "")), str(e.get("path", ""))
        notes: dict[str, Any] = {"engine_code": e.get("engine_code"), "run_id": run_id}
        sums = _upstream_sums(tree, run_id)
        if sums:
            notes["run_sha256sums_sha256"] = sums
        found.append(
            {
                "annotations": notes,
                "digest": {"sha256": e.get("sha256")},
                "name": path,
                "uri": f"runyard:run/{run_id}/{path}",
            }
        )
    return found


def _upstream_sums(tree: RuntimeTree | None, run_id: str) -> str | None:
    """sha256 of the upstream run's SHA256SUMS.txt (which covers all its files), if found."""
    if tree is None or not RUN_ID_RE.match(run_id):
        return None
    for sums in sorted(tree.data_dir.glob(f"*/runs/{run_id}/{SUMS_FILE}")):
        try:
            return hashlib.sha256(sums.read_bytes()).hexdigest()
        except OSError:
            return None
    return None


def run_predicate(docs: Mapping[str, Any], upstream: list[dict[str, Any]]) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of a sealed run, from nothing but its sealed RUN_*
    documents (``docs``: file name -> parsed object) and the upstream dependencies, so a
    verifier recomputes it exactly."""
    inp, out = _obj(docs, RUN_INPUT), _obj(docs, RUN_OUTPUT)
    meta, cond = _obj(docs, RUN_META), _obj(docs, RUN_CONDITIONS)
    python = cond.get("python") if isinstance(cond.get("python"), dict) else {}
    engine = f"{meta.get('engine')}/{inp.get('engine_version')}"
    return {
        "buildDefinition": {
            "buildType": RUN_BUILD_TYPE,
            "externalParameters": {
                "engine": {
                    "engine_code": inp.get("engine_code"),
                    "engine_version": inp.get("engine_version"),
                    "name": meta.get("engine"),
                },
                "inputs_hash": out.get("inputs_hash"),
                "project_id": inp.get("project_id"),
            },
            "internalParameters": {},
            "resolvedDependencies": [
                {
                    "digest": {"sha256": cond.get("engine_binary_sha256")},
                    "name": "engine binary",
                    "uri": f"runyard:engine/{engine}/{_argv0(cond)}",
                },
                {
                    "digest": {"sha256": cond.get("engine_archive_sha256")},
                    "name": "engine archive",
                    "uri": f"runyard:engine/{engine}",
                },
                *upstream,
            ],
        },
        "runDetails": {
            "builder": {
                "id": BUILDER_ID,
                "version": {
                    "python": python.get("version"),
                    "runtime_manifest": "1",
                    "runyard": meta.get("runyard_version"),
                },
            },
            "byproducts": [
                {
                    "annotations": {"of": RUN_OUTPUT, "outputs_hash": out.get("outputs_hash")},
                    "name": "outputs_hash",
                }
            ],
            "metadata": {
                "finishedOn": meta.get("finished_at"),
                "invocationId": meta.get("run_id"),
                "startedOn": meta.get("started_at"),
            },
        },
    }


def _argv0(cond: dict[str, Any]) -> str:
    argv = cond.get("engine_argv")
    return str(argv[0]) if isinstance(argv, list) and argv else ""


def attest_run(
    run_dir: Path,
    sums: bytes,
    signer: Ed25519PrivateKey | None,
    tree: RuntimeTree | None,
    write: Callable[[Path, bytes], None],
) -> bytes:
    """Write the attestation of a run just sealed (``sums``: its SHA256SUMS.txt bytes) with
    ``write(path, data)``; returns the bytes written."""
    from .sealing import parse_sums

    subjects, _problems = parse_sums(sums)
    subjects[SUMS_FILE] = hashlib.sha256(sums).hexdigest()
    docs = {name: _doc(run_dir, name) for name in (RUN_INPUT, RUN_OUTPUT, RUN_META, RUN_CONDITIONS)}
    upstream = _upstream(docs[RUN_INPUT].get("input_artifact_index"), tree)
    data = attestation_bytes(statement(subjects, run_predicate(docs, upstream)), signer)
    write(run_dir / ATTESTATION_FILE, data)
    fsync_dir(run_dir)
    return data


# --- checking -----------------------------------------------------------------------------------


def check_attestation(
    data: bytes | None,
    docs: Mapping[str, Any],
    actual: Mapping[str, str],
    given: Ed25519PublicKey | None,
    tree: RuntimeTree | None = None,
) -> list[Finding]:
    """The findings on a run's attestation (``data``, None when the run has none).

    ``docs`` holds the parsed RUN_* files; ``actual`` is {path: sha256} of every file present
    but the .sig and the attestation. The envelope must be signed by ``given`` (--pubkey) or,
    without one, by the key RUN_META names; it may be unsigned only when neither exists.
    """
    try:
        key, why_key = _run_key(given, _obj(docs, RUN_META))
    except ValueError:
        return [
            ("attestation-signature", False, f"{RUN_META}: signing_public_key is no key", False)
        ]
    if data is None:
        # Runs sealed before attestations existed have none, signed or not; SHA256SUMS.txt and
        # its .sig still cover every file, so dropping the attestation hides nothing.
        return [("attestation", True, f"no {ATTESTATION_FILE} (sealed before attestations)", True)]
    try:
        env, doc = read_statement(data, ATTESTATION_FILE)
    except AttestationError as exc:
        return [("attestation", False, str(exc), False)]
    problems = subject_problems(doc, actual, "the run directory")
    problems += _predicate_problems(doc, docs, tree)
    found: list[Finding] = [("attestation", False, p, False) for p in problems]
    if not found:
        n = len(doc["subject"])
        found.append(
            ("attestation", True, f"{n} subjects match the files; predicate agrees", False)
        )
    found.append(signature_finding(env, key, why_key))
    return found


def _run_key(
    given: Ed25519PublicKey | None, meta: dict[str, Any]
) -> tuple[Ed25519PublicKey | None, str]:
    """(the key the envelope must be signed by, where it came from); ValueError for a bad
    key in RUN_META."""
    if given is not None:
        return given, "with the given public key"
    raw = meta.get("signing_public_key")
    if raw is None:
        return None, ""
    if not isinstance(raw, str):
        raise ValueError(raw)
    return public_key_from_hex(raw), f"with the key {RUN_META} names"


def _predicate_problems(
    doc: dict[str, Any], docs: Mapping[str, Any], tree: RuntimeTree | None
) -> list[str]:
    """The attested predicate must be the one the sealed RUN_* files give (an upstream run's
    SHA256SUMS digest is compared only when that run is in ``tree``)."""
    upstream = _upstream(_obj(docs, RUN_INPUT).get("input_artifact_index"), tree)
    want = run_predicate(docs, upstream)
    got = doc.get("predicate")
    if isinstance(got, dict):
        got = strict_loads(canonical(got))  # a copy we may trim
        known = {d["uri"] for d in upstream if "run_sha256sums_sha256" in d["annotations"]}
        for dep in got.get("buildDefinition", {}).get("resolvedDependencies", []):
            if isinstance(dep, dict) and dep.get("uri") not in known:
                notes = dep.get("annotations")
                if isinstance(notes, dict):
                    notes.pop("run_sha256sums_sha256", None)
    if got == want:
        return []
    where = ", ".join(predicate_diff(got, want))
    return [f"predicate differs from the sealed RUN_* files at {where}"]
