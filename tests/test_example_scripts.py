"""The example automation scripts (scripts/examples/) as real subprocesses against a real daemon.

Two services: ``fine`` (no probe: ready once running) and ``stuck``, whose log readiness pattern
is never printed, so it runs but never becomes ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import SLEEPER, Daemon, build_tree, short_root, wait_for

from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parent.parent / "scripts" / "examples"
WAIT_READY = EXAMPLES / "wait-ready.py"
RESTART_UNHEALTHY = EXAMPLES / "restart-unhealthy.py"

PROJECT = """
[services.stuck]
readiness = { kind = "log", pattern = "this line is never printed" }
"""


def run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return subprocess.run(
        [sys.executable, str(script), "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


@pytest.fixture
def root() -> Iterator[Path]:
    r = short_root()
    yield r
    shutil.rmtree(r.parent, ignore_errors=True)


@pytest.fixture
def daemon(root: Path) -> Iterator[Daemon]:
    d = Daemon(build_tree(root, {"fine": SLEEPER, "stuck": SLEEPER}, PROJECT))
    try:
        yield d.start()
    finally:
        d.stop()


def running_pids(d: Daemon) -> dict[str, int]:
    """name -> pid once both services run (with the ready flag each should have), else {}."""
    with d.client() as c:
        services = {s.name: s for s in c.status().services}
    fine, stuck = services["fine"], services["stuck"]
    if fine.state != "running" or stuck.state != "running" or stuck.ready is not False:
        return {}
    assert fine.pid and stuck.pid and fine.ready is None
    return {"fine": fine.pid, "stuck": stuck.pid}


def test_wait_ready_succeeds_on_a_sleeper_and_times_out_on_an_unready_service(daemon) -> None:
    ok = run(WAIT_READY, daemon.tree.root, "fine", "--timeout", "20")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wait_for(lambda: running_pids(daemon), what="both services running")
    late = run(WAIT_READY, daemon.tree.root, "fine", "stuck", "--timeout", "1")
    assert late.returncode == 1, late.stdout + late.stderr
    assert "stuck (running, not ready" in late.stdout and "fine" not in late.stdout
    unknown = run(WAIT_READY, daemon.tree.root, "nope", "--timeout", "1")
    assert unknown.returncode == 2 and "no such service: nope" in unknown.stderr


def test_restart_unhealthy_once_restarts_only_the_unready_service(daemon) -> None:
    before = wait_for(lambda: running_pids(daemon), what="both services running")
    assert isinstance(before, dict)
    proc = run(RESTART_UNHEALTHY, daemon.tree.root, "--once", "--grace", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("restarted stuck (not ready for ")
    assert "fine" not in proc.stdout
    after = wait_for(lambda: running_pids(daemon), what="both services running again")
    assert isinstance(after, dict)
    assert after["stuck"] != before["stuck"]
    assert after["fine"] == before["fine"]


def test_restart_unhealthy_leaves_an_unready_service_alone_within_the_grace(daemon) -> None:
    before = wait_for(lambda: running_pids(daemon), what="both services running")
    proc = run(RESTART_UNHEALTHY, daemon.tree.root, "--once", "--grace", "600")
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert running_pids(daemon) == before


def test_both_scripts_exit_3_without_a_daemon(root: Path) -> None:
    RuntimeTree(root).init()
    for script, args in ((WAIT_READY, ["fine"]), (RESTART_UNHEALTHY, ["--once"])):
        proc = run(script, root, *args)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "no daemon at" in proc.stderr and "Traceback" not in proc.stderr
