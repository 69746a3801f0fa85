"""Acquisition end to end: real archives, a real loopback http.server, real files on disk."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from archives import archive_record, make_tar, program, publish, write_catalog
from runyard import runtime
from runyard.runtime.acquisition.catalog import remembered_catalog
from runyard.runtime.core.errors import (
    CatalogError,
    ChecksumMismatch,
    ResolveError,
    UnsafeArchiveError,
)
from runyard.runtime.core.manifest import load_manifest
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree

PLATFORM = f"{current_os()}-{current_arch()}"


def test_ensure_over_http_installs_verified_and_executable(tree, http_dir) -> None:
    served, server = http_dir
    records = [
        publish(
            served,
            "web",
            v,
            env={"GREETING": "hi"},
            args=["--port", "9000"],
            defaultPorts=[{"name": "http", "port": 9000, "protocol": "http"}],
        )
        for v in ("1.2.0", "1.9.0", "1.10.0")
    ]
    write_catalog(served / "catalog.json", records)

    got = runtime.ensure_service("web", "1.x", root=tree.root, catalog=f"{server.url}/catalog.json")

    assert got.version == "1.10.0"  # semantic, not string, order
    assert got.fetched and got.installed
    assert got.install_dir == str(tree.root / "bin" / "web" / "1.10.0" / PLATFORM)
    binary = Path(got.bin_path)
    assert binary.read_bytes() == program("web 1.10.0")
    assert os.stat(binary).st_mode & stat.S_IXUSR
    entry = runtime.get_manifest(tree.root).services[0]
    assert (entry.name, entry.version, entry.checksum) == ("web", "1.10.0", records[2]["sha256"])
    assert entry.bin_path == f"bin/web/1.10.0/{PLATFORM}/bin/web"
    assert entry.env == {"GREETING": "hi"} and entry.args == ["--port", "9000"]
    assert entry.default_ports[0].port == 9000
    assert set(entry.files) == {"bin/web", "README"}
    # The archive is in the cache; nothing is left half written.
    cached = list(tree.archives_dir.iterdir())
    assert [p.suffixes[-2:] for p in cached] == [[".tar", ".gz"]]
    assert not [p for p in tree.archives_dir.iterdir() if p.name.startswith(".")]


def test_second_ensure_does_no_network_io(tree, http_dir) -> None:
    served, server = http_dir
    write_catalog(served / "catalog.json", [publish(served, "web", "1.0.0")])
    runtime.ensure_service("web", "latest", root=tree.root, catalog=f"{server.url}/catalog.json")
    archive_requests = [r for r in server.requests if not r.endswith("catalog.json")]
    assert len(archive_requests) == 1

    again = runtime.ensure_service("web", "1.0.0", root=tree.root)  # remembered catalog
    assert not again.fetched and not again.installed
    assert [r for r in server.requests if not r.endswith("catalog.json")] == archive_requests


def test_relative_url_is_relative_to_the_catalog_and_catalog_is_remembered(tree, tmp_path) -> None:
    repo = tmp_path / "repo"
    (repo / "pool").mkdir(parents=True)
    record = publish(repo / "pool", "tool", "2.0.0", url="pool/tool-2.0.0.tar.gz")
    write_catalog(repo / "catalog.json", [record])
    runtime.ensure_service("tool", "2.0.0", root=tree.root, catalog=str(repo / "catalog.json"))
    assert remembered_catalog(RuntimeTree(tree.root)) == (repo / "catalog.json").as_uri()


def test_zip_and_xz_install_with_exec_bits(tree, tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    records = [
        publish(repo, "zipped", "1.0.0", fmt="zip"),
        publish(repo, "xzed", "1.0.0", fmt="tar.xz"),
    ]
    write_catalog(repo / "catalog.json", records)
    for name in ("zipped", "xzed"):
        got = runtime.ensure_service(
            name, "latest", root=tree.root, catalog=str(repo / "catalog.json")
        )
        assert os.access(got.bin_path, os.X_OK)


def test_checksum_mismatch_deletes_partial_and_extracts_nothing(tree, http_dir) -> None:
    served, server = http_dir
    record = publish(served, "web", "1.0.0")
    record["sha256"] = "0" * 64
    write_catalog(served / "catalog.json", [record])
    with pytest.raises(
        ChecksumMismatch, match=r"sha256 mismatch: expected 0{64}, got [0-9a-f]{64}"
    ):
        runtime.ensure_service("web", "1.0.0", root=tree.root, catalog=f"{server.url}/catalog.json")
    assert list(tree.archives_dir.iterdir()) == []
    assert list(tree.bin_dir.iterdir()) == []
    assert load_manifest(tree).services == []


def test_size_mismatch_is_reported(tree, tmp_path) -> None:
    record = publish(tmp_path, "web", "1.0.0")
    record["size"] -= 1
    write_catalog(tmp_path / "catalog.json", [record])
    with pytest.raises(ChecksumMismatch, match="size mismatch: expected"):
        runtime.ensure_service(
            "web", "1.0.0", root=tree.root, catalog=str(tmp_path / "catalog.json")
        )
    assert list(tree.archives_dir.iterdir()) == []


def test_unknown_name_and_unmatched_spec_list_what_is_available(tree, tmp_path) -> None:
    write_catalog(
        tmp_path / "c.json", [publish(tmp_path, "web", "1.0.0"), publish(tmp_path, "db", "3.1.0")]
    )
    cat = str(tmp_path / "c.json")
    with pytest.raises(ResolveError, match=r"no service 'cache' .*available: db, web"):
        runtime.ensure_service("cache", "latest", root=tree.root, catalog=cat)
    with pytest.raises(ResolveError, match=r"no version of 'web' matches '2.x' .*available: 1.0.0"):
        runtime.ensure_service("web", "2.x", root=tree.root, catalog=cat)
    with pytest.raises(ResolveError, match="is not a version spec"):
        runtime.ensure_service("web", "one", root=tree.root, catalog=cat)


def test_other_platform_only_says_which_platforms_exist(tree, tmp_path) -> None:
    other = "arm64" if current_arch() == "amd64" else "amd64"
    write_catalog(tmp_path / "c.json", [publish(tmp_path, "web", "1.0.0", arch=other)])
    with pytest.raises(ResolveError, match=f"no archive for {PLATFORM} .*available: linux-{other}"):
        runtime.ensure_service("web", "latest", root=tree.root, catalog=str(tmp_path / "c.json"))


def test_catalog_normalises_arch_aliases(tree, tmp_path) -> None:
    alias = {"amd64": "x86_64", "arm64": "aarch64"}[current_arch()]
    write_catalog(tmp_path / "c.json", [publish(tmp_path, "web", "1.0.0", arch=alias)])
    got = runtime.ensure_service("web", "latest", root=tree.root, catalog=str(tmp_path / "c.json"))
    assert got.arch == current_arch()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(version="2"), "version: invalid enum value"),
        (
            lambda c: c["archives"][0].update(sha256="xyz"),
            r"archives\[0\].sha256: expected 64 lowercase hex",
        ),
        (lambda c: c["archives"][0].pop("url"), r"archives\[0\].url: required field missing"),
        (lambda c: c["archives"][0].update(os="plan9"), r"archives\[0\].os: expected one of"),
        (
            lambda c: c["archives"][0].update(binPath="../x"),
            r"archives\[0\].binPath: must not contain",
        ),
    ],
)
def test_bad_catalog_is_one_line(tree, tmp_path, mutate, message) -> None:
    doc = {"version": "1", "archives": [publish(tmp_path, "web", "1.0.0")]}
    mutate(doc)
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match=message):
        runtime.ensure_service("web", "latest", root=tree.root, catalog=str(tmp_path / "c.json"))


def test_no_catalog_known_says_pass_catalog(tree) -> None:
    with pytest.raises(CatalogError, match="pass --catalog"):
        runtime.ensure_service("web", "latest", root=tree.root)


def test_http_404_is_one_line(tree, http_dir) -> None:
    served, server = http_dir
    record = publish(served, "web", "1.0.0")
    (served / "web-1.0.0.tar.gz").unlink()
    write_catalog(served / "catalog.json", [record])
    with pytest.raises(runtime.AcquisitionError, match="HTTP 404"):
        runtime.ensure_service(
            "web", "latest", root=tree.root, catalog=f"{server.url}/catalog.json"
        )


def test_concurrent_ensures_download_once(tree, http_dir) -> None:
    served, server = http_dir
    big = served / "web-1.0.0.tar.gz"
    make_tar(big, {"bin/web": program() + os.urandom(2_000_000).hex().encode()})
    write_catalog(served / "catalog.json", [archive_record(big, "web", "1.0.0")])
    cat = f"{server.url}/catalog.json"
    results: list[object] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(runtime.ensure_service("web", "1.0.0", root=tree.root, catalog=cat))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 4
    assert [r for r in server.requests if r.endswith(".tar.gz")] == ["/web-1.0.0.tar.gz"]
    assert sum(1 for r in results if r.installed) == 1
    assert len(load_manifest(tree).services) == 1


def test_malicious_archive_leaves_bin_and_manifest_untouched(tree, tmp_path) -> None:
    import io
    import tarfile

    evil = tmp_path / "evil-1.0.0.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../../escape")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    record = archive_record(evil, "evil", "1.0.0", binPath="escape")
    write_catalog(tmp_path / "c.json", [record])
    with pytest.raises(UnsafeArchiveError, match="escape"):
        runtime.ensure_service("evil", "latest", root=tree.root, catalog=str(tmp_path / "c.json"))
    assert list(tree.bin_dir.rglob("*")) == [
        tree.bin_dir / "evil",
        tree.bin_dir / "evil" / "1.0.0",
    ] or not any(p.is_file() for p in tree.bin_dir.rglob("*"))
    assert load_manifest(tree).services == []
    assert not (tree.root.parent / "escape").exists()


def test_several_versions_side_by_side_newest_ensured_first(tree, tmp_path) -> None:
    write_catalog(tmp_path / "c.json", [publish(tmp_path, "web", v) for v in ("1.0.0", "2.0.0")])
    cat = str(tmp_path / "c.json")
    runtime.ensure_service("web", "2.0.0", root=tree.root, catalog=cat)
    runtime.ensure_service("web", "1.0.0", root=tree.root)
    assert [s.version for s in load_manifest(tree).find("web")] == ["1.0.0", "2.0.0"]
    runtime.ensure_service("web", "2.0.0", root=tree.root)  # ensuring again makes it newest
    assert [s.version for s in load_manifest(tree).find("web")] == ["2.0.0", "1.0.0"]


def test_deleted_binary_is_reinstalled_from_cache(tree, http_dir) -> None:
    served, server = http_dir
    write_catalog(served / "catalog.json", [publish(served, "web", "1.0.0")])
    first = runtime.ensure_service(
        "web", "1.0.0", root=tree.root, catalog=f"{server.url}/catalog.json"
    )
    os.unlink(first.bin_path)
    again = runtime.ensure_service("web", "1.0.0", root=tree.root)
    assert again.installed and not again.fetched
    assert Path(again.bin_path).read_bytes() == program("web 1.0.0")
