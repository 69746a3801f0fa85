"""Runyard installs under one name, ``runyard``, and cannot clash with another project.

Before: the wheel installed ``daemon``, ``protocol``, ``runtime``, ``schemas`` and ``tui`` as
top-level packages; ``pip install python-daemon`` after Runyard overwrote
``daemon/__init__.py`` (both owned it). Here a real wheel is built from the checkout, installed
into fresh venvs beside python-daemon (both orders), and both must work.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NEIGHBOURS = ("python-daemon", "lockfile")  # python-daemon and its one dependency

pytestmark = pytest.mark.timeout(300)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, **kw)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    return proc


def locked(names: tuple[str, ...]) -> str:
    """The requirements-dev.lock entries (pin and hashes) of ``names``."""
    text = (ROOT / "requirements-dev.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text)
    picked = [e for e in entries if re.match(rf"({'|'.join(map(re.escape, names))})==", e)]
    assert len(picked) == len(names), f"requirements-dev.lock lacks one of {names}"
    return "\n".join(picked) + "\n"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out / "own"),
         str(ROOT)])  # fmt: skip
    req = out / "neighbours.txt"
    req.write_text(locked(NEIGHBOURS))
    run([*pip, "download", "--no-deps", "--require-hashes", "--only-binary=:all:", "-r", str(req),
         "-d", str(out / "neighbours")])  # fmt: skip
    return {
        "own": sorted((out / "own").glob("runyard-*.whl")),
        "neighbours": sorted((out / "neighbours").glob("*.whl")),
    }


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path / "bin" / "python"


def borrow_dependencies(python: Path) -> None:
    """Runyard's own dependencies (msgspec, pyzmq, ...) come from the test's venv through a .pth
    that puts its site-packages after the fresh venv's on sys.path, so what was installed in the
    fresh venv wins. Written after the installs: pip would otherwise see python-daemon there and
    install nothing."""
    (site_packages(python) / "zz_runyard_test_deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )


def site_packages(python: Path) -> Path:
    cmd = [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    return Path(run(cmd).stdout.strip())


def install(python: Path, wheel_files: list[Path]) -> None:
    run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python",
         str(python), "install", "--no-deps", "--no-index", *map(str, wheel_files)])  # fmt: skip


def owned_files(python: Path) -> dict[str, list[str]]:
    """Every installed file -> the distributions whose RECORD lists it."""
    site = site_packages(python)
    owners: dict[str, list[str]] = {}
    for record in site.glob("*.dist-info/RECORD"):
        with record.open(newline="") as f:
            for row in csv.reader(f):
                owners.setdefault(os.path.normpath(row[0]), []).append(record.parent.name)
    return owners


def test_wheel_installs_only_under_the_runyard_name(wheels) -> None:
    (own,) = wheels["own"]
    with zipfile.ZipFile(own) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"runyard", own.name.split("-py")[0] + ".dist-info"}, sorted(tops)
    for package in ("daemon", "protocol", "runtime", "schemas", "tui"):
        assert f"runyard/{package}/__init__.py" in names, package
    assert "runyard/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n]
    assert "runyard = runyard.daemon.cli:main" in entry_points


@pytest.mark.parametrize("order", ["runyard-first", "python-daemon-first"])
def test_installs_beside_python_daemon_in_either_order(wheels, tmp_path: Path, order) -> None:
    python = fresh_venv(tmp_path / "venv")
    steps = [wheels["own"], wheels["neighbours"]]
    for step in steps if order == "runyard-first" else reversed(steps):
        install(python, step)
    borrow_dependencies(python)

    clashes = {path: who for path, who in owned_files(python).items() if len(who) > 1}
    assert not clashes, f"files owned by two distributions: {clashes}"

    # Both work, from a directory holding no checkout.
    help_ = run([str(python.parent / "runyard"), "--help"], cwd=tmp_path)
    assert "usage: runyard" in help_.stdout
    probe = run(
        [str(python), "-c",
         "import daemon, runyard.daemon.cli as cli; print(daemon.DaemonContext.__module__);"
         "print(daemon.__file__); print(cli.__file__)"],
        cwd=tmp_path,
    )  # fmt: skip
    module, daemon_file, cli_file = probe.stdout.split()
    assert module == "daemon.daemon"
    assert Path(daemon_file).is_relative_to(tmp_path / "venv"), daemon_file
    assert Path(cli_file).is_relative_to(tmp_path / "venv")


def test_editable_install_leaves_the_daemon_name_to_python_daemon(tmp_path: Path) -> None:
    """The development venv (editable runyard plus python-daemon from the test extras): outside
    the checkout, ``daemon`` is python-daemon's and ``runyard.daemon`` is the checkout's."""
    probe = run(
        [sys.executable, "-c",
         "import daemon, runyard.daemon; print(daemon.__file__); print(runyard.daemon.__file__);"
         "print(hasattr(daemon, 'DaemonContext'))"],
        cwd=tmp_path,
    )  # fmt: skip
    daemon_file, runyard_daemon_file, has_context = probe.stdout.split()
    assert Path(daemon_file) != ROOT / "daemon" / "__init__.py", daemon_file
    assert Path(runyard_daemon_file) == ROOT / "daemon" / "__init__.py"
    assert has_context == "True"
