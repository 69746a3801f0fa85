"""The manifest: round trip, one-line errors naming the field path, binPath containment."""

from __future__ import annotations

import json
import os

import pytest

from runyard.runtime.core.errors import ManifestError, TreeError
from runyard.runtime.core.manifest import (
    RuntimeManifest,
    ServiceEntry,
    load_manifest,
    parse_manifest,
    save_manifest,
)
from runyard.runtime.core.tree import RuntimeTree

SHA = "a" * 64


def entry(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "web",
        "version": "1.2.3",
        "os": "linux",
        "arch": "amd64",
        "checksum": SHA,
        "size": 10,
        "binPath": "bin/web/1.2.3/linux-amd64/web",
    }
    base.update(over)
    return base


def doc(*services: dict[str, object], **top: object) -> bytes:
    return json.dumps({"version": "1", "services": list(services), **top}).encode()


def test_init_lays_out_the_tree_with_private_temp(tmp_path) -> None:
    tree = RuntimeTree(tmp_path / "rt")
    assert tree.init() is True
    for name in ("bin", "data", "logs", "config", "cache", "temp"):
        assert (tree.root / name).is_dir()
    assert oct(os.stat(tree.temp_dir).st_mode & 0o777) == "0o700"
    assert load_manifest(tree) == RuntimeManifest()
    assert tree.init() is False  # idempotent, manifest kept


def test_round_trip_keeps_every_field(tree) -> None:
    manifest = parse_manifest(
        doc(
            entry(
                defaultPorts=[{"name": "http", "port": 8080, "protocol": "http"}],
                env={"A": "1"},
                args=["--x"],
                kind="engine",
            )
        )
    )
    save_manifest(tree, manifest)
    again = load_manifest(tree)
    assert again == manifest
    raw = json.loads(tree.manifest_path.read_bytes())
    assert raw["services"][0]["binPath"] == "bin/web/1.2.3/linux-amd64/web"
    assert raw["services"][0]["defaultPorts"][0]["port"] == 8080
    assert set(raw["bundle"]) == {"createdAt", "source", "signature"}


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (
            [
                entry(),
                entry(name="a", binPath="bin/a/1.2.3/linux-amd64/a"),
                entry(name="b", checksum="ABC", binPath="bin/b/1.2.3/linux-amd64/b"),
            ],
            "services[2].checksum: expected 64 lowercase hex characters",
        ),
        (
            [entry(checksum=SHA.upper())],
            "services[0].checksum: expected 64 lowercase hex characters",
        ),
        ([entry(size="ten")], "services[0].size: expected int, got str"),
        ([{"name": "web"}], "services[0].version: required field missing"),
        ([entry(colour="red")], "services[0].colour: unknown field"),
        ([entry(os="beos")], "services[0].os: expected one of linux, darwin, windows, got 'beos'"),
        ([entry(arch="x86_64")], "services[0].arch: expected one of amd64, arm64, got 'x86_64'"),
        ([entry(kind="daemon")], "services[0].kind: invalid enum value 'daemon'"),
        ([entry(name="../evil")], "services[0].name: service name '../evil' must be"),
        ([entry(name="runyard", binPath="bin/runyard/1.2.3/linux-amd64/x")], "reserved"),
        ([entry(binPath="/usr/bin/web")], "services[0].binPath: must be relative, not absolute"),
        (
            [entry(binPath="bin/web/1.2.3/linux-amd64/../../../../etc/passwd")],
            "services[0].binPath: must not contain '..'",
        ),
        (
            [entry(binPath="bin/other/1.0/linux-amd64/web")],
            "services[0].binPath: must lie under bin/web/1.2.3/linux-amd64/",
        ),
        (
            [entry(defaultPorts=[{"name": "p", "port": 70000}])],
            "services[0].defaultPorts[0].port: expected 1-65535",
        ),
        ([entry(), entry()], "services[1]: web 1.2.3 linux-amd64 is listed twice"),
    ],
)
def test_bad_manifest_is_one_line_naming_the_field(services, message) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(doc(*services))
    text = str(err.value)
    assert message in text
    assert "\n" not in text and "Traceback" not in text


def test_wrong_version_and_garbage_are_one_line() -> None:
    with pytest.raises(ManifestError, match=r"version: invalid enum value '2'"):
        parse_manifest(b'{"version": "2", "services": []}')
    with pytest.raises(ManifestError, match=r"manifest\.json: "):
        parse_manifest(b"{not json")


def test_bin_path_through_a_symlink_out_of_the_tree_is_rejected(tree, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "web").write_text("#!/bin/sh\n")
    base = tree.bin_dir / "web" / "1.2.3"
    base.mkdir(parents=True)
    (base / "linux-amd64").symlink_to(outside)
    with pytest.raises(
        ManifestError, match=r"services\[0\].binPath: .* leaves the tree through a symlink"
    ):
        parse_manifest(doc(entry()), tree)


def test_missing_tree_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(TreeError, match="runyard runtime init"):
        load_manifest(RuntimeTree(tmp_path / "nowhere"))


def test_save_refuses_an_invalid_manifest_and_keeps_the_old_file(tree) -> None:
    before = tree.manifest_path.read_bytes()
    bad = RuntimeManifest(
        services=[
            ServiceEntry("web", "1", "linux", "amd64", "nothex", 1, "bin/web/1/linux-amd64/w")
        ]
    )
    with pytest.raises(ManifestError):
        save_manifest(tree, bad)
    assert tree.manifest_path.read_bytes() == before
    assert sorted(p.name for p in tree.root.iterdir() if p.name.startswith(".")) == []
