"""Cache GC by recorded last use, and drift detection of installed binaries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archives import archive_record, make_tar, program, write_catalog
from runyard import runtime
from runyard.runtime.acquisition.cache import collect_garbage, load_index
from runyard.runtime.acquisition.drift import verify_installed
from runyard.runtime.core.manifest import load_manifest, save_manifest


def published(repo: Path, name: str, version: str, pad: int) -> dict:
    archive = repo / f"{name}-{version}.tar.gz"
    # Random padding keeps the archive at roughly `pad` bytes after compression.
    make_tar(archive, {f"bin/{name}": program(version) + os.urandom(pad)})
    return archive_record(archive, name, version)


@pytest.fixture
def three_cached(tree, tmp_path):
    """web 1, 2, 3 each ensured (in that order of use), then web 1 and 2 uninstalled."""
    repo = tmp_path / "repo"
    repo.mkdir()
    write_catalog(
        repo / "c.json", [published(repo, "web", v, 100_000) for v in ("1.0.0", "2.0.0", "3.0.0")]
    )
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        runtime.ensure_service("web", v, root=tree.root, catalog=str(repo / "c.json"))
    manifest = load_manifest(tree)
    manifest.services = [s for s in manifest.services if s.version == "3.0.0"]
    save_manifest(tree, manifest)
    return tree


def cached(tree) -> list[str]:
    return sorted(p.name.split("-")[1] for p in tree.archives_dir.iterdir())


def test_gc_evicts_least_recently_used_first_and_spares_installed(three_cached) -> None:
    tree = three_cached
    # Use 1.0.0 again (reinstall from cache): 2.0.0 is now the least recently used.
    runtime.ensure_service("web", "1.0.0", root=tree.root)
    manifest = load_manifest(tree)
    manifest.services = [s for s in manifest.services if s.version == "3.0.0"]
    save_manifest(tree, manifest)
    total = sum(p.stat().st_size for p in tree.archives_dir.iterdir())

    dry = collect_garbage(tree, total - 1, dry_run=True)
    assert [r.version for r in dry.removed] == ["2.0.0"]
    assert cached(tree) == ["1.0.0", "2.0.0", "3.0.0"]  # dry run removed nothing

    report = collect_garbage(tree, total - 1)
    assert [r.version for r in report.removed] == ["2.0.0"]
    assert report.freed_bytes == report.removed[0].bytes
    assert cached(tree) == ["1.0.0", "3.0.0"]
    assert sorted(e.version for e in load_index(tree).archives.values()) == ["1.0.0", "3.0.0"]

    report = collect_garbage(tree, 0)
    assert [r.version for r in report.removed] == ["1.0.0"]
    assert cached(tree) == ["3.0.0"]  # installed: protected
    assert report.protected and report.kept_bytes > 0

    report = collect_garbage(tree, 0, include_installed=True)
    assert cached(tree) == []
    assert report.kept_bytes == 0


def test_gc_under_budget_removes_nothing(three_cached) -> None:
    report = collect_garbage(three_cached, 10**12)
    assert report.removed == [] and report.freed_bytes == 0
    assert cached(three_cached) == ["1.0.0", "2.0.0", "3.0.0"]


def test_gc_ignores_atime(three_cached) -> None:
    tree = three_cached
    newest_by_atime = next(p for p in tree.archives_dir.iterdir() if "-1.0.0-" in p.name)
    os.utime(newest_by_atime, (4_000_000_000, 4_000_000_000))
    total = sum(p.stat().st_size for p in tree.archives_dir.iterdir())
    report = collect_garbage(tree, total - 1)
    assert [r.version for r in report.removed] == ["1.0.0"]


def test_verify_names_changed_vanished_and_appeared_files(tree, tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    archive = make_tar(
        repo / "web-1.0.0.tar.gz", {"bin/web": program(), "lib/a.so": b"a", "lib/b.so": b"b"}
    )
    write_catalog(repo / "c.json", [archive_record(archive, "web", "1.0.0")])
    got = runtime.ensure_service("web", "1.0.0", root=tree.root, catalog=str(repo / "c.json"))
    assert verify_installed(tree).ok
    install = Path(got.install_dir)
    os.chmod(install / "lib" / "a.so", 0o644)
    (install / "lib" / "a.so").write_bytes(b"tampered")
    (install / "lib" / "b.so").unlink()
    (install / "lib" / "c.so").write_bytes(b"new")
    report = verify_installed(tree)
    assert not report.ok
    assert sorted((d.path, d.problem) for d in report.drift) == [
        ("lib/a.so", "changed"),
        ("lib/b.so", "vanished"),
        ("lib/c.so", "appeared"),
    ]


def test_installed_files_are_read_only(tree, tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_catalog(repo / "c.json", [published(repo, "web", "1.0.0", 10)])
    got = runtime.ensure_service("web", "1.0.0", root=tree.root, catalog=str(repo / "c.json"))
    assert os.stat(got.bin_path).st_mode & 0o222 == 0
