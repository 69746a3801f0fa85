"""Startup checks: ``runyard doctor`` on real trees, and the daemon refusing a fatal one.

A clean tree passes; a tampered binary, temp/ open to others, logs/ or data/ that cannot be
written (a file where the directory should be: the tests run as root, which bypasses modes),
an invalid manifest each fail and name what is wrong. The ports check only warns, and a daemon
that adopts its children after ``kill -9`` does not even warn about the ports they hold.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, daemon_refuses, program, runyard_env, wait_for

from archives import archive_record, make_tar, write_catalog
from runyard.runtime.acquisition.ensure import ensure_service
from runyard.runtime.core.manifest import init_tree, load_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.license import license_path

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def doctor(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", "doctor", "--root", str(root), *extra],
        cwd=REPO,
        env=runyard_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def checks(root: Path) -> dict[str, dict]:
    out = doctor(root, "--json")
    return {c["name"]: c for c in json.loads(out.stdout)["checks"]}


def binary_of(tree: RuntimeTree, name: str) -> Path:
    (entry,) = load_manifest(tree).find(name)
    return tree.root / entry.bin_path


def tamper(path: Path) -> None:
    os.chmod(path, 0o755)
    with open(path, "ab") as fh:
        fh.write(b"# one more line\n")


def test_clean_tree_passes(root: Path) -> None:
    build_tree(root, {"web": SLEEPER, "worker": SLEEPER})
    out = doctor(root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("CHECK")
    got = checks(root)
    assert list(got) == [
        "manifest",
        "checksums",
        "bin",
        "temp",
        "data",
        "logs",
        "disk",
        "ports",
        "license",
        "users",
    ]
    for name in ("manifest", "checksums", "bin", "temp", "data", "logs", "license"):
        assert got[name]["status"] == "pass", got[name]
    assert got["checksums"]["detail"] == "2 file(s) match the manifest"


def test_tampered_binary_fails_and_the_daemon_refuses_to_start(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER, "worker": SLEEPER})
    target = binary_of(tree, "worker")
    tamper(target)
    rel = target.relative_to(root).as_posix()
    out = doctor(root)
    assert out.returncode == 1
    assert f"changed: {rel}" in out.stdout
    got = checks(root)["checksums"]
    assert got["status"] == "fail" and got["fatal"] is True
    line = daemon_refuses(root)
    assert line.startswith("runyard: startup check checksums failed: changed: ")
    assert rel in line
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert "refusing to start: startup check checksums failed" in log


def test_vanished_and_appeared_files_fail(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    target = binary_of(tree, "web")
    os.chmod(target.parent, 0o755)
    (target.parent / "planted").write_text("#!/bin/sh\n")
    target.unlink()
    detail = checks(root)["checksums"]["detail"]
    assert "vanished: " in detail and "appeared: " in detail and "planted" in detail


def test_temp_0755_fails_doctor_but_the_daemon_only_warns_and_resets_it(
    root: Path, daemons
) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    os.chmod(tree.temp_dir, 0o755)
    out = doctor(root)
    assert out.returncode == 1
    got = checks(root)["temp"]
    assert got["status"] == "fail" and got["fatal"] is False
    assert "mode 0755, want 0700" in got["detail"]
    daemons(tree).start()
    assert (tree.temp_dir.stat().st_mode & 0o777) == 0o700
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert "startup check temp failed (not fatal)" in log


def test_shared_dirs_as_symlinks_of_a_versioned_install_pass(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    shared = root.parent / "shared"
    shared.mkdir()
    for name in ("data", "logs", "temp"):
        os.replace(tree.root / name, shared / name)
        os.symlink(f"../shared/{name}", tree.root / name)
    out = doctor(root)
    assert out.returncode == 0, out.stdout
    got = checks(root)
    assert got["temp"]["detail"] == f"{tree.temp_dir} -> {shared / 'temp'}: ours, mode 0700"
    os.chmod(shared / "temp", 0o777)
    assert checks(root)["temp"]["fatal"] is True


def test_temp_writable_by_others_is_fatal(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    os.chmod(tree.temp_dir, 0o777)
    assert "lets others write" in daemon_refuses(root)


@pytest.mark.parametrize("where", ["logs", "logs/runyard", "data"])
def test_unwritable_logs_or_data_is_fatal(root: Path, where: str) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    path = tree.root / where
    shutil.rmtree(path, ignore_errors=True)
    path.write_text("a file where a directory should be\n")
    check = "data" if where == "data" else "logs"
    out = doctor(root)
    assert out.returncode == 1
    got = checks(root)[check]
    assert got["fatal"] is True and got["detail"] == f"{path}: not a directory"
    assert daemon_refuses(root) == (
        f"runyard: startup check {check} failed: {path}: not a directory; "
        f"run `runyard doctor --root {root}`"
    )


def test_invalid_manifest_is_fatal(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    doc = json.loads(tree.manifest_path.read_text())
    doc["services"][0]["surprise"] = True
    tree.manifest_path.write_text(json.dumps(doc))
    got = checks(root)
    assert got["manifest"]["status"] == "fail" and "surprise" in got["manifest"]["detail"]
    assert got["checksums"]["status"] == "skip"
    assert "startup check manifest failed" in daemon_refuses(root)


def test_world_writable_bin_fails_doctor_and_is_logged_by_the_daemon(root: Path, daemons) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    target = binary_of(tree, "web")
    os.chmod(target, 0o757)
    got = checks(root)["bin"]
    assert got["status"] == "fail" and "world-writable" in got["detail"]
    assert target.relative_to(root).as_posix() in got["detail"]
    daemons(tree).start()
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert "startup check bin failed (not fatal): world-writable" in log


def test_expired_license_warns(root: Path) -> None:
    tree = build_tree(root, {"web": SLEEPER})
    license_path(tree).parent.mkdir(parents=True, exist_ok=True)
    license_path(tree).write_text("{}")
    out = doctor(root)
    assert out.returncode == 0
    got = checks(root)["license"]
    assert got["status"] == "warn" and "malformed" in got["detail"]


# --- ports -----------------------------------------------------------------------------------


LISTENER = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
print("listening", flush=True)
while True:
    time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_tree(root: Path, port: int) -> RuntimeTree:
    tree = RuntimeTree(root)
    init_tree(tree)
    repo = root.parent / "repo"
    repo.mkdir()
    archive = make_tar(repo / "web-1.0.0.tar.gz", {"bin/web": program(LISTENER)})
    record = archive_record(archive, "web", "1.0.0", defaultPorts=[{"name": "http", "port": port}])
    write_catalog(repo / "catalog.json", [record])
    ensure_service("web", "1.0.0", root=root, catalog=str(repo / "catalog.json"), progress=False)
    (root.parent / "runyard.toml").write_text(
        textwrap.dedent(
            f"""\
            root = "{root.name}"
            [services.web]
            env = {{ PORT = "{port}" }}
            """
        )
    )
    return tree


def test_a_busy_port_only_warns(root: Path) -> None:
    port = free_port()
    port_tree(root, port)
    assert checks(root)["ports"]["status"] == "pass"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        out = doctor(root)
        assert out.returncode == 0
        got = checks(root)["ports"]
        assert got["status"] == "warn"
        assert got["detail"] == f"in use on 127.0.0.1: {port} (web.http)"


def test_daemon_adopting_after_kill9_does_not_warn_about_its_childrens_ports(
    root: Path, daemons
) -> None:
    port = free_port()
    tree = port_tree(root, port)
    first = daemons(tree).start()
    log = tree.logs_dir / "web" / "web.log"
    wait_for(lambda: log.exists() and "listening" in log.read_text(), what="web listening")
    first.kill9()
    daemon_log = tree.logs_dir / "runyard" / "daemon.log"
    daemon_log.unlink()
    second = daemons(tree).start()
    with second.client() as c:
        (web,) = c.status().services
    text = daemon_log.read_text()
    assert f"web: adopted pid {web.pid}" in text
    assert "startup check ports" not in text
    assert "startup checks: " in text
    # doctor, run beside the daemon, sees the port held (by our own child): a warning.
    assert checks(root)["ports"]["status"] == "warn"
    assert doctor(root).returncode == 0


def test_checksums_cover_the_whole_installed_bundle(tmp_path: Path) -> None:
    """Finding 7: in an installed bundle, doctor checks bundle.files too (config/, schemas/,
    ...) and reports changed, vanished and appeared files under the dirs the bundle owns, but
    not Runyard's own config/runyard (the license placed after install)."""
    import time

    from test_bundle_kit import make_tree

    from runyard.runtime.bundle import install_bundle, pack_bundle
    from runyard.runtime.ops.doctor import run_checks

    src = make_tree(tmp_path / "src", version="v1")
    bundle = pack_bundle(src, tmp_path / "b-1.0.0.tar.gz", version="1.0.0").path
    install_bundle(bundle, tmp_path / "prefix")
    tree = RuntimeTree(tmp_path / "prefix" / "current")
    files = load_manifest(tree).bundle.files
    assert any(rel.startswith("schemas/") for rel in files)
    assert any(rel.startswith("config/") for rel in files)

    def checksums() -> dict:
        return next(c for c in run_checks(tree).checks if c.name == "checksums").to_dict()

    license_path(tree).write_text("{}")  # config/runyard: the operator's, never drift
    start = time.perf_counter()
    clean = checksums()
    took = time.perf_counter() - start
    assert clean["status"] == "pass", clean
    assert took < 2.0, took
    checked = int(clean["detail"].split()[0])
    assert checked >= len(files) - 1

    real = tree.root.resolve()
    config_file = next(p for p in sorted((real / "config").rglob("*")) if p.is_file())
    config_file.write_text(config_file.read_text() + " ")
    schema = next(p for p in sorted((real / "schemas").iterdir()) if p.is_file())
    schema.unlink()
    (real / "schemas" / "planted.json").write_text("{}")
    (real / "bin" / "extra-tool").write_text("#!/bin/sh\n")
    got = checksums()
    assert got["status"] == "fail" and got["fatal"] is True
    rel = config_file.relative_to(real).as_posix()
    assert f"changed: {rel}" in got["detail"]
    assert f"vanished: schemas/{schema.name}" in got["detail"]
    assert "appeared: schemas/planted.json" in got["detail"]
    assert "appeared: bin/extra-tool" in got["detail"]
    assert "config/runyard" not in got["detail"]
    out = doctor(tree.root)
    assert out.returncode == 1 and "appeared: schemas/planted.json" in out.stdout


def plant_symlinks_and_subdirs(tree: RuntimeTree) -> tuple[Path, dict[str, str]]:
    """In web's install dir: listed symlinks (to a file, a dir, nowhere), a subdir with a
    changed and an unlisted file, unlisted symlinks (to a file, a dir); worker's install dir
    moved behind a symlinked bin/worker. Returns web's install dir and its listed files."""
    import msgspec

    from runyard.runtime.core.digest import hash_file
    from runyard.runtime.core.manifest import save_manifest

    manifest = load_manifest(tree)
    web = manifest.find("web")[0]
    inst = tree.root / web.install_rel
    os.chmod(inst, 0o755)
    os.chmod(inst / "bin", 0o755)
    (inst / "sub" / "deep").mkdir(parents=True)
    (inst / "sub" / "ok").write_text("ok\n")
    (inst / "sub" / "deep" / "file").write_text("was\n")
    was = hash_file(inst / "sub" / "deep" / "file")[0]
    (inst / "sub" / "deep" / "file").write_text("now\n")
    (inst / "sub" / "deep" / "planted").write_text("x\n")
    links = [("bin/linked", "web"), ("bin/dirlink", "../sub"), ("bin/dangling", "nowhere")]
    for name, target in [*links, ("sub/symlink", "ok"), ("sub/dl", "deep")]:
        os.symlink(target, inst / name)
    files = {**web.files, "sub/ok": hash_file(inst / "sub" / "ok")[0], "sub/deep/file": was}
    files |= {name: web.files["bin/web"] for name, _ in links}
    manifest.services[manifest.services.index(web)] = msgspec.structs.replace(web, files=files)
    save_manifest(tree, manifest)
    (tree.root / "moved").mkdir()
    os.rename(tree.root / "bin" / "worker", tree.root / "moved" / "worker")
    os.symlink("../moved/worker", tree.root / "bin" / "worker")
    return inst, files


def test_one_walk_of_bin_reports_symlinks_subdirs_and_modes_as_two_walks_did(root: Path) -> None:
    """Issue 16: the checksums and bin checks share one walk of bin/ (``drift.scan_dir``). What
    each reports is what their own os.walk found: a listed symlink is not a regular file (one to
    a dir: vanished), an unlisted symlink never appeared, nothing under a symlinked dir counts,
    an install dir behind a symlinked bin/NAME is still hashed, and the bin check names dirs
    before files, depth first, and no symlink (each is 0777)."""
    from runyard.runtime.ops.doctor import run_checks

    tree = build_tree(root, {"web": SLEEPER, "worker": SLEEPER})
    inst, _ = plant_symlinks_and_subdirs(tree)
    at = inst.relative_to(tree.root).as_posix()

    def got(name: str) -> tuple[str, str]:
        check = next(c for c in run_checks(tree).checks if c.name == name)
        return check.status, check.detail

    assert got("checksums") == (
        "fail",
        f"not a regular file: {at}/bin/dangling, vanished: {at}/bin/dirlink, "
        f"not a regular file: {at}/bin/linked, changed: {at}/sub/deep/file, "
        f"appeared: {at}/sub/deep/planted",
    )
    (inst / "sub" / "deep" / "file").write_text("was\n")
    os.unlink(inst / "sub" / "deep" / "planted")
    assert got("checksums")[1] == (
        f"not a regular file: {at}/bin/dangling, vanished: {at}/bin/dirlink, "
        f"not a regular file: {at}/bin/linked"
    )
    for name in ("linked", "dirlink", "dangling"):
        os.unlink(inst / "bin" / name)
        (inst / "bin" / name).write_bytes((inst / "bin" / "web").read_bytes())
    assert got("checksums") == ("pass", "7 file(s) match the manifest")  # worker's one too
    assert got("bin")[0] == "pass"
    os.chmod(inst / "sub", 0o775)
    os.chmod(inst / "sub" / "deep" / "file", 0o757)
    assert got("bin") == ("fail", f"world-writable: {at}/sub/deep/file (0757)")
    os.chmod(inst / "sub" / "deep" / "file", 0o664)
    os.chmod(inst / "bin", 0o775)
    os.chmod(inst / "sub" / "deep", 0o770)
    assert got("bin") == (
        "warn",
        f"group-writable: {at}/bin, {at}/sub, {at}/sub/deep, {at}/sub/deep/file",
    )
