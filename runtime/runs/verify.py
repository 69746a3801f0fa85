"""``verify_run``: every check a sealed run must pass, each reported on its own.

    required-files   the 13 required files exist as regular files
    sums-format      SHA256SUMS.txt is strictly `<64 hex>  <path>` lines, sorted, no repeats
    sums-coverage    it lists every file of the run directory (but itself and the .sig), and no other
    hashes           every listed file has the listed sha256 (one failure per file)
    artifact-index   ARTIFACT_INDEX.json lists the same files with their sha256, size and role
    canonical-json   RUN_*.json, ARTIFACT_INDEX.json and the definition JSON are RFC 8785 bytes
    definitions      the sealed definitions load (ENGINE_MANIFEST, schemas, coupling rules)
    identity         run id, engine code and version agree across RUN_* and ENGINE_MANIFEST
    schemas-current  the sealed INPUT/OUTPUT schemas are the engine's schemas in the tree
                     (config/{engine}/ for that engine_version, else what that installed
                     version ships); skipped with a note when no tree or version is known
    input-schema     RUN_INPUT.json validates against the sealed INPUT_SCHEMA.json
    output-schema    RUN_OUTPUT.json validates against the sealed OUTPUT_SCHEMA.json
    inputs-hash      RUN_OUTPUT.inputs_hash = sha256(RUN_INPUT.json)
    outputs-hash     RUN_OUTPUT.outputs_hash = sha256(canonical RUN_OUTPUT without outputs_hash)
    input-artifacts  input_artifact_index matches inputs/{sha256}; non-empty when the engine
                     requires input artifacts
    attestation      RUN_ATTESTATION.intoto.jsonl is one DSSE envelope of an in-toto Statement v1
                     whose subjects are the files present with their sha256 and whose SLSA
                     predicate is what the RUN_* files say (attestation.py); skipped when absent
    attestation-signature  its DSSE signature verifies with the run's key (as for signature)
    signature        SHA256SUMS.txt.sig verifies (with --pubkey: that key, whose fingerprint
                     must be RUN_META's; without: the public key RUN_META names). Required when
                     RUN_META names a signing key or a pubkey is given.

Verification only reads: it never writes to the run directory or the tree. Every file it parses (the
RUN_*, index and definition JSON, the sums and the signature) is read through
``runtime.core.capped`` with ``O_NOFOLLOW``: a symlink is never followed out of the run directory, and a
file over its cap (or not a regular file) is named under required-files and never read, nor
hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from runyard.runtime.core.capped import RUN_FILE, SMALL_FILE, check_capped, read_capped
from runyard.runtime.core.errors import FileRefused, RunyardError
from runyard.runtime.core.manifest import load_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.signing.ed25519 import fingerprint, public_key_from_hex, verifies
from runyard.runtime.signing.keys import load_public_key

from .artifact_index import ArtifactIndexError, index_entries
from .attestation import ATTESTATION_FILE, check_attestation
from .definitions import EngineDefinitions, definitions_for_version, load_definitions
from .jsonio import JSONInputError, canonical, strict_loads
from .layout import (
    DEFINITION_FILES,
    INDEX_FILE,
    INPUT_SCHEMA,
    OUTPUT_SCHEMA,
    REQUIRED_FILES,
    RUN_FILES,
    RUN_INPUT,
    RUN_META,
    RUN_OUTPUT,
    SIG_FILE,
    SUMS_FILE,
)
from .model import Check, VerifyReport
from .sealing import SealedFileError, digests, list_files, parse_sums, role_of

__all__ = ["guess_tree", "verify_run"]


def guess_tree(run_dir: Path) -> RuntimeTree | None:
    """The tree holding ``run_dir`` when it sits at {tree}/data/{engine}/runs/{run_id}."""
    p = run_dir.resolve()
    if len(p.parents) >= 4 and p.parent.name == "runs" and p.parents[2].name == "data":
        root = p.parents[3]
        if (root / "manifest.json").is_file():
            return RuntimeTree(root)
    return None


#: The files verify parses, and the most bytes each may hold.
_CAPS = {
    **dict.fromkeys((*RUN_FILES, INDEX_FILE, SUMS_FILE), RUN_FILE),
    **dict.fromkeys(DEFINITION_FILES, SMALL_FILE),
    SIG_FILE: SMALL_FILE,
    ATTESTATION_FILE: RUN_FILE,
}
#: Files outside SHA256SUMS.txt and ARTIFACT_INDEX.json (they sign or attest to those).
_OUTER = (SUMS_FILE, SIG_FILE, ATTESTATION_FILE)


class _Verifier:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.checks: list[Check] = []
        self.docs: dict[str, Any] = {}
        #: Files refused unread (over their cap, not regular, a symlink): name -> why.
        self.refused: dict[str, str] = {}

    def read(self, name: str) -> bytes:
        """A file verify parses, capped, never through a symlink (OSError / FileRefused)."""
        return read_capped(self.run_dir / name, _CAPS[name], follow_symlinks=False)

    def add(self, name: str, ok: bool, detail: str, skipped: bool = False) -> bool:
        self.checks.append(Check(name=name, ok=ok, detail=detail, skipped=skipped))
        return ok

    def doc(self, name: str) -> Any:
        """The parsed JSON file, or None (unreadable/invalid: reported by other checks)."""
        if name not in self.docs:
            try:
                self.docs[name] = strict_loads(self.read(name))
            except (OSError, FileRefused, JSONInputError):
                self.docs[name] = None
        return self.docs[name]

    def obj(self, name: str) -> dict[str, Any]:
        value = self.doc(name)
        return value if isinstance(value, dict) else {}


def verify_run(
    path: str | os.PathLike[str],
    pubkey: str | os.PathLike[str] | Ed25519PublicKey | None = None,
    *,
    tree: RuntimeTree | None = None,
) -> VerifyReport:
    """Run every check on the run directory ``path``; see the module doc. Never raises for a bad
    sealed run (only for a missing dir or an unreadable pubkey file)."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunyardError(f"{run_dir}: not a run directory")
    key = load_public_key(pubkey) if isinstance(pubkey, str | os.PathLike) else pubkey
    v = _Verifier(run_dir)
    missing = [
        n for n in REQUIRED_FILES if not (run_dir / n).is_file() or (run_dir / n).is_symlink()
    ]
    for name, cap in _CAPS.items():
        try:
            problem = check_capped(run_dir / name, cap, follow_symlinks=False)
        except OSError:
            continue  # absent: listed as missing when required
        if problem:
            v.refused[name] = problem
    problems = [f"missing: {', '.join(missing)}"] if missing else []
    problems += [f"{name}: {why}; refused unread" for name, why in v.refused.items()]
    v.add(
        "required-files",
        not problems,
        "; ".join(problems) or f"all {len(REQUIRED_FILES)} present",
    )
    try:
        v.docs["__present__"] = [p for p in list_files(run_dir) if p not in _OUTER]
    except SealedFileError as exc:
        v.docs["__present__"] = []
        v.docs["__bad_file__"] = str(exc)
    _check_sums(v)
    _check_hashes(v)
    _check_index(v)
    _check_canonical(v)
    defs = _check_definitions(v)
    _check_identity(v, defs)
    _check_schemas_current(v, defs, tree if tree is not None else guess_tree(run_dir))
    _check_schema_validity(v, defs)
    _check_input_artifacts(v, defs)
    _check_signature(v, key)
    _check_attestation(v, key, tree if tree is not None else guess_tree(run_dir))
    inp = v.obj(RUN_INPUT)
    return VerifyReport(
        run_dir=str(run_dir),
        checks=v.checks,
        run_id=str(inp.get("run_id", "")),
        engine=str(v.obj(RUN_META).get("engine", "")),
    )


def _check_sums(v: _Verifier) -> None:
    try:
        data = v.read(SUMS_FILE)
    except (OSError, FileRefused):
        v.add("sums-format", False, f"{SUMS_FILE}: cannot be read")
        v.add("sums-coverage", False, f"{SUMS_FILE}: cannot be read")
        return
    sums, problems = parse_sums(data)
    v.add(
        "sums-format",
        not problems,
        f"{SUMS_FILE}: {'; '.join(problems)}" if problems else f"{SUMS_FILE}: {len(sums)} lines",
    )
    present: list[str] = v.docs["__present__"]
    if "__bad_file__" in v.docs:
        v.add("sums-coverage", False, f"the run directory holds {v.docs['__bad_file__']}")
        v.docs["__sums__"] = sums
        return
    unlisted = sorted(set(present) - set(sums))
    gone = sorted(set(sums) - set(present))
    parts = []
    if unlisted:
        parts.append(f"files not in {SUMS_FILE}: {', '.join(unlisted)}")
    if gone:
        parts.append(f"listed in {SUMS_FILE} but missing: {', '.join(gone)}")
    v.add("sums-coverage", not parts, "; ".join(parts) or f"{len(present)} files, all listed")
    v.docs["__sums__"] = sums


def _check_hashes(v: _Verifier) -> None:
    sums: dict[str, str] = v.docs.get("__sums__") or {}
    present = set(v.docs.get("__present__") or [])
    listed = [p for p in sums if p in present and p not in v.refused]
    actual = digests(v.run_dir, listed, sync=False)
    bad = 0
    for rel in listed:
        if actual[rel][0] != sums[rel]:
            bad += 1
            v.add(
                "hashes", False, f"{rel}: expected {sums[rel]} ({SUMS_FILE}), got {actual[rel][0]}"
            )
    if not bad:
        v.add("hashes", bool(listed), f"{len(listed)} files match {SUMS_FILE}")
    v.docs["__digests__"] = actual


def _check_index(v: _Verifier) -> None:
    try:
        entries, pathless = index_entries(v.doc(INDEX_FILE))
    except ArtifactIndexError as exc:
        v.add("artifact-index", False, str(exc))
        return
    present = [p for p in v.docs.get("__present__") or [] if p != INDEX_FILE]
    listed: dict[str, dict[str, Any]] = {}
    problems: list[str] = ["an entry without a path"] * pathless
    for e in entries:
        listed[e["path"]] = e
        if e.get("role") != role_of(e["path"]):
            problems.append(f"{e['path']}: role {e.get('role')!r}, expected {role_of(e['path'])!r}")
    extra = sorted(set(present) - set(listed))
    gone = sorted(set(listed) - set(present))
    if extra:
        problems.append(f"files not in the index: {', '.join(extra)}")
    if gone:
        problems.append(f"indexed but missing: {', '.join(gone)}")
    actual = digests(v.run_dir, sorted(set(listed) & set(present) - set(v.refused)), sync=False)
    for rel, (sha, size) in actual.items():
        e = listed[rel]
        if e.get("sha256") != sha or e.get("size") != size:
            problems.append(
                f"{rel}: expected sha256 {e.get('sha256')} size {e.get('size')} "
                f"({INDEX_FILE}), got {sha} size {size}"
            )
    v.add("artifact-index", not problems, "; ".join(problems) or f"{len(listed)} files indexed")


def _check_canonical(v: _Verifier) -> None:
    names = [*RUN_FILES, INDEX_FILE, *(n for n in DEFINITION_FILES if n.endswith(".json"))]
    bad: list[str] = []
    for name in names:
        try:
            data = v.read(name)
        except (OSError, FileRefused):
            continue  # required-files reports it
        value = v.doc(name)
        try:
            ok = value is not None and canonical(value) == data
        except (ValueError, TypeError):
            ok = False
        if not ok:
            bad.append(name)
    detail = f"not RFC 8785 canonical bytes: {', '.join(bad)}" if bad else "all canonical"
    v.add("canonical-json", not bad, detail)


def _check_definitions(v: _Verifier) -> EngineDefinitions | None:
    try:
        defs = load_definitions(v.run_dir, follow_symlinks=False)
    except RunyardError as exc:
        v.add("definitions", False, str(exc))
        return None
    v.add("definitions", True, f"{defs.engine_code} {defs.engine_version}")
    return defs


def _check_identity(v: _Verifier, defs: EngineDefinitions | None) -> None:
    inp, out, meta = v.obj(RUN_INPUT), v.obj(RUN_OUTPUT), v.obj(RUN_META)
    problems = []
    run_id = inp.get("run_id")
    for name, doc in ((RUN_OUTPUT, out), (RUN_META, meta)):
        if doc.get("run_id") != run_id:
            problems.append(f"{name}: run_id {doc.get('run_id')!r}, expected {run_id!r}")
    engine = out.get("engine") if isinstance(out.get("engine"), dict) else {}
    for field in ("engine_code", "engine_version"):
        want = inp.get(field)
        if engine.get(field) != want:
            problems.append(
                f"{RUN_OUTPUT}: engine.{field} {engine.get(field)!r}, expected {want!r}"
            )
        if defs is not None and defs.manifest.get(field) != want:
            problems.append(
                f"ENGINE_MANIFEST.json: {field} {defs.manifest.get(field)!r}, expected {want!r}"
            )
    v.add("identity", not problems, "; ".join(problems) or f"run {run_id}")


def _check_schemas_current(
    v: _Verifier, defs: EngineDefinitions | None, tree: RuntimeTree | None
) -> None:
    engine = str(v.obj(RUN_META).get("engine", ""))
    version = str(v.obj(RUN_INPUT).get("engine_version", ""))
    if tree is None or not engine or not version:
        v.add("schemas-current", True, "skipped: the run directory is not in a known tree", True)
        return
    try:
        entries = load_manifest(tree).find(engine)
    except RunyardError:
        entries = []
    current, where = definitions_for_version(tree, engine, version, entries)
    if current is None:
        v.add("schemas-current", True, f"skipped: {where}", True)
        return
    problems = []
    for name in (INPUT_SCHEMA, OUTPUT_SCHEMA):
        try:
            sealed_bytes = v.read(name)
        except (OSError, FileRefused):
            problems.append(f"{name}: missing")
            continue
        if sealed_bytes != current.files[name]:
            got = hashlib.sha256(sealed_bytes).hexdigest()
            want = hashlib.sha256(current.files[name]).hexdigest()
            problems.append(f"{name}: sha256 {got} differs from {where}/{name} ({want})")
    v.add("schemas-current", not problems, "; ".join(problems) or f"same as {where}")


def _check_schema_validity(v: _Verifier, defs: EngineDefinitions | None) -> None:
    for check, name, validate in (
        ("input-schema", RUN_INPUT, defs.input_problem if defs else None),
        ("output-schema", RUN_OUTPUT, defs.output_problem if defs else None),
    ):
        doc = v.doc(name)
        if validate is None:
            v.add(check, False, f"{name}: no valid sealed schema to validate against")
        elif doc is None:
            v.add(check, False, f"{name}: not readable as strict JSON")
        else:
            problem = validate(doc)
            v.add(check, problem is None, f"{name}: {problem}" if problem else f"{name} valid")
    out = v.obj(RUN_OUTPUT)
    try:
        got = hashlib.sha256(v.read(RUN_INPUT)).hexdigest()
    except (OSError, FileRefused):
        got = "(no RUN_INPUT.json)"
    want = out.get("inputs_hash")
    v.add("inputs-hash", want == got, f"{RUN_OUTPUT}: inputs_hash {want}, recomputed {got}")
    want = out.get("outputs_hash")
    rest = {k: val for k, val in out.items() if k != "outputs_hash"}
    try:
        got = hashlib.sha256(canonical(rest)).hexdigest() if out else "(no RUN_OUTPUT.json)"
    except (ValueError, TypeError) as exc:
        got = f"(not canonicalizable: {exc})"
    v.add("outputs-hash", want == got, f"{RUN_OUTPUT}: outputs_hash {want}, recomputed {got}")


def _check_input_artifacts(v: _Verifier, defs: EngineDefinitions | None) -> None:
    inp = v.obj(RUN_INPUT)
    index = inp.get("input_artifact_index")
    present = {p for p in v.docs.get("__present__") or [] if p.startswith("inputs/")}
    problems: list[str] = []
    wanted: set[str] = set()
    if index is not None and not isinstance(index, list):
        problems.append(f"{RUN_INPUT}: input_artifact_index is not an array")
        index = []
    actual: dict[str, tuple[str, int]] = v.docs.get("__digests__") or {}
    for e in index or []:
        sha = e.get("sha256") if isinstance(e, dict) else None
        rel = f"inputs/{sha}"
        wanted.add(rel)
        if rel not in present:
            problems.append(f"{rel}: missing ({e.get('run_id')}:{e.get('path')})")
        elif rel in actual and actual[rel][0] != sha:
            problems.append(f"{rel}: expected sha256 {sha}, got {actual[rel][0]}")
    stray = sorted(present - wanted)
    if stray:
        problems.append(f"not in input_artifact_index: {', '.join(stray)}")
    if defs is not None and defs.requires_input_artifacts and not index:
        problems.append(
            f"{defs.engine_code} requires input artifacts but input_artifact_index is empty"
        )
    n = len(index or [])
    v.add("input-artifacts", not problems, "; ".join(problems) or f"{n} input artifact(s)")


def _check_signature(v: _Verifier, key: Ed25519PublicKey | None) -> None:
    meta = v.obj(RUN_META)
    named = meta.get("signing_key_fingerprint")
    sig_path = v.run_dir / SIG_FILE
    if not sig_path.exists():
        if key is not None or named:
            why = "a --pubkey was given" if key is not None else f"{RUN_META} names key {named}"
            v.add("signature", False, f"{SIG_FILE}: missing, but {why}")
        else:
            v.add("signature", True, "unsigned run", True)
        return
    if key is None:
        try:
            key = public_key_from_hex(meta["signing_public_key"])
        except (KeyError, ValueError, TypeError):
            v.add("signature", False, f"{SIG_FILE}: present, but no public key to check it")
            return
        how = f"with the key {RUN_META} names (pass --pubkey to check who signed)"
    else:
        how = "with the given public key"
    fp = fingerprint(key)
    if named is not None and named != fp:
        v.add("signature", False, f"{RUN_META}: signing_key_fingerprint {named}, key is {fp}")
        return
    try:
        valid = verifies(key, v.read(SIG_FILE), v.read(SUMS_FILE))
    except (OSError, FileRefused):
        valid = False
    if not valid:
        v.add("signature", False, f"{SIG_FILE}: does not verify over {SUMS_FILE} {how}")
        return
    v.add("signature", True, f"{SIG_FILE}: valid Ed25519 signature by {fp} {how}")


def _check_attestation(
    v: _Verifier, key: Ed25519PublicKey | None, tree: RuntimeTree | None
) -> None:
    try:
        data: bytes | None = v.read(ATTESTATION_FILE)
    except FileNotFoundError:
        data = None
    except (OSError, FileRefused) as exc:
        v.add("attestation", False, f"{ATTESTATION_FILE}: cannot be read: {exc}")
        return
    actual = {rel: sha for rel, (sha, _size) in (v.docs.get("__digests__") or {}).items()}
    present = [p for p in v.docs.get("__present__") or [] if p not in v.refused]
    rest = digests(v.run_dir, [p for p in present if p not in actual], sync=False)
    actual.update({rel: sha for rel, (sha, _size) in rest.items()})
    if SUMS_FILE not in v.refused:
        with contextlib.suppress(OSError, FileRefused):
            actual[SUMS_FILE] = hashlib.sha256(v.read(SUMS_FILE)).hexdigest()
    docs = {name: v.obj(name) for name in RUN_FILES}
    for name, ok, detail, skipped in check_attestation(data, docs, actual, key, tree):
        v.add(name, ok, detail, skipped)
