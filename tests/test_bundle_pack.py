"""runtime.bundle.pack_bundle: what goes in, what never does, and the same bytes every time."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from test_bundle_kit import bin_file, make_tree

from runyard.runtime.bundle import BundleError, pack_bundle
from runyard.runtime.bundle.pack import resolve_created_at
from runyard.runtime.core.manifest import load_manifest, parse_manifest


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path: Path):
    return make_tree(tmp_path / "src")


def names(path: Path) -> list[str]:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            return [i.filename for i in zf.infolist()]
    with tarfile.open(path, "r:gz") as tf:
        return tf.getnames()


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_packing_twice_gives_the_same_bytes(tree, tmp_path: Path, fmt: str) -> None:
    first = pack_bundle(tree, tmp_path / f"a.{fmt}", version="1.0.0")
    # Everything that must not matter: mtimes, atimes, the umask, the output name.
    for path in [*tree.config_dir.rglob("*"), *tree.bin_dir.rglob("*")]:
        os.utime(path, (1_000_000, 2_000_000), follow_symlinks=False)
    old = os.umask(0o077)
    try:
        second = pack_bundle(tree, tmp_path / f"b.{fmt}", version="1.0.0")
    finally:
        os.umask(old)
    assert first.sha256 == second.sha256 == sha(tmp_path / f"a.{fmt}") == sha(tmp_path / f"b.{fmt}")
    # And what must: the version is in the signed manifest.
    third = pack_bundle(tree, tmp_path / f"c.{fmt}", version="1.0.1")
    assert third.sha256 != first.sha256


def test_tar_headers_carry_no_owner_no_time_no_host(tree, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    result = pack_bundle(tree, out, version="1.0.0", created_at="2024-05-06T07:08:09Z")
    raw = out.read_bytes()
    assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no FNAME/FEXTRA/FCOMMENT flags
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert result.created_at == "2024-05-06T07:08:09Z"
    with tarfile.open(out, "r:gz") as tf:
        members = tf.getmembers()
    assert members[0].name == "manifest.json"
    rest = [m.name for m in members[1:]]
    assert rest == sorted(rest, key=str.encode)
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1714979289
        assert m.mode in (0o644, 0o755), (m.name, oct(m.mode))
    program = next(m for m in members if m.name.endswith("/bin/web"))
    assert program.mode == 0o755
    assert gzip.decompress(raw)  # one well-formed gzip stream


def test_zip_entries_have_fixed_dates_and_unix_modes(tree, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    pack_bundle(tree, out, version="1.0.0", created_at="1970-01-02T00:00:00Z")
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        assert infos[0].filename == "manifest.json"
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)  # clamped to what zip can say
            assert info.create_system == 3
            assert info.extra == b""
            mode = info.external_attr >> 16
            assert stat.S_IMODE(mode) in (0o644, 0o755)
        assert zf.comment == b""


def test_contents_are_bin_config_schemas_and_the_manifest_only(tree, tmp_path: Path) -> None:
    (tree.data_dir / "web").mkdir(parents=True, exist_ok=True)
    (tree.data_dir / "web" / "state.db").write_bytes(b"state")
    (tree.logs_dir / "web").mkdir(parents=True, exist_ok=True)
    (tree.logs_dir / "web" / "out.log").write_text("log\n")
    (tree.temp_dir / "scratch").write_text("x")
    (tree.archives_dir / "web.tar.gz").write_bytes(b"cached")
    (tree.own_config_dir).mkdir(parents=True, exist_ok=True)
    (tree.own_config_dir / "catalog.json").write_text('{"source": "http://dev-box/catalog"}')
    out = tmp_path / "b.tar.gz"
    pack_bundle(tree, out, version="2.3.4")
    listed = names(out)
    tops = {n.split("/")[0] for n in listed}
    assert tops == {"manifest.json", "bin", "config", "schemas"}
    assert not any(n.startswith("config/runyard") for n in listed)
    assert "config/web/schemas/input.schema.json" in listed
    assert "schemas/manifest.schema.json" in listed
    with tarfile.open(out, "r:gz") as tf:
        manifest = parse_manifest(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    b = manifest.bundle
    assert b.version == "2.3.4"
    files = [n for n in listed if n != "manifest.json" and not n.endswith("/")]
    with tarfile.open(out, "r:gz") as tf:
        regular = {m.name for m in tf.getmembers() if m.isreg()} - {"manifest.json"}
    assert set(b.files) == regular
    assert set(b.files) <= set(files)
    assert b.executables == sorted(b.executables, key=str.encode)
    assert {e for e in b.executables} == {
        f"{s.install_rel}/bin/{s.name}" for s in manifest.services
    }
    assert b.signature == "" and b.allowed == []
    assert b.source.startswith("runyard")
    # The manifest is the tree's, service for service, install digests included.
    tree_manifest = load_manifest(tree)
    assert [s.files for s in manifest.services] == [s.files for s in tree_manifest.services]


def test_services_option_packs_only_those(tree, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    result = pack_bundle(tree, out, version="1.0.0", services=["worker"])
    assert result.services == ["worker"]
    listed = names(out)
    assert not any("web" in n for n in listed)
    assert any(n.startswith("config/worker/") for n in listed)
    with pytest.raises(
        BundleError, match=r"--services: not in the tree: nope \(installed: web, worker\)"
    ):
        pack_bundle(tree, tmp_path / "c.zip", version="1.0.0", services=["worker", "nope"])


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "01.2.3", "1.2.3-", "latest", ""])
def test_version_must_be_semver(tree, tmp_path: Path, bad: str) -> None:
    with pytest.raises(BundleError, match=r"--version|no bundle version"):
        pack_bundle(tree, tmp_path / "b.zip", version=bad)
    assert list(tmp_path.glob("b.zip*")) == []


def test_created_at_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = ["2024-01-01T00:00:00.000001Z", "2025-02-03T04:05:06.5Z", ""]
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert resolve_created_at(None, []) == "1980-01-01T00:00:00Z"
    assert resolve_created_at(None, stamps) == "2025-02-03T04:05:06Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert resolve_created_at(None, stamps) == "1970-01-02T00:00:00Z"
    assert resolve_created_at("2030-01-01T01:00:00+01:00", stamps) == "2030-01-01T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(BundleError, match="SOURCE_DATE_EPOCH='soon': not a number"):
        resolve_created_at(None, stamps)


def test_a_drifted_install_dir_is_refused(tree, tmp_path: Path) -> None:
    program = bin_file(tree.root, "web")
    os.chmod(program, 0o755)
    program.write_bytes(b"#!/bin/sh\necho patched\n")
    extra = program.parent / "extra"
    extra.write_text("x")
    with pytest.raises(BundleError) as info:
        pack_bundle(tree, tmp_path / "b.tar.gz", version="1.0.0")
    text = str(info.value)
    assert "runyard runtime verify" in text
    assert "/bin/web changed" in text and "/bin/extra appeared" in text
    assert "\n" not in text
    assert list(tmp_path.glob("b.tar.gz*")) == []


def test_symlinks_in_bin_are_kept_and_those_leaving_refused(tree, tmp_path: Path) -> None:
    install = bin_file(tree.root, "web").parent.parent
    os.chmod(install, 0o755)
    (install / "current").symlink_to("bin/web")
    out = tmp_path / "b.tar.gz"
    pack_bundle(tree, out, version="1.0.0")
    with tarfile.open(out, "r:gz") as tf:
        link = next(m for m in tf.getmembers() if m.name.endswith("/current"))
    assert link.issym() and link.linkname == "bin/web"
    (install / "escape").symlink_to("../../../../../config")
    with pytest.raises(BundleError, match=r"member 'escape' is a symlink to .*outside the target"):
        pack_bundle(tree, tmp_path / "c.tar.gz", version="1.0.0")


def test_a_symlink_in_config_is_refused(tree, tmp_path: Path) -> None:
    (tree.config_dir / "web" / "link.toml").symlink_to("env.toml")
    with pytest.raises(BundleError, match=r"config/web/link.toml: is a symlink"):
        pack_bundle(tree, tmp_path / "b.zip", version="1.0.0")


def test_format_must_agree_with_the_name(tree, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"the name says zip, --format says tar\.gz"):
        pack_bundle(tree, tmp_path / "b.zip", version="1.0.0", fmt="tar.gz")
    with pytest.raises(BundleError, match="cannot tell the bundle format"):
        pack_bundle(tree, tmp_path / "b.bin", version="1.0.0")
    result = pack_bundle(tree, tmp_path / "b.bin", version="1.0.0", fmt="zip")
    assert zipfile.is_zipfile(result.path)


def test_an_existing_output_is_replaced_whole_or_not_at_all(tree, tmp_path: Path) -> None:
    out = tmp_path / "b.tar.gz"
    out.write_bytes(b"old bundle")
    (tree.config_dir / "web" / ".env").write_text("A=1\n")
    with pytest.raises(BundleError):
        pack_bundle(tree, out, version="1.0.0")
    assert out.read_bytes() == b"old bundle"
    (tree.config_dir / "web" / ".env").unlink()
    pack_bundle(tree, out, version="1.0.0")
    assert tarfile.is_tarfile(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_manifest_json_is_the_tree_manifest_shape(tree, tmp_path: Path) -> None:
    out = tmp_path / "b.zip"
    pack_bundle(tree, out, version="1.0.0")
    with zipfile.ZipFile(out) as zf:
        doc = json.loads(zf.read("manifest.json"))
    assert doc["version"] == "1"
    assert set(doc["bundle"]) == {
        "createdAt",
        "source",
        "signature",
        "version",
        "files",
        "sizes",
        "executables",
        "links",
        "dirs",
        "allowed",
    }
    # Every file's size, as packed (install checks each member header against it).
    with zipfile.ZipFile(out) as zf:
        on_disk = {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}
    on_disk.pop("manifest.json")
    assert doc["bundle"]["sizes"] == on_disk
    assert set(doc["bundle"]["sizes"]) == set(doc["bundle"]["files"])


@pytest.mark.timeout(600)
def test_with_wheels_packs_the_wheelhouse_and_install_sh(tree, tmp_path: Path) -> None:
    wheels = pytest.importorskip("runyard.runtime.bundle.wheels")
    out = tmp_path / "b.tar.gz"
    try:
        result = pack_bundle(tree, out, version="1.0.0", with_wheels=True)
    except wheels.WheelhouseError as exc:  # no wheel cache and no network on this box
        pytest.skip(f"no wheelhouse here: {exc}")
    with tarfile.open(out, "r:gz") as tf:
        members = {m.name: m for m in tf.getmembers()}
        manifest = parse_manifest(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    whl = [n for n in members if n.startswith("wheels/") and n.endswith(".whl")]
    assert any(n.startswith("wheels/runyard-") for n in whl)
    assert members["install.sh"].mode == 0o755
    assert "install.sh" in manifest.bundle.executables
    assert set(whl) <= set(manifest.bundle.files)
    assert not list(tmp_path.glob(".b.tar.gz.wheels-*"))  # the scratch wheelhouse is gone
    from runyard.runtime.bundle import verify_bundle_file

    assert verify_bundle_file(result.path).ok


@pytest.mark.parametrize("name", ["back\\slash.toml", "new\nline.toml", b"\xff\xfe.toml"])
def test_names_that_cannot_round_trip_are_refused(tree, tmp_path: Path, name: str | bytes) -> None:
    target = (
        os.fsencode(tree.config_dir / "web")
        + b"/"
        + (name if isinstance(name, bytes) else name.encode())
    )
    with open(target, "wb") as fh:
        fh.write(b"x = 1\n")
    with pytest.raises(BundleError, match="it cannot be packed"):
        pack_bundle(tree, tmp_path / "b.zip", version="1.0.0")
