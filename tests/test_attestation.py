"""Issue 14, attestations: every sealed run carries RUN_ATTESTATION.intoto.jsonl, a DSSE
envelope of an in-toto Statement v1 (SLSA provenance v1), and tools that are not Runyard check
it: securesystemslib (DSSE + Ed25519), in-toto-attestation (the Statement v1 rules), and
``openssl pkeyutl -verify -rawin`` over the DSSE pre-authentication encoding, built here from
the DSSE spec, not with Runyard's code. A tampered subject and a bad signature are each caught
by them and by ``runyard verify``.

One signed chain (heat1d -> heatstats) and one unsigned run are sealed per module; each test
tampers with its own copy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_tool
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey
from test_bundle_kit import make_tree
from test_runs_kit import REPO, SAMPLE, build_catalogs, cli, copy_run_dir, install

from runyard.runtime.bundle import pack_bundle, verify_bundle_file
from runyard.runtime.core.manifest import init_tree, load_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs import execute_and_seal, verify_run
from runyard.runtime.signing.keys import SigningKeyFiles, generate_signing_key

ATTESTATION = "RUN_ATTESTATION.intoto.jsonl"
OUTER = ("SHA256SUMS.txt.sig", ATTESTATION)


@dataclass
class Runs:
    tree: RuntimeTree
    up: Path
    down: Path
    unsigned: Path
    keys: SigningKeyFiles
    other: SigningKeyFiles


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    with pytest.MonkeyPatch.context() as mp:
        base = tmp_path_factory.mktemp("attest")
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg"))
        tree = RuntimeTree(base / "runtime")
        init_tree(tree)
        install(tree, build_catalogs(tmp_path_factory), "heat1d", "heatstats")
        keys = generate_signing_key(base / "keys" / "signer")
        other = generate_signing_key(base / "keys" / "other")
        params = SAMPLE["parameters"]
        up = execute_and_seal(
            tree, "heat1d", SAMPLE["inputs"], parameters=params, sign_key=keys.private
        )
        down = execute_and_seal(
            tree,
            "heatstats",
            {"column": "final_exact"},
            from_runs=[up.run_id],
            sign_key=keys.private,
        )
        unsigned = execute_and_seal(tree, "heat1d", SAMPLE["inputs"], parameters=params)
        yield Runs(tree, Path(up.run_dir), Path(down.run_dir), Path(unsigned.run_dir), keys, other)


def envelope_doc(where: Path) -> dict:
    """The envelope of a run directory's attestation, or of an .intoto.jsonl file."""
    path = where / ATTESTATION if where.is_dir() else where
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def statement_of(env: dict) -> dict:
    return json.loads(base64.b64decode(env["payload"]))


def spec_pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 PAE, written from the spec (not runtime/signing/dsse.py)."""
    t = payload_type.encode()
    return (
        b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode() + b" " + body
    )


def sslib_key(keys: SigningKeyFiles) -> SSlibKey:
    """The public key as an auditor loads it: from the PEM file, keyid = its fingerprint."""
    public = load_pem_public_key(keys.public.read_bytes())
    return SSlibKey.from_crypto(public, keyid=keys.fingerprint, scheme="ed25519")


def sslib_verify(where: Path, keys: SigningKeyFiles) -> None:
    Envelope.from_dict(envelope_doc(where)).verify([sslib_key(keys)], 1)


def subject_mismatches(run_dir: Path) -> list[str]:
    """What `sha256sum -c` over the subjects would report (hashlib, not Runyard)."""
    bad = []
    for s in statement_of(envelope_doc(run_dir))["subject"]:
        path = run_dir / s["name"]
        if (
            not path.is_file()
            or hashlib.sha256(path.read_bytes()).hexdigest() != s["digest"]["sha256"]
        ):
            bad.append(s["name"])
    return bad


def openssl_verify(
    where: Path, keys: SigningKeyFiles, scratch: Path
) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    env = envelope_doc(where)
    scratch.mkdir(exist_ok=True)
    (scratch / "pae.bin").write_bytes(
        spec_pae(env["payloadType"], base64.b64decode(env["payload"]))
    )
    (scratch / "sig.bin").write_bytes(base64.b64decode(env["signatures"][0]["sig"]))
    cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(keys.public), "-rawin",
           "-in", str(scratch / "pae.bin"), "-sigfile", str(scratch / "sig.bin")]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def rewrite_envelope(where: Path, env: dict) -> None:
    path = where / ATTESTATION if where.is_dir() else where
    path.write_bytes(json.dumps(env).encode() + b"\n")


# --- what is written --------------------------------------------------------------------------


def test_every_sealed_run_has_an_in_toto_statement_of_all_its_files(runs: Runs) -> None:
    for run_dir in (runs.up, runs.down, runs.unsigned):
        env = envelope_doc(run_dir)
        assert env["payloadType"] == "application/vnd.in-toto+json"
        doc = statement_of(env)
        # in-toto's own Statement v1 rules (type, subjects with digests, predicate).
        Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement())).validate()
        assert doc["_type"] == "https://in-toto.io/Statement/v1"
        assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
        files = sorted(
            p.relative_to(run_dir).as_posix()
            for p in run_dir.rglob("*")
            if p.is_file() and p.name not in OUTER
        )
        assert sorted(s["name"] for s in doc["subject"]) == files
        assert "SHA256SUMS.txt" in files and "ARTIFACT_INDEX.json" in files
        assert subject_mismatches(run_dir) == []
        # SHA256SUMS.txt cannot list the attestation: the attestation lists SHA256SUMS.txt.
        assert ATTESTATION not in (run_dir / "SHA256SUMS.txt").read_text()
    assert envelope_doc(runs.unsigned)["signatures"] == []
    assert [s["keyid"] for s in envelope_doc(runs.down)["signatures"]] == [runs.keys.fingerprint]


def test_the_predicate_names_engine_binary_hashes_upstream_and_versions(runs: Runs) -> None:
    pred = statement_of(envelope_doc(runs.down))["predicate"]
    out = json.loads((runs.down / "RUN_OUTPUT.json").read_bytes())
    meta = json.loads((runs.down / "RUN_META.json").read_bytes())
    inp = json.loads((runs.down / "RUN_INPUT.json").read_bytes())
    params = pred["buildDefinition"]["externalParameters"]
    assert params["engine"] == {
        "engine_code": "HEATSTATS",
        "engine_version": "1.0.0",
        "name": "heatstats",
    }
    assert params["inputs_hash"] == out["inputs_hash"]
    assert pred["runDetails"]["byproducts"][0]["annotations"]["outputs_hash"] == out["outputs_hash"]
    assert pred["runDetails"]["builder"]["version"]["runyard"] == meta["runyard_version"]
    assert pred["runDetails"]["metadata"]["invocationId"] == meta["run_id"]
    deps = {d["name"]: d for d in pred["buildDefinition"]["resolvedDependencies"]}
    # The engine binary's digest is the one the manifest recorded when it was installed.
    entry = next(e for e in load_manifest(runs.tree).services if e.name == "heatstats")
    rel = Path(entry.bin_path).relative_to(entry.install_rel).as_posix()
    assert deps["engine binary"]["digest"]["sha256"] == entry.files[rel]
    assert deps["engine archive"]["digest"]["sha256"] == entry.checksum
    (artifact,) = inp["input_artifact_index"]
    upstream = deps[artifact["path"]]
    assert upstream["digest"]["sha256"] == artifact["sha256"]
    assert upstream["annotations"]["run_id"] == runs.up.name
    up_sums = hashlib.sha256((runs.up / "SHA256SUMS.txt").read_bytes()).hexdigest()
    assert upstream["annotations"]["run_sha256sums_sha256"] == up_sums


# --- checked by others' tools -----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_securesystemslib_and_openssl_verify_the_dsse_signature(runs: Runs, tmp_path: Path) -> None:
    for run_dir in (runs.up, runs.down):
        sslib_verify(run_dir, runs.keys)
        proc = openssl_verify(run_dir, runs.keys, tmp_path / run_dir.name)
        assert proc.returncode == 0 and "Signature Verified Successfully" in proc.stdout, (
            proc.stderr
        )
        report = verify_run(run_dir, runs.keys.public, tree=runs.tree)
        assert report.ok, report.failed
        checks = {c.name: c for c in report.checks}
        assert not checks["attestation"].skipped and not checks["attestation-signature"].skipped
    with pytest.raises(VerificationError):
        sslib_verify(runs.down, runs.other)


@pytest.mark.timeout(60)
def test_a_tampered_subject_is_caught_by_sha256_and_by_runyard_verify(
    runs: Runs, tmp_path: Path
) -> None:
    copy = copy_run_dir(runs.down, tmp_path / "run")
    profile = next(p for p in (copy / "artifacts").iterdir())
    profile.write_bytes(profile.read_bytes() + b"1,2\n")
    rel = profile.relative_to(copy).as_posix()
    assert subject_mismatches(copy) == [rel]
    sslib_verify(copy, runs.keys)  # the envelope itself is intact: only the subject check sees it
    report = verify_run(copy, runs.keys.public, tree=runs.tree)
    details = [c.detail for c in report.checks if c.name == "attestation" and not c.ok]
    assert any(rel in d and "attested sha256" in d for d in details), details


@pytest.mark.timeout(60)
def test_a_rewritten_subject_breaks_the_signature_for_every_tool(
    runs: Runs, tmp_path: Path
) -> None:
    """A forger who edits the statement to match a changed file cannot re-sign it."""
    copy = copy_run_dir(runs.down, tmp_path / "run")
    env = envelope_doc(copy)
    doc = statement_of(env)
    doc["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(doc).encode()).decode()
    rewrite_envelope(copy, env)
    with pytest.raises(VerificationError):
        sslib_verify(copy, runs.keys)
    assert openssl_verify(copy, runs.keys, tmp_path / "ossl").returncode != 0
    assert subject_mismatches(copy) == [doc["subject"][0]["name"]]
    failed = verify_run(copy, runs.keys.public, tree=runs.tree).failed_names()
    assert failed == {"attestation", "attestation-signature"}
    # Without --pubkey, the key RUN_META names is required all the same.
    assert verify_run(copy, tree=runs.tree).failed_names() == {
        "attestation",
        "attestation-signature",
    }


@pytest.mark.timeout(60)
def test_a_bad_signature_is_caught_by_every_tool(runs: Runs, tmp_path: Path) -> None:
    copy = copy_run_dir(runs.down, tmp_path / "run")
    env = envelope_doc(copy)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    rewrite_envelope(copy, env)
    with pytest.raises(VerificationError):
        sslib_verify(copy, runs.keys)
    proc = openssl_verify(copy, runs.keys, tmp_path / "ossl")
    assert proc.returncode != 0 and "Signature Verified Successfully" not in proc.stdout
    assert subject_mismatches(copy) == []
    assert verify_run(copy, runs.keys.public, tree=runs.tree).failed_names() == {
        "attestation-signature"
    }
    # Stripping the signature from a signed run is no way out either.
    env["signatures"] = []
    rewrite_envelope(copy, env)
    assert verify_run(copy, tree=runs.tree).failed_names() == {"attestation-signature"}


@pytest.mark.timeout(120)
def test_runyard_verify_cli_names_the_attestation_failures(runs: Runs, tmp_path: Path) -> None:
    copy = copy_run_dir(runs.down, tmp_path / "run")
    ok = cli("verify", str(copy), "--pubkey", str(runs.keys.public), "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    names = {c["name"] for c in json.loads(ok.stdout)["checks"]}
    assert {"attestation", "attestation-signature"} <= names
    env = envelope_doc(copy)
    env["signatures"][0]["sig"] = base64.b64encode(b"\0" * 64).decode()
    rewrite_envelope(copy, env)
    bad = cli("verify", str(copy), "--pubkey", str(runs.keys.public), cwd=tmp_path)
    assert bad.returncode != 0
    assert "attestation-signature" in bad.stdout + bad.stderr


def test_an_unsigned_run_has_an_unsigned_envelope_and_verifies(runs: Runs) -> None:
    report = verify_run(runs.unsigned, tree=runs.tree)
    assert report.ok, report.failed
    checks = {c.name: c for c in report.checks}
    assert checks["attestation"].ok and not checks["attestation"].skipped
    assert checks["attestation-signature"].skipped
    # A key demanded by --pubkey makes the unsigned envelope a failure.
    failed = verify_run(runs.unsigned, runs.keys.public, tree=runs.tree).failed_names()
    assert failed == {"signature", "attestation-signature"}


def auditor_recipe() -> str:
    """The first ```sh block of docs/PROVENANCE.md, as an auditor would paste it."""
    text = (REPO / "docs" / "PROVENANCE.md").read_text()
    return text.split("```sh\n", 1)[1].split("```", 1)[0]


def run_recipe(run_dir: Path, keys: SigningKeyFiles, tmp: Path) -> subprocess.CompletedProcess[str]:
    require_tool("jq")
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "KEY": str(keys.public), "TMPDIR": str(tmp)}
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", auditor_recipe()],
        cwd=run_dir, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_the_auditor_recipe_in_provenance_md_passes_and_catches_tampering(
    runs: Runs, tmp_path: Path
) -> None:
    good = run_recipe(runs.down, runs.keys, tmp_path / "t0")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Signature Verified Successfully" in good.stdout
    assert json.loads(good.stdout[good.stdout.index("{") :])["buildDefinition"]
    assert run_recipe(runs.down, runs.other, tmp_path / "t1").returncode != 0  # another key
    copy = copy_run_dir(runs.down, tmp_path / "run")
    (copy / "RUN_OUTPUT.json").write_bytes(b"{}")
    bad = run_recipe(copy, runs.keys, tmp_path / "t2")
    assert bad.returncode != 0 and "RUN_OUTPUT.json: FAILED" in bad.stdout + bad.stderr
    (copy / "RUN_OUTPUT.json").unlink()
    shutil.copy(runs.down / "RUN_OUTPUT.json", copy / "RUN_OUTPUT.json")
    (copy / "artifacts" / "extra.csv").write_bytes(b"not attested\n")
    assert run_recipe(copy, runs.keys, tmp_path / "t3").returncode != 0  # an extra file


# --- runtime bundles: the same, in a sidecar ------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    tree = make_tree(base / "src")
    one = pack_bundle(tree, base / "a" / "rt.tar.gz", version="1.0.0", sign_key=runs.keys.private)
    two = pack_bundle(tree, base / "b" / "rt.tar.gz", version="1.0.1", sign_key=runs.keys.private)
    assert one.attestation == str(base / "a" / "rt.tar.gz.intoto.jsonl")
    return {"one": Path(one.path), "two": Path(two.path)}


def sidecar(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".intoto.jsonl")


@pytest.mark.timeout(60)
def test_a_bundle_sidecar_names_the_archive_and_every_member(
    runs: Runs, bundles: dict[str, Path], tmp_path: Path
) -> None:
    bundle = bundles["one"]
    env = envelope_doc(sidecar(bundle))
    doc = statement_of(env)
    Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement())).validate()
    sslib_verify(sidecar(bundle), runs.keys)
    proc = openssl_verify(sidecar(bundle), runs.keys, tmp_path / "ossl")
    assert proc.returncode == 0 and "Signature Verified Successfully" in proc.stdout, proc.stderr
    digests = {s["name"]: s["digest"]["sha256"] for s in doc["subject"]}
    assert digests.pop(bundle.name) == hashlib.sha256(bundle.read_bytes()).hexdigest()
    with tarfile.open(bundle) as tar:  # the members, as an auditor extracts them
        tar.extractall(tmp_path / "x", filter="data")
        files = {m.name for m in tar.getmembers() if m.isfile()}
    assert set(digests) == files and "manifest.json" in files
    for name, sha in digests.items():
        assert hashlib.sha256((tmp_path / "x" / name).read_bytes()).hexdigest() == sha, name
    report = verify_bundle_file(bundle, runs.keys.public)
    assert report.ok, report.failed
    assert {
        c.name for c in report.checks if c.name.startswith("attestation") and not c.skipped
    } == {
        "attestation",
        "attestation-signature",
    }


@pytest.mark.timeout(60)
def test_a_bundle_with_a_tampered_subject_or_a_bad_signature_fails_everywhere(
    runs: Runs, bundles: dict[str, Path], tmp_path: Path
) -> None:
    # Another archive under the first one's attestation: its subject no longer matches.
    swapped = tmp_path / "rt.tar.gz"
    shutil.copy(bundles["two"], swapped)
    shutil.copy(sidecar(bundles["one"]), sidecar(swapped))
    attested = {
        s["name"]: s["digest"]["sha256"]
        for s in statement_of(envelope_doc(sidecar(swapped)))["subject"]
    }
    assert attested["rt.tar.gz"] != hashlib.sha256(swapped.read_bytes()).hexdigest()
    report = verify_bundle_file(swapped, runs.keys.public)
    assert "attestation" in {c.name for c in report.failed}
    assert any("rt.tar.gz" in c.detail for c in report.failed if c.name == "attestation")
    # A bad signature on the right archive.
    shutil.copy(bundles["one"], swapped)
    env = envelope_doc(sidecar(swapped))
    env["signatures"][0]["sig"] = base64.b64encode(b"\1" * 64).decode()
    rewrite_envelope(sidecar(swapped), env)
    with pytest.raises(VerificationError):
        sslib_verify(sidecar(swapped), runs.keys)
    assert openssl_verify(sidecar(swapped), runs.keys, tmp_path / "ossl").returncode != 0
    for pub in (runs.keys.public, None):
        report = verify_bundle_file(swapped, pub)
        assert [c.name for c in report.failed] == ["attestation-signature"]
    out = cli("bundle", "verify", str(swapped), cwd=tmp_path)
    assert out.returncode == 1 and "attestation-signature" in out.stdout
