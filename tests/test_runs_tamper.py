"""The tamper suite: every way of changing a sealed run fails ``verify_run`` with the
right check named.

One signed, chained sealed run (heatstats fed by heat1d: it holds every role, inputs/ included)
is sealed per module; each test tampers with its own copy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_runs_kit import (
    REQUIRED,
    SAMPLE,
    SAMPLE_PROFILE,
    build_catalogs,
    copy_run_dir,
    install,
    reseal,
)

from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs import execute_and_seal, replay_run, verify_run
from runyard.runtime.signing.keys import SigningKeyFiles, generate_signing_key, load_signing_key

PROFILE_SHA = hashlib.sha256(SAMPLE_PROFILE).hexdigest()
OPTIONAL = ["artifacts/summary.csv", "logs/engine.stderr", f"inputs/{PROFILE_SHA}"]
SIG = "SHA256SUMS.txt.sig"
ALL_FILES = [*REQUIRED, *OPTIONAL, SIG]


@dataclass
class Sealed:
    tree: RuntimeTree
    run_dir: Path
    keys: SigningKeyFiles
    key: Ed25519PrivateKey


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sealed]:
    with pytest.MonkeyPatch.context() as mp:
        base = tmp_path_factory.mktemp("tamper")
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg"))
        tree = RuntimeTree(base / "runtime")
        init_tree(tree)
        install(tree, build_catalogs(tmp_path_factory), "heat1d", "heatstats")
        keys = generate_signing_key(base / "keys" / "signer")
        up = execute_and_seal(
            tree,
            "heat1d",
            SAMPLE["inputs"],
            parameters=SAMPLE["parameters"],
            sign_key=keys.private,
        )
        down = execute_and_seal(
            tree,
            "heatstats",
            {"column": "final_exact"},
            from_runs=[up.run_id],
            sign_key=keys.private,
        )
        yield Sealed(tree, Path(down.run_dir), keys, load_signing_key(keys.private))


@pytest.fixture
def copy(sealed: Sealed, tmp_path: Path) -> Path:
    return copy_run_dir(sealed.run_dir, tmp_path / "run")


def failed(sealed: Sealed, run_dir: Path, pubkey: object = "given") -> set[str]:
    key = sealed.keys.public if pubkey == "given" else pubkey
    return verify_run(run_dir, key, tree=sealed.tree).failed_names()


def rewrite_json(path: Path, change) -> None:
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_bytes(canonical_bytes(doc))


def test_the_pristine_run_and_its_copy_verify(sealed: Sealed, copy: Path) -> None:
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == sorted(
        [*ALL_FILES, "RUN_ATTESTATION.intoto.jsonl"]  # tests/test_attestation.py tampers with it
    )
    for run_dir in (sealed.run_dir, copy):
        report = verify_run(run_dir, sealed.keys.public, tree=sealed.tree)
        assert report.ok, report.failed
        assert not any(c.skipped for c in report.checks)
    # Without the tree the schema comparison is skipped with a note, everything else passes.
    report = verify_run(copy)
    assert report.ok
    assert [c.name for c in report.checks if c.skipped] == ["schemas-current"]


@pytest.mark.parametrize("name", ALL_FILES)
def test_changing_one_byte_of_any_file_fails(sealed: Sealed, copy: Path, name: str) -> None:
    path = copy / name
    data = bytearray(path.read_bytes())
    if data:
        data[len(data) // 2] ^= 0x01
    else:
        data += b"x"
    path.write_bytes(bytes(data))
    names = failed(sealed, copy)
    if name == SIG:
        assert names == {"signature"}
    elif name == "SHA256SUMS.txt":
        assert "signature" in names
        assert names & {"hashes", "sums-format", "sums-coverage"}
    else:
        assert "hashes" in names
        report = verify_run(copy, sealed.keys.public, tree=sealed.tree)
        details = " ".join(c.detail for c in report.checks if c.name == "hashes" and not c.ok)
        assert name in details and "expected" in details and "got" in details
    # Unsigned verification (no --pubkey) catches it too.
    assert failed(sealed, copy, None)


@pytest.mark.parametrize("name", ALL_FILES)
def test_deleting_any_file_fails(sealed: Sealed, copy: Path, name: str) -> None:
    (copy / name).unlink()
    names = failed(sealed, copy)
    if name in REQUIRED:
        assert "required-files" in names
        detail = next(c.detail for c in verify_run(copy).checks if c.name == "required-files")
        assert name in detail
    elif name == SIG:
        assert names == {"signature"}
        assert failed(sealed, copy, None) == {"signature"}  # RUN_META names the signing key
    else:
        assert "sums-coverage" in names
    if name.startswith("inputs/"):
        assert "input-artifacts" in names


@pytest.mark.parametrize(
    "extra", ["EXTRA.txt", "artifacts/extra.csv", "logs/more.log", "inputs/" + "0" * 64, "x/y/z"]
)
def test_adding_a_file_fails(sealed: Sealed, copy: Path, extra: str) -> None:
    path = copy / extra
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not sealed\n")
    names = failed(sealed, copy)
    assert "sums-coverage" in names
    detail = next(c.detail for c in verify_run(copy).checks if c.name == "sums-coverage")
    assert extra in detail


def test_adding_a_symlink_fails(sealed: Sealed, copy: Path) -> None:
    (copy / "artifacts" / "link").symlink_to("/etc/hostname")
    assert "sums-coverage" in failed(sealed, copy)


def test_swapping_the_schemas_fails(sealed: Sealed, copy: Path) -> None:
    a, b = copy / "INPUT_SCHEMA.json", copy / "OUTPUT_SCHEMA.json"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    assert "hashes" in failed(sealed, copy)
    # A forger who also rewrites the index and the sums, and re-signs with the key:
    reseal(copy, sealed.key)
    names = failed(sealed, copy)
    assert "hashes" not in names and "signature" not in names
    assert {"schemas-current", "input-schema", "output-schema"} <= names


def test_schemas_that_are_not_the_engines_current_ones_fail(sealed: Sealed, copy: Path) -> None:
    def loosen(doc: dict) -> None:
        doc["$defs"]["config"]["additionalProperties"] = True

    rewrite_json(copy / "INPUT_SCHEMA.json", loosen)
    reseal(copy, sealed.key)
    assert failed(sealed, copy) == {"schemas-current"}
    detail = next(
        c.detail for c in verify_run(copy, tree=sealed.tree).checks if c.name == "schemas-current"
    )
    assert "INPUT_SCHEMA.json" in detail and "config/heatstats" in detail


def test_forged_outputs_hash_fails(sealed: Sealed, copy: Path) -> None:
    rewrite_json(copy / "RUN_OUTPUT.json", lambda d: d.update(outputs_hash="0" * 64))
    reseal(copy, sealed.key)
    assert failed(sealed, copy) == {"outputs-hash"}


def test_forged_outputs_under_the_old_hash_fail(sealed: Sealed, copy: Path) -> None:
    rewrite_json(copy / "RUN_OUTPUT.json", lambda d: d["outputs"]["combined"].update(sum="13"))
    reseal(copy, sealed.key)
    assert failed(sealed, copy) == {"outputs-hash"}
    detail = next(c.detail for c in verify_run(copy).checks if c.name == "outputs-hash")
    assert "recomputed" in detail


def test_a_complete_forgery_is_caught_by_the_signature_and_by_replay(
    sealed: Sealed, copy: Path, tmp_path: Path
) -> None:
    """A forger who changes a value, recomputes every hash and signs with their own key gets a
    self-consistent sealed run: only the expected public key or a replay exposes it."""

    def forge(doc: dict) -> None:
        doc["outputs"]["combined"]["sum"] = "13"
        rest = {k: v for k, v in doc.items() if k != "outputs_hash"}
        doc["outputs_hash"] = hashlib.sha256(canonical_bytes(rest)).hexdigest()

    rewrite_json(copy / "RUN_OUTPUT.json", forge)
    forger = generate_signing_key(tmp_path / "forger")
    forger_key = load_signing_key(forger.private)
    raw = forger_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    rewrite_json(
        copy / "RUN_META.json",
        lambda d: d.update(
            signing_key_fingerprint=forger.fingerprint, signing_public_key=raw.hex()
        ),
    )
    reseal(copy, forger_key)
    assert failed(sealed, copy) == {"signature"}
    assert failed(sealed, copy, None) == set()  # self-consistent: authenticity needs --pubkey
    report = replay_run(sealed.tree, copy)
    assert report.verify.ok and not report.replayable
    assert "$.outputs.combined.sum" in report.differences
    report = replay_run(sealed.tree, copy, pubkey=sealed.keys.public)
    assert not report.replayable and report.record is None
    assert "signature" in report.reason


def test_forged_inputs_fail(sealed: Sealed, copy: Path) -> None:
    rewrite_json(copy / "RUN_INPUT.json", lambda d: d["parameters"].update(decimals=2))
    reseal(copy, sealed.key)
    assert failed(sealed, copy) == {"inputs-hash"}


def test_non_canonical_json_fails(sealed: Sealed, copy: Path) -> None:
    meta = json.loads((copy / "RUN_META.json").read_bytes())
    (copy / "RUN_META.json").write_text(json.dumps(meta, indent=2))
    reseal(copy, sealed.key)
    names = failed(sealed, copy)
    assert names == {"canonical-json"}
    detail = next(c.detail for c in verify_run(copy).checks if c.name == "canonical-json")
    assert "RUN_META.json" in detail


def test_mismatched_identity_fails(sealed: Sealed, copy: Path) -> None:
    rewrite_json(
        copy / "RUN_META.json", lambda d: d.update(run_id="20990101T000000.000000Z-00000000")
    )
    reseal(copy, sealed.key)
    assert failed(sealed, copy) == {"identity"}


def test_unsorted_or_malformed_sums_fail(sealed: Sealed, copy: Path) -> None:
    sums = copy / "SHA256SUMS.txt"
    lines = sums.read_bytes().splitlines(keepends=True)
    sums.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    (copy / SIG).write_bytes(sealed.key.sign(sums.read_bytes()))
    # The attestation names SHA256SUMS.txt with its sha256 as a subject: it sees the change too.
    assert failed(sealed, copy) == {"sums-format", "attestation"}
    sums.write_bytes(b"".join(lines).replace(b"  ", b" *", 1))
    (copy / SIG).write_bytes(sealed.key.sign(sums.read_bytes()))
    assert "sums-format" in failed(sealed, copy)


@pytest.mark.parametrize("how", ["flip", "truncate", "other-key", "other-key-no-pubkey", "empty"])
def test_corrupt_signature_fails(sealed: Sealed, copy: Path, tmp_path: Path, how: str) -> None:
    sig = copy / SIG
    sums = (copy / "SHA256SUMS.txt").read_bytes()
    pubkey: object = "given"
    if how == "flip":
        data = bytearray(sig.read_bytes())
        data[0] ^= 0x80
        sig.write_bytes(bytes(data))
    elif how == "truncate":
        sig.write_bytes(sig.read_bytes()[:63])
    elif how == "empty":
        sig.write_bytes(b"")
    else:
        other = generate_signing_key(tmp_path / "other")
        sig.write_bytes(load_signing_key(other.private).sign(sums))
        if how == "other-key-no-pubkey":
            pubkey = None
    assert failed(sealed, copy, pubkey) == {"signature"}


def test_verification_never_writes(sealed: Sealed) -> None:
    before = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sealed.run_dir.rglob("*") if p.is_file()
    }
    verify_run(sealed.run_dir, sealed.keys.public, tree=sealed.tree)
    after = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sealed.run_dir.rglob("*") if p.is_file()
    }
    assert before == after
