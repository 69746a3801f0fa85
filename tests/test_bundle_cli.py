"""``runyard bundle ...`` end to end as real subprocesses: output, --json, exit codes; and a real
daemon brought up on an installed prefix with ``RUNYARD_ROOT=DIR/current runyard up``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from daemonkit import wait_for
from test_bundle_kit import Raw, bin_file, cli, make_tree, rewrite


@pytest.fixture
def work(tmp_path: Path) -> Path:
    make_tree(tmp_path / "src")
    return tmp_path


@pytest.mark.timeout(300)
def test_pack_verify_install_upgrade_rollback(work: Path) -> None:
    root = str(work / "src" / "rt")
    out = cli("keys", "gen", "--out", "release", cwd=work)
    assert out.returncode == 0, out.stderr

    # usage errors: 2
    out = cli("bundle", "pack", "--root", root, "-o", "rt.tar.gz", cwd=work)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "runyard: no bundle version: pass --version V (a semantic version such as 1.4.0), "
        "or set `version` in the project file"
    )
    out = cli("bundle", "pack", "--root", root, "-o", "rt.tar.gz", "--version", "1.0", cwd=work)
    assert out.returncode == 2 and "not a semantic version" in out.stderr

    # pack twice: the same sha256, printed and in --json
    args = ["bundle", "pack", "--root", root, "--version", "1.0.0", "--sign", "release.key"]
    first = cli(*args, "-o", "a/rt-1.0.0.tar.gz", cwd=work)
    assert first.returncode == 0, first.stderr
    assert "signed by   " in first.stdout
    second = cli(*args, "-o", "b/rt-1.0.0.tar.gz", "--json", cwd=work)
    packed = json.loads(second.stdout)
    assert packed["status"] == "packed" and packed["version"] == "1.0.0"
    digest = hashlib.sha256((work / "a" / "rt-1.0.0.tar.gz").read_bytes()).hexdigest()
    assert packed["sha256"] == digest and f"sha256      {digest}" in first.stdout

    # verify: 0 with the right key, 1 with another, one line per failure
    out = cli("bundle", "verify", "a/rt-1.0.0.tar.gz", "--pubkey", "release.pub", cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "bundle OK: a/rt-1.0.0.tar.gz 1.0.0 (web, worker)"
    cli("keys", "gen", "--out", "other", cwd=work)
    out = cli("bundle", "verify", "a/rt-1.0.0.tar.gz", "--pubkey", "other.pub", cwd=work)
    assert out.returncode == 1
    assert [ln for ln in out.stdout.splitlines() if ln.startswith("FAILED")] == [
        ln for ln in out.stdout.splitlines() if "signature" in ln
    ]
    # signature and attestation-signature (the in-toto sidecar is signed by the same key)
    assert out.stderr.strip() == "bundle INVALID: 2 check(s) failed: a/rt-1.0.0.tar.gz"

    def tamper(members: list[Raw]) -> list[Raw]:
        for m in members:
            if m.name.endswith(("/bin/web", "worker/env.toml")):
                m.data += b"\n# changed\n"
        return members

    rewrite(work / "a" / "rt-1.0.0.tar.gz", work / "bad.tar.gz", tamper)
    out = cli("bundle", "verify", "bad.tar.gz", "--json", cwd=work)
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["ok"] is False
    assert sorted(c["detail"].split(":")[0] for c in report["checks"] if not c["ok"]) == [
        "bin/web/1.0.0/"
        + bin_file(work / "src" / "rt", "web")
        .relative_to(work / "src" / "rt" / "bin" / "web" / "1.0.0")
        .as_posix(),
        "config/worker/env.toml",
    ]
    # The manifest itself is untouched, so its signature still holds: the members do not.
    assert report["signature"] == "self-consistent"

    # install with the key; a second version; rollback
    prefix = str(work / "opt")
    out = cli("bundle", "install", "bad.tar.gz", "--prefix", prefix, cwd=work)
    assert out.returncode == 1 and out.stderr.startswith("runyard: bad.tar.gz: ")
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli(
        "bundle",
        "install",
        "a/rt-1.0.0.tar.gz",
        "--prefix",
        prefix,
        "--pubkey",
        "other.pub",
        cwd=work,
    )
    assert out.returncode == 1 and "not by the --pubkey key" in out.stderr
    out = cli(
        "bundle",
        "install",
        "a/rt-1.0.0.tar.gz",
        "--prefix",
        prefix,
        "--pubkey",
        "release.pub",
        cwd=work,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"install: 1.0.0 is now current in {prefix}")
    out = cli("bundle", "pack", "--root", root, "--version", "2.0.0", "-o", "rt-2.zip", cwd=work)
    assert out.returncode == 0, out.stderr
    out = cli("bundle", "install", "rt-2.zip", "--prefix", prefix, cwd=work)
    assert out.returncode == 1
    assert "major upgrade from the current 1.0.0" in out.stderr and "--migrate" in out.stderr
    out = cli("bundle", "install", "rt-2.zip", "--prefix", prefix, "--migrate", "--json", cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["action"] == "upgrade"
    assert "note: the bundle is unsigned" not in out.stderr  # --json: the data says it
    out = cli("bundle", "ls", "--prefix", prefix, cwd=work)
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "STATE", "CREATED", "SIGNED", "BY", "SERVICES"]
    assert lines[1].split()[:2] == ["1.0.0", "previous"] and lines[2].split()[:2] == [
        "2.0.0",
        "current",
    ]
    out = cli("bundle", "rollback", "--prefix", prefix, cwd=work)
    assert out.returncode == 0
    assert out.stdout.strip() == f"rolled back: 1.0.0 is now current in {prefix} (was 2.0.0)"
    assert os.readlink(work / "opt" / "current") == "versions/1.0.0"


def test_secrets_refused_with_one_line_and_json(work: Path) -> None:
    root = str(work / "src" / "rt")
    conf = work / "src" / "rt" / "config" / "web"
    (conf / "app.ini").write_text("[db]\npassword = s3cr3t-value\n")
    (conf / ".env").write_text("X=1\n")
    out = cli("bundle", "pack", "--root", root, "--version", "1.0.0", "-o", "b.zip", cwd=work)
    assert out.returncode == 1
    assert len(out.stderr.splitlines()) == 1
    assert "config/web/.env: an .env file" in out.stderr
    assert "config/web/app.ini: password holds a value" in out.stderr
    assert "s3cr3t" not in out.stderr
    out = cli(
        "bundle", "pack", "--root", root, "--version", "1.0.0", "-o", "b.zip", "--json", cwd=work
    )
    findings = json.loads(out.stdout)["findings"]
    assert [f["path"] for f in findings] == ["config/web/.env", "config/web/app.ini"]
    out = cli(
        "bundle",
        "pack",
        "--root",
        root,
        "--version",
        "1.0.0",
        "-o",
        "b.zip",
        "--allow",
        "config/web/.env",
        "--allow",
        "config/web/app.ini",
        cwd=work,
    )
    assert out.returncode == 0, out.stderr
    assert "allowed     config/web/.env, config/web/app.ini" in out.stdout
    assert not (work / "b.zip").exists() or out.returncode == 0


@pytest.mark.timeout(180)
def test_runyard_up_on_an_installed_prefix() -> None:
    """RUNYARD_ROOT=DIR/current runyard up: the daemon runs the bundle's service, its cwd in the
    shared data/, its logs in the shared logs/; after an upgrade the same daemon is found
    through the new current (temp/ is shared), and shuts down cleanly."""
    base = Path(tempfile.mkdtemp(prefix="ry-"))  # short: ipc sockets live under DIR/temp
    started: list[int] = []
    try:
        make_tree(base / "src", services=("web",))
        assert (
            cli(
                "bundle",
                "pack",
                "--root",
                str(base / "src" / "rt"),
                "--version",
                "1.0.0",
                "-o",
                "rt.tar.gz",
                cwd=base,
            ).returncode
            == 0
        )
        prefix = base / "opt"
        out = cli("bundle", "install", "rt.tar.gz", "--prefix", str(prefix), cwd=base)
        assert out.returncode == 0, out.stderr
        work = base / "elsewhere"
        work.mkdir()  # no runyard.toml here: the tree alone runs with defaults
        env = {"RUNYARD_ROOT": str(prefix / "current")}
        out = cli("up", "--json", cwd=work, env=env, timeout=60)
        assert out.returncode == 0, out.stderr + _daemon_err(prefix)
        started.append(json.loads(out.stdout)["pid"])

        def running() -> bool:
            status = cli("status", "--json", cwd=work, env=env)
            services = json.loads(status.stdout) if status.returncode == 0 else []
            return any(s.get("state") == "running" for s in _services(services))

        wait_for(running, 30, "web to run")
        log = prefix / "logs" / "web"
        wait_for(
            lambda: any("web 1.0.0 up" in p.read_text() for p in log.glob("*")) or None,
            15,
            "web's output in the shared logs/",
        )
        pid = int(
            next(
                s for s in _services(json.loads(cli("status", "--json", cwd=work, env=env).stdout))
            )["pid"]
        )
        assert os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(prefix / "data" / "web")

        # An upgrade switches current under the running daemon; it is still found there.
        assert (
            cli(
                "bundle",
                "pack",
                "--root",
                str(base / "src" / "rt"),
                "--version",
                "1.0.1",
                "-o",
                "rt-1.0.1.tar.gz",
                cwd=base,
            ).returncode
            == 0
        )
        assert (
            cli(
                "bundle", "install", "rt-1.0.1.tar.gz", "--prefix", str(prefix), cwd=base
            ).returncode
            == 0
        )
        out = cli("status", cwd=work, env=env)
        assert out.returncode == 0, out.stderr
        out = cli("shutdown", cwd=work, env=env, timeout=90)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: not _alive(started[0]), 30, "the daemon to exit")
    finally:
        for pid in started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        _kill_recorded(prefix / "temp" / "state.json")
        shutil.rmtree(base, ignore_errors=True)


def _services(status: object) -> list[dict]:
    if isinstance(status, dict):
        return list(status.get("services", []))
    return list(status) if isinstance(status, list) else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        return state != "Z"
    return True


def _daemon_err(prefix: Path) -> str:
    path = prefix / "logs" / "runyard" / "daemon.stderr"
    return path.read_text()[-2000:] if path.exists() else ""


def _kill_recorded(state_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(state_file.read_text())
        for service in state["services"].values():
            if service.get("pgid"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service["pgid"], signal.SIGKILL)
