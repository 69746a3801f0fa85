"""runtime.bundle.verify_bundle_file: a good bundle passes; every way of breaking one is named,
one line per failure, and install refuses the same bundles (nothing of them reaches the prefix)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from test_bundle_kit import edit_manifest, make_tree, rewrite

from archives import Raw, make_raw_archive
from runyard.runtime.bundle import BundleError, install_bundle, pack_bundle, verify_bundle_file
from runyard.runtime.core.errors import UnsafeArchiveError
from runyard.runtime.signing.keys import generate_signing_key

FORMATS = ["tar.gz", "zip"]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed bundles of one tree in both formats, the key pair, and another key pair."""
    base = tmp_path_factory.mktemp("signed")
    tree = make_tree(base / "src")
    keys = generate_signing_key(base / "release")
    other = generate_signing_key(base / "other")
    out = {"key": keys.private, "pub": keys.public, "other_pub": other.public}
    out["other_key"] = other.private
    for fmt in FORMATS:
        result = pack_bundle(tree, base / f"rt.{fmt}", version="1.0.0", sign_key=keys.private)
        out[fmt] = Path(result.path)
    return out


def failures(report) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in report.failed]


def assert_install_refused(bundle: Path, tmp_path: Path, match: str, pubkey=None) -> None:
    prefix = tmp_path / "prefix"
    with pytest.raises((BundleError, UnsafeArchiveError), match=match):
        install_bundle(bundle, prefix, pubkey=pubkey)
    assert not (prefix / "current").exists()
    assert not (prefix / "versions").exists() or list((prefix / "versions").iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_signed_bundle_verifies_with_its_key(signed, fmt: str) -> None:
    report = verify_bundle_file(signed[fmt], signed["pub"])
    assert report.ok, failures(report)
    assert report.signature == "valid"
    assert report.version == "1.0.0" and report.services == ["web", "worker"]
    without = verify_bundle_file(signed[fmt])
    assert without.ok and without.signature == "self-consistent"
    signature = next(c for c in without.checks if c.name == "signature")
    assert "not checked against a trusted key" in signature.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_key_is_refused(signed, tmp_path: Path, fmt: str) -> None:
    report = verify_bundle_file(signed[fmt], signed["other_pub"])
    assert failures(report) == [
        f"signature: signed by key {report.signed_by}, not by the --pubkey key "
        f"{_fingerprint(signed['other_pub'])}",
        # The in-toto sidecar is signed by the same key (tests/test_attestation.py).
        "attestation-signature: no DSSE signature verifies with the given public key",
    ]
    assert_install_refused(signed[fmt], tmp_path, "signature: signed by key", signed["other_pub"])


def _fingerprint(pub: Path) -> str:
    from runyard.runtime.signing.ed25519 import fingerprint
    from runyard.runtime.signing.keys import load_public_key

    return fingerprint(load_public_key(pub))


@pytest.mark.parametrize("fmt", FORMATS)
def test_stripped_signature_is_refused_with_pubkey(signed, tmp_path: Path, fmt: str) -> None:
    def strip(doc: dict) -> None:
        for name in ("signature", "keyFingerprint", "publicKey"):
            doc["bundle"].pop(name, None)

    bundle = rewrite(signed[fmt], tmp_path / f"s.{fmt}", lambda m: edit_manifest(m, strip))
    report = verify_bundle_file(bundle, signed["pub"])
    assert [c.name for c in report.failed] == ["signature"]
    assert report.signature == "missing"
    assert "the bundle is unsigned; --pubkey requires a signature" in report.failed[0].detail
    assert verify_bundle_file(bundle).signature == "unsigned"
    assert_install_refused(bundle, tmp_path, "unsigned; --pubkey requires", signed["pub"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_member_is_named(signed, tmp_path: Path, fmt: str) -> None:
    def tamper(members: list[Raw]) -> list[Raw]:
        for m in members:
            if m.name.endswith("/bin/web"):  # same size: only the sha256 can tell
                m.data = m.data[:-11] + b"echo owned\n"
        return members

    bundle = rewrite(signed[fmt], tmp_path / f"t.{fmt}", tamper)
    report = verify_bundle_file(bundle, signed["pub"])
    lines = failures(report)
    assert len(lines) == 1 and lines[0].startswith("sha256: bin/web/1.0.0/")
    assert "/bin/web: sha256 " in lines[0] and "differs from manifest.json" in lines[0]
    assert_install_refused(bundle, tmp_path, r"/bin/web: sha256 .* differs", signed["pub"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_manifest_breaks_the_signature(signed, tmp_path: Path, fmt: str) -> None:
    def edit(doc: dict) -> None:
        doc["services"][0]["env"] = {"LD_PRELOAD": "/tmp/evil.so"}

    bundle = rewrite(signed[fmt], tmp_path / f"m.{fmt}", lambda m: edit_manifest(m, edit))
    for pub in (signed["pub"], None):
        report = verify_bundle_file(bundle, pub)
        assert [c.name for c in report.failed] == ["signature"]
        assert "does not verify" in report.failed[0].detail
    assert_install_refused(bundle, tmp_path, "signature: the signature does not verify")


@pytest.mark.parametrize("fmt", FORMATS)
def test_resigned_by_another_key_is_refused_with_pubkey(signed, tmp_path: Path, fmt: str) -> None:
    """An attacker who re-signs a tampered manifest with their own key passes only without
    --pubkey, and then only as "not checked against a trusted key"."""
    from runyard.runtime.bundle.signing import signing_payload
    from runyard.runtime.signing.ed25519 import key_identity, sign_base64
    from runyard.runtime.signing.keys import load_signing_key

    theirs = load_signing_key(signed["other_key"])

    def resign(doc: dict) -> None:
        doc["services"][0]["env"] = {"EVIL": "1"}
        doc["bundle"]["keyFingerprint"], doc["bundle"]["publicKey"] = key_identity(theirs)
        doc["bundle"]["signature"] = sign_base64(theirs, signing_payload(doc))

    bundle = rewrite(signed[fmt], tmp_path / f"r.{fmt}", lambda m: edit_manifest(m, resign))
    assert verify_bundle_file(bundle).signature == "self-consistent"
    report = verify_bundle_file(bundle, signed["pub"])
    assert report.signature == "wrong-key" and not report.ok


@pytest.mark.parametrize("fmt", FORMATS)
def test_unlisted_missing_and_mode_changed_members(signed, tmp_path: Path, fmt: str) -> None:
    def change(members: list[Raw]) -> list[Raw]:
        members.append(Raw("config/web/extra.toml", b"x = 1\n"))
        members = [m for m in members if m.name != "config/worker/env.toml"]
        for m in members:
            if m.name == "config/web/env.toml":
                m.mode = 0o755
        return members

    bundle = rewrite(signed[fmt], tmp_path / f"u.{fmt}", change)
    lines = failures(verify_bundle_file(bundle, signed["pub"]))
    assert lines == [
        "members: config/web/env.toml: mode 0755, manifest.json says 0644",
        "members: config/web/extra.toml: not listed in manifest.json",
        "complete: config/worker/env.toml: listed in manifest.json but missing from the archive",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_manifest_must_come_first(signed, tmp_path: Path, fmt: str) -> None:
    bundle = rewrite(signed[fmt], tmp_path / f"f.{fmt}", lambda m: [*m[1:], m[0]])
    report = verify_bundle_file(bundle)
    assert failures(report) == [
        f"manifest: f.{fmt}: the first member is 'bin', not manifest.json: not a runtime bundle"
    ]
    assert_install_refused(bundle, tmp_path, "the first member is 'bin'")


def _hostile(tmp_path: Path, fmt: str, member: Raw, listed: dict | None = None) -> Path:
    """A bundle whose manifest is valid and whose extra member is ``member``."""
    good = Raw("config/web/a.toml", b"a = 1\n")
    doc = {
        "version": "1",
        "services": [],
        "bundle": {
            "createdAt": "2024-01-01T00:00:00Z",
            "source": "test",
            "signature": "",
            "version": "1.0.0",
            "files": {good.name: __import__("hashlib").sha256(good.data).hexdigest()},
            "sizes": {good.name: len(good.data)},
            "executables": [],
            "links": listed or {},
            "dirs": [],
            "allowed": [],
        },
    }
    manifest = Raw("manifest.json", json.dumps(doc).encode())
    return make_raw_archive(tmp_path / f"h.{fmt}", [manifest, good, member])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("member", "message"),
    [
        (Raw("../evil", b"x"), r"member '../evil' escapes the target"),
        (Raw("/etc/evil", b"x"), r"member '/etc/evil' is an absolute path"),
        (Raw("config/web/dev", kind="chr"), r"member 'config/web/dev' is a character device"),
        (Raw("config/web/blk", kind="blk"), r"is a block device"),
        (Raw("config/web/fifo", kind="fifo"), r"is a FIFO"),
        (Raw("config/web/suid", b"x", mode=0o4755), r"member 'config/web/suid' has the setuid bit"),
        (Raw("config/web/sgid", b"x", mode=0o2755), r"has the setgid bit"),
        (Raw("config/web/abs", kind="symlink", target="/etc/passwd"), r"symlink to an absolute"),
    ],
)
def test_malicious_members_are_refused(tmp_path: Path, fmt: str, member: Raw, message: str) -> None:
    bundle = _hostile(tmp_path, fmt, member)
    report = verify_bundle_file(bundle)
    archive = [c.detail for c in report.failed if c.name == "archive"]
    assert len(archive) == 1, failures(report)
    assert __import__("re").search(message, archive[0]), archive[0]
    assert_install_refused(bundle, tmp_path, message)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlink_out_is_refused_even_when_listed(tmp_path: Path, fmt: str) -> None:
    link = Raw("config/web/out", kind="symlink", mode=0o777, target="../../../escape")
    bundle = _hostile(tmp_path, fmt, link, listed={"config/web/out": "../../../escape"})
    report = verify_bundle_file(bundle)
    plan = [c.detail for c in report.failed if c.name == "plan"]
    assert plan == [
        "manifest.json: member 'config/web/out' is a symlink to '../../../escape', outside the target"
    ]
    assert_install_refused(bundle, tmp_path, "is a symlink to '../../../escape', outside")


@pytest.mark.parametrize("fmt", FORMATS)
def test_data_and_logs_are_never_in_a_bundle(tmp_path: Path, fmt: str) -> None:
    member = Raw("data/web/state.db", b"x")
    bundle = _hostile(tmp_path, fmt, member)
    lines = failures(verify_bundle_file(bundle))
    assert lines == ["members: data/web/state.db: not listed in manifest.json"]
    doc_listed = _hostile(tmp_path, fmt, Raw("x", b"y"), listed={"logs/x": "y"})
    lines = failures(verify_bundle_file(doc_listed))
    assert "plan: logs/x: is under logs/, which a bundle never carries" in lines


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_truncated_bundle_is_refused(signed, tmp_path: Path, fmt: str) -> None:
    data = signed[fmt].read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    report = verify_bundle_file(cut, signed["pub"])
    assert not report.ok
    assert any("cannot read archive" in c.detail for c in report.failed), failures(report)
    with pytest.raises((BundleError, UnsafeArchiveError)):
        install_bundle(cut, tmp_path / "prefix", pubkey=signed["pub"])
    assert not (tmp_path / "prefix" / "current").exists()


def test_signature_must_be_base64(signed, tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        doc["bundle"]["signature"] = base64.b64encode(b"x" * 64).decode()[:-4] + "!!!!"

    bundle = rewrite(signed["zip"], tmp_path / "b.zip", lambda m: edit_manifest(m, edit))
    report = verify_bundle_file(bundle)
    assert failures(report) == ["manifest: manifest.json: bundle.signature: expected base64"]


# --- regressions ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tiny_bundle_whose_member_grew_is_refused_by_size_before_writing(
    signed, tmp_path: Path, fmt: str
) -> None:
    """A member swapped for 256 MiB of zeros (a bundle of well under 1 MiB) was written out in
    full before its sha256 refused it: the signed manifest listed no sizes."""
    grown = 256 << 20

    def tamper(members: list[Raw]) -> list[Raw]:
        for m in members:
            if m.name == "config/web/env.toml":
                m.data = bytes(grown)
        return members

    bundle = rewrite(signed[fmt], tmp_path / f"g.{fmt}", tamper)
    if fmt == "zip":  # make_raw_archive stores zip members; a real attacker deflates them
        _deflate_zip(bundle)
    assert bundle.stat().st_size < 1 << 20
    listed = json.loads(rewrite_manifest(signed[fmt]))["bundle"]["sizes"]["config/web/env.toml"]
    want = f"config/web/env.toml: the archive says {grown} bytes, manifest.json says {listed}"
    report = verify_bundle_file(bundle, signed["pub"])
    assert failures(report) == [f"size: {want}"]
    assert report.signature == "valid"  # the manifest is untouched: only the member grew
    prefix = tmp_path / "prefix"
    with pytest.raises(BundleError, match=f"^g.{fmt}: {want}$"):
        install_bundle(bundle, prefix, pubkey=signed["pub"])
    assert not (prefix / "current").exists() and list((prefix / "versions").iterdir()) == []


def _deflate_zip(path: Path) -> None:
    import zipfile

    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(path)


def rewrite_manifest(bundle: Path) -> bytes:
    from archives import read_raw_archive

    first = read_raw_archive(bundle)[0]
    assert first.name == "manifest.json"
    return first.data


def test_copy_member_stops_at_the_declared_size() -> None:
    import io

    from runyard.runtime.bundle.reader import copy_member

    got: list[bytes] = []
    with pytest.raises(UnsafeArchiveError, match="more than its declared 10 bytes"):
        copy_member(io.BytesIO(b"x" * (3 << 20)), got.append, 10, "b.zip")
    assert b"".join(got) == b"x" * 10  # not a byte past the declared size reached the sink
    with pytest.raises(UnsafeArchiveError, match="holds 5 bytes, fewer than its declared 10"):
        copy_member(io.BytesIO(b"x" * 5), got.append, 10, "b.zip")
    assert copy_member(io.BytesIO(b"y" * 10), got.append, 10, "b.zip") == 10


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bundle_without_sizes_is_refused(signed, tmp_path: Path, fmt: str) -> None:
    def edit(doc: dict) -> None:
        del doc["bundle"]["sizes"]
        for name in ("signature", "keyFingerprint", "publicKey"):
            doc["bundle"].pop(name)

    bundle = rewrite(signed[fmt], tmp_path / f"n.{fmt}", lambda m: edit_manifest(m, edit))
    report = verify_bundle_file(bundle)
    assert failures(report) == [
        "plan: manifest.json: no bundle.sizes: packed by a Runyard that recorded no member "
        "sizes; repack it with this one"
    ]
    assert_install_refused(bundle, tmp_path, "no bundle.sizes")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["services"][0].update(size=2**64),
            f"services[0].size: expected a byte count 0..2**53-1, got {2**64}",
        ),
        (
            lambda d: d["services"][0].update(size=2**53),
            f"services[0].size: expected a byte count 0..2**53-1, got {2**53}",
        ),
        (
            lambda d: d["bundle"]["sizes"].update({"config/web/env.toml": 10**30}),
            "bundle.sizes['config/web/env.toml']: expected a byte count 0..2**53-1",
        ),
        (
            lambda d: d["bundle"]["sizes"].update({"config/web/nope.toml": 1}),
            "bundle.sizes['config/web/nope.toml']: not in bundle.files",
        ),
    ],
)
def test_a_huge_integer_in_the_manifest_is_one_failed_check(
    signed, tmp_path: Path, fmt: str, edit, message: str
) -> None:
    """An integer beyond ±2**53 crashed verify and install with `internal error: ValueError`
    (RFC 8785 cannot write it, and the signature check puts the manifest in that form)."""
    bundle = rewrite(signed[fmt], tmp_path / f"i.{fmt}", lambda m: edit_manifest(m, edit))
    for pubkey in (None, signed["pub"]):
        assert failures(verify_bundle_file(bundle, pubkey)) == [
            f"manifest: manifest.json: {message}"
        ]
        assert_install_refused(bundle, tmp_path, __import__("re").escape(message), pubkey)


def test_the_signature_check_never_raises_on_a_manifest_without_canonical_form(signed) -> None:
    from runyard.runtime.bundle.signing import check_signature

    doc = json.loads(rewrite_manifest(signed["zip"]))
    doc["services"][0]["size"] = 2**64  # as if validation had let it through
    for pubkey in (None, signed["pub"]):
        from runyard.runtime.signing.keys import load_public_key

        sig = check_signature(doc, load_public_key(pubkey) if pubkey else None)
        assert (sig.ok, sig.state) == (False, "invalid")
        assert sig.detail.startswith("manifest.json has no canonical form to check: ")
        assert "\n" not in sig.detail


def test_huge_integer_through_the_cli_is_one_line_not_an_internal_error(
    signed, tmp_path: Path
) -> None:
    from test_bundle_kit import cli

    def edit(doc: dict) -> None:
        doc["services"][0]["size"] = 2**64

    rewrite(signed["tar.gz"], tmp_path / "i.tar.gz", lambda m: edit_manifest(m, edit))
    for args in (
        ("bundle", "verify", "i.tar.gz"),
        ("bundle", "install", "i.tar.gz", "--prefix", "opt"),
    ):
        out = cli(*args, cwd=tmp_path)
        assert out.returncode == 1, (out.stdout, out.stderr)
        assert "internal error" not in out.stdout + out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "services[0].size: expected a byte count" in out.stdout + out.stderr
