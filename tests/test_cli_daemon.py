"""`runyard up | status | start | stop | restart | logs | health | reload | shutdown` as a person
or a script would type them: real subprocesses, a real daemon started by `up`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, short_root, wait_for

from runyard.protocol.client import Client, DaemonUnreachable

pytestmark = pytest.mark.timeout(120)

NEVER_READY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.fixture
def project():
    root = short_root()
    build_tree(
        root,
        {"web": SLEEPER, "lazy": NEVER_READY},
        '[services.lazy]\nreadiness = { kind = "log", pattern = "never printed" }\n',
    )
    yield root.parent
    try:
        with Client(root, timeout=20) as c:
            c.shutdown()
    except DaemonUnreachable:
        pass
    state = root / "temp" / "state.json"
    if state.exists():  # the shutdown did not happen: kill what is recorded
        for s in json.loads(state.read_text())["services"].values():
            if s.get("pgid"):
                subprocess.run(["kill", "-9", f"-{s['pgid']}"], check=False)
    shutil.rmtree(root.parent, ignore_errors=True)


def test_daemon_down_is_exit_3_one_line(project: Path) -> None:
    out = run(project, "status")
    assert out.returncode == 3
    assert "is the daemon running? (runyard up)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_up_status_stop_start_restart_logs_health_reload_shutdown(project: Path) -> None:
    out = run(project, "up")
    assert out.returncode == 0, out.stderr
    assert "daemon started (pid" in out.stdout
    again = run(project, "up")
    assert again.returncode == 0 and "already running" in again.stdout

    def web() -> dict:
        # Waiting polls through the client library; the CLI itself is checked by the asserts.
        with Client(project / "rt", timeout=10) as c:
            (s,) = c.status(["web"]).services
        return {"state": s.state, "pid": s.pid}

    wait_for(lambda: web()["state"] == "running", what="web running")
    table = run(project, "status").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "STATE", "READY", "PID", "UPTIME"]
    assert any(line.startswith("lazy") and " no " in f" {line} " for line in table)

    health = run(project, "health")
    assert health.returncode == 1 and "not ready: lazy" in health.stdout
    assert json.loads(run(project, "health", "--json").stdout)["not_ready"] == ["lazy"]

    first = web()["pid"]
    out = run(project, "restart", "web")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: web()["pid"] not in (None, first), what="a new pid")

    out = run(project, "stop", "web")
    assert out.returncode == 0 and "stopped" in out.stdout
    out = run(project, "start", "web")
    assert out.returncode == 0
    wait_for(lambda: web()["state"] == "running", what="web running again")

    with Client(project / "rt", timeout=10) as c:
        wait_for(lambda: c.logs_tail("web", n=1).lines, what="a log line")
    line = run(project, "logs", "web", "-n", "1").stdout.strip()
    assert line.endswith(" out sleeper up") and line[:4].isdigit()

    assert run(project, "stop").returncode == 2  # neither a name nor --all
    bad = run(project, "stop", "ghost")
    assert bad.returncode == 1 and "no service 'ghost'" in bad.stderr

    out = run(project, "reload")
    assert out.returncode == 0 and "unchanged 2" in out.stdout

    out = run(project, "shutdown")
    assert out.returncode == 0, out.stderr

    def gone() -> bool:
        try:
            with Client(project / "rt", timeout=0.5) as c:
                c.hello()
        except DaemonUnreachable:
            return True
        return False

    wait_for(gone, what="daemon gone")
    assert run(project, "status").returncode == 3
