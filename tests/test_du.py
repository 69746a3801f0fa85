"""runtime.du on real files: what is counted where, and what is not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec
import pytest

import runyard.runtime.core.du as du_module
from runyard.runtime.core.du import DiskReport, ServiceUsage, Usage, disk_usage, scan_usage
from runyard.runtime.core.manifest import RuntimeManifest, ServiceEntry, save_manifest
from runyard.runtime.core.tree import RuntimeTree


def put(path: Path, size: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return size


def entry(name: str) -> ServiceEntry:
    return ServiceEntry(
        name=name,
        version="1.0.0",
        os="linux",
        arch="amd64",
        checksum="0" * 64,
        size=1,
        bin_path=f"bin/{name}/1.0.0/linux-amd64/{name}",
    )


def service(report: DiskReport, name: str) -> ServiceUsage:
    [found] = [s for s in report.services if s.name == name]
    return found


def test_hand_built_tree_counts_every_category_exactly(tree: RuntimeTree) -> None:
    save_manifest(tree, RuntimeManifest(services=[entry("alpha"), entry("gamma")]))
    put(tree.install_dir("alpha", "1.0.0", "linux", "amd64") / "alpha", 1000)
    put(tree.install_dir("alpha", "1.0.0", "linux", "amd64") / "lib" / "a.so", 300)
    put(tree.data_dir / "alpha" / "db" / "deep" / "er" / "x.db", 50)
    put(tree.data_dir / "alpha" / "y", 7)
    put(tree.logs_dir / "alpha" / "out.log", 0)  # an empty file is still a file
    put(tree.config_dir / "alpha" / "alpha.toml", 20)
    (tree.data_dir / "alpha" / "empty-dir").mkdir()
    put(tree.logs_dir / "beta" / "out.log", 11)  # beta: only a logs dir, not in the manifest
    # Everything below belongs to nobody.
    other = tree.manifest_path.stat().st_size
    other += put(tree.cache_index_path, 13)
    other += put(tree.temp_dir / "state.json", 17)
    other += put(tree.logs_dir / "runyard" / "runyard.log", 19)
    other += put(tree.config_dir / "runyard" / "catalog.toml", 23)
    other += put(tree.bin_dir / "stray-file", 29)
    other += put(tree.root / "notes.txt", 31)

    report = disk_usage(tree)

    assert report.root == str(tree.root)
    assert [s.name for s in report.services] == ["alpha", "beta", "gamma"]
    alpha = service(report, "alpha")
    assert alpha.bin == Usage(1300, 2)
    assert alpha.data == Usage(57, 2)
    assert alpha.logs == Usage(0, 1)
    assert alpha.config == Usage(20, 1)
    assert alpha.cache == Usage(0, 0)
    assert alpha.total == Usage(1377, 6)
    assert service(report, "beta").logs == Usage(11, 1)
    assert service(report, "beta").total == Usage(11, 1)
    gamma = service(report, "gamma")  # in the manifest, nothing on disk
    assert gamma.total == Usage() and gamma.bin == Usage()
    assert report.other == Usage(other, 7)
    assert report.total == Usage(1377 + 11 + other, 6 + 1 + 7)


def test_total_is_the_sum_of_services_and_other(tree: RuntimeTree) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        for category in ("bin", "data", "logs", "config"):
            put(tree.root / category / name / "f", 10 * i + len(category))
    report = disk_usage(tree)
    summed = report.other
    for s in report.services:
        assert s.total == s.bin + s.data + s.logs + s.config + s.cache
        summed += s.total
    assert report.total == summed
    assert report.total == scan_usage(tree.root)


def test_symlinks_are_counted_but_never_followed(tree: RuntimeTree, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    put(outside / "huge", 1 << 20)
    put(outside / "dir" / "inner", 4096)
    link_file = tree.data_dir / "alpha" / "big-link"
    link_dir = tree.data_dir / "alpha" / "dir-link"
    link_file.parent.mkdir(parents=True)
    link_file.symlink_to(outside / "huge")
    link_dir.symlink_to(outside / "dir", target_is_directory=True)
    (tree.data_dir / "alpha" / "dangling").symlink_to(tmp_path / "nowhere")

    expected = sum(
        os.lstat(p).st_size for p in (link_file, link_dir, tree.data_dir / "alpha" / "dangling")
    )
    assert expected < 1000
    assert service(disk_usage(tree), "alpha").data == Usage(expected, 3)
    assert scan_usage(tree.data_dir) == Usage(expected, 3)
    assert scan_usage(link_file) == Usage(os.lstat(link_file).st_size, 1)


def test_a_symlinked_service_dir_is_not_entered(tree: RuntimeTree, tmp_path: Path) -> None:
    put(tmp_path / "elsewhere" / "big", 5000)
    (tree.data_dir / "ghost").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    report = disk_usage(tree)
    assert [s.name for s in report.services] == []  # a symlink is not a service directory
    assert report.total.bytes < 5000


def test_shared_top_level_dirs_of_an_installed_bundle_are_followed(tmp_path: Path) -> None:
    """An installed version links data/, logs/, temp/ to the prefix: they still count."""
    prefix = tmp_path / "prefix"
    tree = RuntimeTree(prefix / "versions" / "1.0.0")
    tree.init()
    for name in ("data", "logs", "temp"):
        shutil.rmtree(tree.root / name)
        (prefix / name).mkdir()
        (tree.root / name).symlink_to(Path("..", "..", name), target_is_directory=True)
    data = put(prefix / "data" / "alpha" / "state", 7000)
    logs = put(prefix / "logs" / "alpha" / "out.log", 3000)
    temp = put(prefix / "temp" / "scratch", 500)
    report = disk_usage(tree)
    alpha = service(report, "alpha")
    assert (alpha.data.bytes, alpha.logs.bytes) == (data, logs)
    assert report.other.bytes >= temp
    # Deeper links are still never followed.
    (prefix / "data" / "alpha" / "out").symlink_to(tmp_path, target_is_directory=True)
    assert service(disk_usage(tree), "alpha").data.bytes < data + 1000


def test_hard_links_count_once(tree: RuntimeTree) -> None:
    first = tree.data_dir / "alpha" / "blob"
    put(first, 500)
    os.link(first, tree.data_dir / "alpha" / "blob-again")
    (first.parent / "sub").mkdir()
    os.link(first, first.parent / "sub" / "blob")
    shared = tree.data_dir / "beta" / "shared"
    put(shared, 70)
    (tree.bin_dir / "alpha").mkdir()
    os.link(shared, tree.bin_dir / "alpha" / "shared")  # one inode, two services

    report = disk_usage(tree)
    alpha, beta = service(report, "alpha"), service(report, "beta")
    assert alpha.data == Usage(500, 1)
    # Across services the inode goes to the first path in sorted order: bin/ before data/.
    assert alpha.bin == Usage(70, 1)
    assert beta.data == Usage(0, 0)
    assert report.total.bytes == 570 + report.other.bytes
    assert scan_usage(tree.data_dir) == Usage(570, 2)


def test_missing_paths_measure_zero(tree: RuntimeTree, tmp_path: Path) -> None:
    assert scan_usage(tmp_path / "does-not-exist") == Usage(0, 0)
    shutil.rmtree(tree.bin_dir)
    shutil.rmtree(tree.cache_dir)
    put(tree.data_dir / "alpha" / "x", 5)
    report = disk_usage(tree)
    assert service(report, "alpha").bin == Usage()
    assert service(report, "alpha").total == Usage(5, 1)

    nothing = disk_usage(RuntimeTree(tmp_path / "no-tree-here"))
    assert nothing.services == [] and nothing.total == Usage() and nothing.other == Usage()


def test_unreadable_directory_is_skipped(tree: RuntimeTree) -> None:
    put(tree.data_dir / "alpha" / "visible", 3)
    secret = tree.data_dir / "alpha" / "secret"
    put(secret / "hidden", 1000)
    secret.chmod(0)
    try:
        if _can_list(secret):  # root (CAP_DAC_OVERRIDE) reads mode-000 directories anyway
            pytest.skip("this user can read a mode-000 directory")
        assert service(disk_usage(tree), "alpha").data == Usage(3, 1)
        assert scan_usage(tree.data_dir) == Usage(3, 1)
    finally:
        secret.chmod(0o755)


def _can_list(path: Path) -> bool:
    try:
        os.listdir(path)
    except PermissionError:
        return False
    return True


def test_reserved_runyard_dirs_belong_to_other(tree: RuntimeTree) -> None:
    put(tree.logs_dir / "runyard" / "daemon.log", 400)
    put(tree.config_dir / "runyard" / "catalog.toml", 40)
    put(tree.data_dir / "runyard" / "x", 4)
    report = disk_usage(tree, cache_owner=lambda name: "runyard")
    assert report.services == []
    assert report.other.bytes == tree.manifest_path.stat().st_size + 444
    assert report.other.files == 4


def test_cache_archives_are_attributed_by_the_callback(tree: RuntimeTree) -> None:
    owners = {"alpha-1.0.tar.gz": "alpha", "delta-2.0.zip": "delta", "runyard.tgz": "runyard"}
    put(tree.archives_dir / "alpha-1.0.tar.gz", 100)
    put(tree.archives_dir / "alpha-1.1.tar.gz", 110)  # no index entry: nobody's
    put(tree.archives_dir / "delta-2.0.zip", 200)
    put(tree.archives_dir / "runyard.tgz", 300)
    put(tree.archives_dir / ".partial" / "chunk", 50)  # a directory the index does not know
    put(tree.cache_index_path, 9)
    put(tree.config_dir / "alpha" / "c", 1)

    report = disk_usage(tree, cache_owner=owners.get)
    assert [s.name for s in report.services] == ["alpha", "delta"]  # delta: only a cache entry
    assert service(report, "alpha").cache == Usage(100, 1)
    assert service(report, "alpha").total == Usage(101, 2)
    assert service(report, "delta").cache == Usage(200, 1)
    manifest = tree.manifest_path.stat().st_size
    assert report.other == Usage(manifest + 110 + 300 + 50 + 9, 5)

    unattributed = disk_usage(tree)
    assert [s.name for s in unattributed.services] == ["alpha"]
    assert unattributed.other.bytes == manifest + 110 + 100 + 200 + 300 + 50 + 9


@pytest.mark.parametrize("manifest", [b"{not json", None])
def test_unreadable_manifest_falls_back_to_directories(
    tree: RuntimeTree, manifest: bytes | None
) -> None:
    save_manifest(tree, RuntimeManifest(services=[entry("gamma")]))
    put(tree.data_dir / "alpha" / "x", 5)
    if manifest is None:
        tree.manifest_path.unlink()
    else:
        tree.manifest_path.write_bytes(manifest)
    report = disk_usage(tree)
    assert [s.name for s in report.services] == ["alpha"]
    assert report.total.bytes == 5 + len(manifest or b"")


def test_report_encodes_to_json(tree: RuntimeTree) -> None:
    put(tree.data_dir / "alpha" / "x", 5)
    report = disk_usage(tree)
    data = msgspec.json.decode(msgspec.json.encode(report))
    assert data["services"][0]["name"] == "alpha"
    assert data["services"][0]["data"] == {"bytes": 5, "files": 1}
    assert data["total"]["files"] == report.total.files
    assert msgspec.json.decode(msgspec.json.encode(report), type=DiskReport) == report


def test_deep_nesting_needs_no_recursion(tmp_path: Path) -> None:
    path = str(tmp_path / "deep")
    os.mkdir(path)
    for _ in range(1500):  # deeper than the default recursion limit of 1000
        path += "/d"
        os.mkdir(path)
    with open(path + "/leaf", "wb") as fh:
        fh.write(b"x" * 42)
    try:
        assert scan_usage(tmp_path / "deep") == Usage(42, 1)
    finally:  # shutil.rmtree, which pytest cleans up with, recurses: take it down here
        os.unlink(path + "/leaf")
        while path != str(tmp_path):
            os.rmdir(path)
            path = os.path.dirname(path)


def test_a_file_measures_itself(tmp_path: Path) -> None:
    assert scan_usage(tmp_path / "f") == Usage()
    put(tmp_path / "f", 12)
    assert scan_usage(tmp_path / "f") == Usage(12, 1)


def _busy_tree(tree: RuntimeTree) -> None:
    """Enough directories for several units in every category, and hard links across them."""
    for s in range(6):
        for category in ("bin", "data", "logs", "config"):
            for d in range(3):
                for f in range(4):
                    put(tree.root / category / f"svc{s}" / f"d{d}" / f"n{d}" / f"f{f}", s + d + f)
    os.link(tree.data_dir / "svc0" / "d0" / "n0" / "f1", tree.logs_dir / "svc5" / "hl")
    os.link(tree.data_dir / "svc3" / "d2" / "n2" / "f3", tree.bin_dir / "svc4" / "d1" / "hl")
    put(tree.archives_dir / "svc1.tgz", 1234)


def test_the_helper_process_gives_the_same_report(tree: RuntimeTree) -> None:
    _busy_tree(tree)
    owners = {"svc1.tgz": "svc1"}.get
    alone = disk_usage(tree, owners, parallel=False)
    helped = disk_usage(tree, owners, parallel=True)
    assert helped == alone
    assert scan_usage(tree.root, parallel=True) == scan_usage(tree.root, parallel=False)
    assert alone.total == scan_usage(tree.root)


def test_a_failing_helper_changes_nothing(tree: RuntimeTree, monkeypatch: pytest.MonkeyPatch):
    _busy_tree(tree)
    expected = disk_usage(tree, parallel=False)
    monkeypatch.setattr(du_module, "_SCANNER_SOURCE", "def main():\n    raise SystemExit(3)\n")
    assert disk_usage(tree, parallel=True) == expected
    monkeypatch.setattr(du_module, "_SCANNER_SOURCE", "def main():\n    print('garbage')\n")
    assert disk_usage(tree, parallel=True) == expected
    monkeypatch.setattr(du_module.sys, "executable", str(tree.root / "no-such-python"))
    assert disk_usage(tree, parallel=True) == expected
    monkeypatch.setattr(du_module.sys, "frozen", True, raising=False)
    assert disk_usage(tree, parallel=True) == expected
