"""The `runyard runtime ...` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archives import publish, write_catalog
from runyard.runtime.core.platform import current_arch, current_os

PLATFORM = f"{current_os()}-{current_arch()}"


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    full_env["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    write_catalog(
        repo / "catalog.json",
        [
            publish(
                repo,
                "web",
                "1.0.0",
                env={"GREETING": "hi"},
                defaultPorts=[{"name": "http", "port": 9000}],
            ),
            publish(repo, "web", "1.1.0", env={"GREETING": "hi"}),
            publish(repo, "worker", "0.3.0", fmt="zip"),
        ],
    )
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_init_ensure_ls_env_du_verify(workdir: Path) -> None:
    catalog = str(workdir.parent / "repo" / "catalog.json")
    out = run("runtime", "init", "runtime", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "initialised runtime tree at" in out.stdout

    out = run("runtime", "ensure", "web", "1.x", "--catalog", catalog, cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert f"installed web 1.1.0 {PLATFORM}" in out.stdout

    out = run("runtime", "ensure", "web", "1.0.0", "--json", cwd=workdir)  # remembered catalog
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["version"] == "1.0.0"

    out = run("runtime", "ensure", "worker", cwd=workdir)
    assert out.returncode == 0, out.stderr
    out = run("runtime", "ensure", "worker", cwd=workdir)
    assert "already installed" in out.stdout

    out = run("runtime", "ls", cwd=workdir)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "PLATFORM"]
    assert any(line.startswith("*web") and "1.0.0" in line for line in lines)  # newest ensured
    listed = json.loads(run("runtime", "ls", "--json", cwd=workdir).stdout)
    assert sorted((s["name"], s["version"]) for s in listed) == [
        ("web", "1.0.0"),
        ("web", "1.1.0"),
        ("worker", "0.3.0"),
    ]

    out = run("runtime", "env", "web", "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout)
    assert env["env"]["GREETING"] == "hi"
    assert env["env"]["PATH"].split(os.pathsep)[0].endswith(f"bin/web/1.0.0/{PLATFORM}/bin")
    human = run("runtime", "env", "web", cwd=workdir).stdout
    assert "GREETING=hi" in human and "PATH=" in human

    out = run("runtime", "du", "--json", cwd=workdir)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    web = next(s for s in report["services"] if s["name"] == "web")
    assert web["bin"]["files"] == 4 and web["cache"]["files"] == 2
    assert "TOTAL" in run("runtime", "du", cwd=workdir).stdout

    out = run("runtime", "verify", cwd=workdir)
    assert out.returncode == 0, out.stderr
    target = workdir / "runtime" / "bin" / "web" / "1.0.0" / PLATFORM / "README"
    os.chmod(target, 0o644)
    target.write_text("changed")
    out = run("runtime", "verify", cwd=workdir)
    assert out.returncode == 1
    assert f"web 1.0.0 {PLATFORM}: README: changed" in out.stdout

    out = run("runtime", "gc", "--max-bytes", "0", "--all", "--dry-run", cwd=workdir)
    assert out.returncode == 0 and "would remove 3 archive(s)" in out.stdout
    out = run("runtime", "gc", "--max-bytes", "0", cwd=workdir)
    assert "removed 0 archive(s)" in out.stdout and "--all evicts them too" in out.stdout


def test_root_flag_env_var_and_project_file(workdir: Path) -> None:
    out = run("runtime", "init", "--root", "elsewhere", cwd=workdir)
    assert out.returncode == 0 and (workdir / "elsewhere" / "manifest.json").exists()
    out = run("runtime", "ls", cwd=workdir, env={"RUNYARD_ROOT": str(workdir / "elsewhere")})
    assert out.returncode == 0 and "no services installed" in out.stdout
    (workdir / "runyard.toml").write_text('root = "elsewhere"\n')
    assert run("runtime", "ls", cwd=workdir).returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["runtime", "ls", "--root", "nowhere"], 1, "no runtime tree at"),
        (
            ["runtime", "ensure", "web", "--root", "rt", "--catalog", "missing.json"],
            1,
            "catalog file://",
        ),
        (
            [
                "runtime",
                "ensure",
                "web",
                "nonsense!",
                "--root",
                "rt",
                "--catalog",
                "../repo/catalog.json",
            ],
            2,
            "is not a version spec",
        ),
        (
            ["runtime", "gc", "--max-bytes", "lots", "--root", "rt"],
            2,
            "--max-bytes: 'lots' is not a size",
        ),
        (["runtime", "env", "ghost", "--root", "rt"], 1, "service 'ghost' is not installed"),
        (["runtime", "frobnicate"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_code(
    workdir: Path, args: list[str], code: int, message: str
) -> None:
    run("runtime", "init", "rt", cwd=workdir)
    out = run(*args, cwd=workdir)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    if code == 1:
        assert len(out.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback(workdir: Path) -> None:
    out = run("runtime", "ls", "--root", "nowhere", "--debug", cwd=workdir)
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_bad_manifest_is_one_line(workdir: Path) -> None:
    run("runtime", "init", "rt", cwd=workdir)
    (workdir / "rt" / "manifest.json").write_text('{"version": "1", "services": [{"name": 3}]}')
    out = run("runtime", "ls", "--root", "rt", cwd=workdir)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("services[0].name: expected str, got int")
