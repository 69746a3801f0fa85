"""runtime.bundle.install_bundle and rollback: the layout of a prefix, the version policy, the
atomic switch (a SIGKILL mid-install leaves ``current`` as it was), the lock, the audit trail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from daemonkit import wait_for
from test_bundle_kit import REPO, bin_file, make_tree

from runyard.runtime.acquisition.drift import verify_installed
from runyard.runtime.bundle import (
    BundleError,
    Prefix,
    decide_action,
    install_bundle,
    pack_bundle,
    rollback,
)
from runyard.runtime.core.manifest import load_manifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.audit import audit_path, verify_chain

FORMATS = ["tar.gz", "zip"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles of two trees whose programs differ: v1 as 1.0.0 (both formats) and 1.1.0-other;
    v2 as 1.1.0, 1.2.0, 2.0.0 and 1.0.0-other (same versions, other contents)."""
    base = tmp_path_factory.mktemp("bundles")
    one = make_tree(base / "one", version="v1")
    two = make_tree(base / "two", version="v2")
    out = {}
    for fmt in FORMATS:
        out[f"1.0.0.{fmt}"] = Path(
            pack_bundle(one, base / f"one-1.0.0.{fmt}", version="1.0.0").path
        )
    for version in ("1.1.0", "1.2.0", "2.0.0"):
        out[version] = Path(pack_bundle(two, base / f"two-{version}.zip", version=version).path)
    out["1.0.0-other"] = Path(pack_bundle(two, base / "two-1.0.0.tar.gz", version="1.0.0").path)
    out["1.1.0-other"] = Path(pack_bundle(one, base / "one-1.1.0.tar.gz", version="1.1.0").path)
    return out


def program_text(root: Path, name: str = "web") -> str:
    return bin_file(root, name).read_text()


@pytest.mark.parametrize("fmt", FORMATS)
def test_install_lays_out_a_prefix_whose_current_is_a_tree(
    bundles, tmp_path: Path, fmt: str
) -> None:
    prefix = tmp_path / "prefix"
    result = install_bundle(bundles[f"1.0.0.{fmt}"], prefix)
    assert (result.action, result.version, result.previous) == ("install", "1.0.0", None)
    assert result.signature == "unsigned"
    assert os.readlink(prefix / "current") == "versions/1.0.0"
    assert not (prefix / "previous").exists()
    for name in ("data", "logs", "cache", "temp"):
        assert (prefix / name).is_dir() and not (prefix / name).is_symlink()
        assert os.readlink(prefix / "versions" / "1.0.0" / name) == f"../../{name}"
    assert stat.S_IMODE((prefix / "temp").stat().st_mode) == 0o700
    current = RuntimeTree(prefix / "current")
    manifest = load_manifest(current)
    assert [s.name for s in manifest.services] == ["web", "worker"]
    assert "web v1 up" in program_text(current.root)
    assert verify_installed(current).ok
    program = bin_file(current.root, "web")
    assert stat.S_IMODE(program.stat().st_mode) == 0o555  # bin/ is read-only once installed
    assert (current.config_dir / "web" / "schemas" / "input.schema.json").is_file()
    # The shared dirs count as inside the tree, so a service's cwd in data/ is accepted.
    assert current.contains(current.data_dir / "web")
    assert current.contains(current.temp_dir / "control.sock")
    assert not current.contains(tmp_path)
    assert [p.name for p in (prefix / "versions").iterdir()] == ["1.0.0"]


def test_upgrade_then_rollback_returns_the_old_binaries_and_keeps_data(
    bundles, tmp_path: Path
) -> None:
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.tar.gz"], prefix)
    state = prefix / "current" / "data" / "web" / "state.txt"
    state.parent.mkdir(parents=True)
    state.write_text("written by 1.0.0\n")
    up = install_bundle(bundles["1.1.0"], prefix)
    assert (up.action, up.previous) == ("upgrade", "1.0.0")
    assert "web v2 up" in program_text(prefix / "current")
    assert state.read_text() == "written by 1.0.0\n"
    assert os.readlink(prefix / "previous") == "versions/1.0.0"

    back = rollback(prefix)
    assert (back.version, back.previous) == ("1.0.0", "1.1.0")
    assert "web v1 up" in program_text(prefix / "current")
    assert state.read_text() == "written by 1.0.0\n"
    assert os.readlink(prefix / "previous") == "versions/1.1.0"
    # Rolling back again goes forward: previous and current swap each time.
    assert rollback(prefix).version == "1.1.0"
    assert [r["version"] for r in Prefix(prefix).describe()] == ["1.0.0", "1.1.0"]

    log = audit_path(prefix / "logs")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["action"], e["target"], e["result"]) for e in entries] == [
        ("install", "1.0.0", "ok"),
        ("upgrade", "1.1.0", "ok"),
        ("rollback", "1.0.0", "ok"),
        ("rollback", "1.1.0", "ok"),
    ]
    assert entries[1]["detail"]["from"] == "1.0.0"
    assert verify_chain(log).problems == []


def test_rollback_without_a_previous_version(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    with pytest.raises(BundleError, match=r"no bundle installed here \(no versions/\)"):
        rollback(prefix)
    install_bundle(bundles["1.0.0.zip"], prefix)
    with pytest.raises(
        BundleError, match=r"no previous version to roll back to \(current is 1.0.0\)"
    ):
        rollback(prefix)
    assert os.readlink(prefix / "current") == "versions/1.0.0"
    log = audit_path(prefix / "logs").read_text().splitlines()
    assert json.loads(log[-1])["result"] == "failed"


def test_a_major_upgrade_needs_migrate(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.2.0"], prefix)
    with pytest.raises(BundleError) as info:
        install_bundle(bundles["2.0.0"], prefix)
    assert str(info.value) == (
        "2.0.0 is a major upgrade from the current 1.2.0: its data/ may need migrating; "
        "pass --migrate to install it"
    )
    assert os.readlink(prefix / "current") == "versions/1.2.0"
    assert not (prefix / "versions" / "2.0.0").exists()
    result = install_bundle(bundles["2.0.0"], prefix, migrate=True)
    assert (result.action, result.previous) == ("upgrade", "1.2.0")


def test_a_downgrade_needs_force_and_rollback_is_the_way_back(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.2.0"], prefix)
    with pytest.raises(BundleError, match=r"1.1.0 is older than the current 1.2.0: .*--force"):
        install_bundle(bundles["1.1.0"], prefix)
    result = install_bundle(bundles["1.1.0"], prefix, force=True)
    assert (result.action, result.previous) == ("downgrade", "1.2.0")


def test_the_same_version_again(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.tar.gz"], prefix)
    # The same bundle (in either format: the manifest is the same) changes nothing.
    again = install_bundle(bundles["1.0.0.zip"], prefix)
    assert again.action == "unchanged"
    # Other contents under the current version: never replaced in place, even with --force.
    with pytest.raises(BundleError, match=r"1\.0\.0 is current .* cannot be replaced in place"):
        install_bundle(bundles["1.0.0-other"], prefix, force=True)
    install_bundle(bundles["1.1.0"], prefix)
    rollback(prefix)
    # 1.1.0 is installed but not current: an identical bundle switches to it, no extraction...
    switched = install_bundle(bundles["1.1.0"], prefix)
    assert (switched.action, switched.previous) == ("switch", "1.0.0")
    rollback(prefix)
    # ...one with other contents is refused, and replaces it with --force.
    with pytest.raises(BundleError, match=r"1\.1\.0 is already installed .* pass --force"):
        install_bundle(bundles["1.1.0-other"], prefix)
    assert "web v2 up" in program_text(prefix / "versions" / "1.1.0")
    replaced = install_bundle(bundles["1.1.0-other"], prefix, force=True)
    assert (replaced.action, replaced.previous) == ("upgrade", "1.0.0")
    assert "web v1 up" in program_text(prefix / "current")
    assert sorted(p.name for p in (prefix / "versions").iterdir()) == ["1.0.0", "1.1.0"]


@pytest.mark.parametrize(
    ("current", "new", "migrate", "force", "action"),
    [
        (None, "1.0.0", False, False, "install"),
        ("1.0.0", "1.0.1", False, False, "upgrade"),
        ("1.0.0", "1.5.0", False, False, "upgrade"),
        ("1.9.0", "2.0.0", True, False, "upgrade"),
        ("1.0.0", "1.0.0", False, False, "reinstall"),
        ("1.0.0", "0.9.0", False, True, "downgrade"),
        ("2.0.0", "1.0.0", False, True, "downgrade"),
        ("1.0.0", "1.0.0+build.2", False, True, "reinstall"),
        ("1.0.0-rc.1", "1.0.0", False, False, "upgrade"),
    ],
)
def test_version_policy(current, new, migrate, force, action) -> None:
    assert decide_action(current, new, migrate=migrate, force=force) == action


def test_concurrent_installs_take_turns(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    script = (
        "import sys, json; from runyard.runtime.bundle import install_bundle;"
        "r = install_bundle(sys.argv[1], sys.argv[2]); print(r.action)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(bundles["1.0.0.tar.gz"]), str(prefix)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(out.strip())
    assert sorted(results) == ["install", "unchanged", "unchanged"]
    assert [p.name for p in (prefix / "versions").iterdir()] == ["1.0.0"]
    assert len(audit_path(prefix / "logs").read_text().splitlines()) == 1


@pytest.mark.timeout(120)
def test_sigkill_during_install_leaves_current_as_it_was(bundles, tmp_path: Path) -> None:
    """The bundle comes through a FIFO that the test feeds only half of, so the installer is
    certainly mid-extraction (files written into its temp dir) when it gets SIGKILL."""
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.tar.gz"], prefix)
    big = make_tree(tmp_path / "big", version="big")
    blob = big.config_dir / "web" / "blob.bin"
    blob.write_bytes(os.urandom(8 << 20))
    bundle = Path(pack_bundle(big, tmp_path / "big-1.1.0.tar.gz", version="1.1.0").path)
    data = bundle.read_bytes()
    fifo = tmp_path / "pipe-1.1.0.tar.gz"
    os.mkfifo(fifo)
    done = threading.Event()

    def feed() -> None:
        # open() blocks until the installer opens the FIFO; the write ends with a broken pipe
        # when the installer is killed before it has read the whole half.
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as w:
            w.write(data[: len(data) // 2])
            w.flush()
            done.wait(60)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runyard.daemon",
            "bundle",
            "install",
            str(fifo),
            "--prefix",
            str(prefix),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:

        def writing() -> list[Path]:
            assert proc.poll() is None, proc.communicate()
            temps = list((prefix / "versions").glob(".1.1.0.tmp-*"))
            return [t for t in temps if (t / "bin").is_dir()]

        temps = wait_for(writing, 30, "the install to write into its temp dir")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        done.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        feeder.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert os.readlink(prefix / "current") == "versions/1.0.0"
    assert "web v1 up" in program_text(prefix / "current")
    assert not (prefix / "versions" / "1.1.0").exists()
    assert temps[0].exists()  # left behind: the next install removes it

    result = install_bundle(bundle, prefix)
    assert (result.action, result.previous) == ("upgrade", "1.0.0")
    assert result.removed_stale == [temps[0].name]
    assert sorted(p.name for p in (prefix / "versions").iterdir()) == ["1.0.0", "1.1.0"]
    assert "web big up" in program_text(prefix / "current")
    assert (prefix / "current" / "config" / "web" / "blob.bin").read_bytes() == blob.read_bytes()


def test_a_failed_install_leaves_nothing_behind(bundles, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.zip"], prefix)
    bad = tmp_path / "bad-1.1.0.zip"
    from test_bundle_kit import rewrite

    from archives import read_raw_archive

    def tamper(members):
        members[-1].data = members[-1].data[:-1] + b"x"  # same size: found by its sha256
        return members

    rewrite(bundles["1.1.0"], bad, tamper)
    assert read_raw_archive(bad)[-1].kind == "file"
    with pytest.raises(BundleError, match=r"differs from manifest\.json"):
        install_bundle(bad, prefix)
    assert os.readlink(prefix / "current") == "versions/1.0.0"
    assert [p.name for p in (prefix / "versions").iterdir()] == ["1.0.0"]
    last = json.loads(audit_path(prefix / "logs").read_text().splitlines()[-1])
    assert (last["action"], last["target"], last["result"]) == ("install", "1.1.0", "failed")


def test_contains_accepts_shared_top_dirs_only(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "data" / "web").mkdir(parents=True)
    root = tmp_path / "v1"
    root.mkdir()
    (root / "data").symlink_to("../shared/data")
    (root / "logs").symlink_to("..")  # a link to the tree's parent would let everything in
    (root / "cache").symlink_to("/")
    tree = RuntimeTree(root)
    assert tree.contains(root / "data" / "web")
    assert tree.contains(shared / "data" / "web")
    assert not tree.contains(shared)
    assert not tree.contains(root / "logs" / "shared")
    assert not tree.contains(root / "cache" / "etc")
    (shared / "data" / "web" / "out").symlink_to("/etc")
    assert not tree.contains(root / "data" / "web" / "out")


def test_shared_data_may_live_elsewhere(bundles, tmp_path: Path) -> None:
    """DIR/data as a symlink to another disk is kept; a dangling one is refused."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    disk = tmp_path / "disk" / "data"
    disk.mkdir(parents=True)
    (prefix / "data").symlink_to(disk)
    install_bundle(bundles["1.0.0.zip"], prefix)
    current = RuntimeTree(prefix / "current")
    assert os.path.realpath(current.data_dir) == str(disk)
    assert current.contains(current.data_dir / "web")
    other = tmp_path / "other"
    other.mkdir()
    (other / "logs").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"other/logs: a dangling symlink"):
        install_bundle(bundles["1.0.0.zip"], other)


def test_license_survives_upgrade_and_rollback(bundles, tmp_path: Path) -> None:
    """Finding 4: config/runyard/ (license, issuer keys, remembered catalog) is shared by every
    version of a prefix, so an upgrade or a rollback keeps the license; data/ is kept too."""
    import datetime
    import shutil

    from runyard.runtime.ops.license import issuer_dir, license_path, sign_license, tree_license
    from runyard.runtime.signing.keys import generate_signing_key

    today = datetime.datetime.now(datetime.UTC).date()
    doc = {
        "tier": "enterprise",
        "licensee": "ACME Test GmbH",
        "issued": (today - datetime.timedelta(days=1)).isoformat(),
        "expires": (today + datetime.timedelta(days=365)).isoformat(),
        "limits": {"max_services": 500},
    }
    keys = generate_signing_key(tmp_path / "keys" / "issuer")
    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.tar.gz"], prefix)
    current = RuntimeTree(prefix / "current")
    issuer_dir(current).mkdir(parents=True)
    shutil.copy(keys.public, issuer_dir(current) / "vendor.pub")
    license_path(current).write_text(json.dumps(sign_license(doc, keys.private)))
    state = current.data_dir / "web" / "state.txt"
    state.parent.mkdir(parents=True)
    state.write_text("kept\n")
    assert (tree_license(current).status, tree_license(current).tier) == ("valid", "enterprise")
    assert (prefix / "config" / "runyard" / "license.json").is_file()
    assert os.readlink(prefix / "versions" / "1.0.0" / "config" / "runyard") == (
        "../../../config/runyard"
    )

    install_bundle(bundles["1.1.0"], prefix)
    assert "web v2 up" in program_text(prefix / "current")
    status = tree_license(RuntimeTree(prefix / "current"))
    assert (status.status, status.tier) == ("valid", "enterprise"), status.reason
    assert state.read_text() == "kept\n"

    rollback(prefix)
    assert "web v1 up" in program_text(prefix / "current")
    status = tree_license(RuntimeTree(prefix / "current"))
    assert (status.status, status.tier) == ("valid", "enterprise"), status.reason
    assert state.read_text() == "kept\n"
    # The link is no drift: the installed tree still verifies.
    assert verify_installed(RuntimeTree(prefix / "current")).ok


def test_license_of_an_install_before_sharing_is_migrated_on_upgrade(
    bundles, tmp_path: Path
) -> None:
    """Finding 4: a version installed before config/runyard was shared holds a real directory;
    the next upgrade moves it to the shared place instead of losing it."""
    import shutil

    prefix = tmp_path / "prefix"
    install_bundle(bundles["1.0.0.zip"], prefix)
    link = prefix / "versions" / "1.0.0" / "config" / "runyard"
    shared = prefix / "config" / "runyard"
    # Recreate the old layout: a real config/runyard inside the version, nothing shared.
    link.unlink()
    shutil.rmtree(shared)
    link.mkdir()
    (link / "catalog.json").write_text('{"source": "file:///catalog.json"}\n')
    install_bundle(bundles["1.1.0"], prefix)
    assert (prefix / "current" / "config" / "runyard" / "catalog.json").read_text() == (
        '{"source": "file:///catalog.json"}\n'
    )
    assert (shared / "catalog.json").is_file()
    assert os.readlink(link) == "../../../config/runyard"


# --- regressions ----------------------------------------------------------------------------


def _claims(tmp_path: Path, fmt: str, claimed: int) -> Path:
    """A valid unsigned bundle of one small file whose manifest lists it at ``claimed`` bytes."""
    import hashlib

    from archives import Raw, make_raw_archive

    good = Raw("config/web/a.toml", b"a = 1\n")
    doc = {
        "version": "1",
        "services": [],
        "bundle": {
            "createdAt": "2024-01-01T00:00:00Z",
            "source": "test",
            "signature": "",
            "version": "1.0.0",
            "files": {good.name: hashlib.sha256(good.data).hexdigest()},
            "sizes": {good.name: claimed},
        },
    }
    manifest = Raw("manifest.json", json.dumps(doc).encode())
    return make_raw_archive(tmp_path / f"claims.{fmt}", [manifest, good])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bundle_bigger_than_the_free_space_is_refused_before_extracting(
    tmp_path: Path, fmt: str
) -> None:
    """Nothing checked free space: a bundle that cannot fit was extracted until the disk was
    full. Its signed sizes are now summed against the prefix's filesystem first."""
    prefix = tmp_path / "prefix"
    bundle = _claims(tmp_path, fmt, 10**15)  # 909 TiB: more than any test box has
    with pytest.raises(BundleError) as info:
        install_bundle(bundle, prefix)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"claims.{fmt}: needs 909.5 TiB in {prefix} but only ")
    assert text.endswith(" is free there; free some space and retry")
    assert not (prefix / "current").exists()
    assert not (prefix / "versions").exists() or list((prefix / "versions").iterdir()) == []
    last = json.loads(audit_path(prefix / "logs").read_text().splitlines()[-1])
    assert (last["action"], last["target"], last["result"]) == ("install", "1.0.0", "failed")
    # What fits installs; a member whose header disagrees with its listed size never does.
    install_bundle(_claims(tmp_path / "ok", fmt, 6), prefix)
    assert (prefix / "current" / "config" / "web" / "a.toml").read_bytes() == b"a = 1\n"
    with pytest.raises(BundleError, match=r"config/web/a.toml: the archive says 6 bytes, .* 5$"):
        install_bundle(_claims(tmp_path / "short", fmt, 5), tmp_path / "other")
    assert list((tmp_path / "other" / "versions").iterdir()) == []
