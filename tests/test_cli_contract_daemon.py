"""The CLI's contract against a real daemon (issue 15): a broken runyard.toml does not block reads
and shutdown, `logs` of several services, status columns that say only what is known.

Real daemons (tests/daemonkit.py), real `runyard` subprocesses; each test stops what it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, runyard_env, short_root, wait_for

from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(90)

#: A service that prints a numbered line every 50 ms, tagged with its own name.
TALKER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
name = os.path.basename(sys.argv[0])
for i in range(10**9):
    print(f"{name} line {i}", flush=True)
    time.sleep(0.05)
"""

#: A syntax error on line 3 (a key with no value).
BROKEN = 'root = "rt"\n[services.web]\nrestart =\n'


def runyard(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=runyard_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tree() -> RuntimeTree:
    return build_tree(short_root(), {"web": TALKER, "api": TALKER, "idle": SLEEPER})


def test_a_syntax_error_in_runyard_toml_does_not_block_status_logs_and_shutdown(
    tree: RuntimeTree, daemons
) -> None:
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.logs_tail("web", n=1).lines, what="a line of web")
    here = tree.root.parent
    (here / "runyard.toml").write_text(BROKEN)
    for args in (("status",), ("status", "--root", str(tree.root)), ("logs", "web", "-n", "1")):
        out = runyard(here, *args)
        assert out.returncode == 0, (args, out.stderr)
        warning = out.stderr.strip().splitlines()
        assert len(warning) == 1 and warning[0].startswith("runyard: warning: "), out.stderr
        assert "line 3" in warning[0], warning
    assert "web" in runyard(here, "status").stdout
    # What changes the daemon's configuration still refuses the broken file.
    assert runyard(here, "runtime", "env", "web").returncode == 1
    out = runyard(here, "shutdown")
    assert out.returncode == 0, out.stderr
    assert "daemon stopping" in out.stdout
    assert d.proc is not None
    d.proc.wait(timeout=30)


def test_a_services_section_naming_no_installed_service_is_an_error_naming_it(
    tree: RuntimeTree, daemons
) -> None:
    """A typo (``[services.wbe]``) silently dropped web's settings: the daemon ran it anyway."""
    here = tree.root.parent
    (here / "runyard.toml").write_text('root = "rt"\n[services.wbe]\nrestart = "never"\n')
    d = daemons(tree)  # stops the daemon and its services should it start after all (the bug)
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(tree.root)],
        cwd=here,
        env=runyard_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = d.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the daemon started with [services.wbe] naming nothing installed")
    assert d.proc.returncode == 1
    assert "[services.wbe]: no installed service or engine is named 'wbe'" in err
    assert len(err.strip().splitlines()) == 1, err


def test_logs_of_several_services_and_all_are_interleaved_and_tagged(
    tree: RuntimeTree, daemons
) -> None:
    d = daemons(tree).start()
    with d.client() as c:
        for name in ("web", "api"):
            wait_for(lambda n=name: len(c.logs_tail(n, n=5).lines) >= 5, what=f"5 lines of {name}")
    here = tree.root.parent
    out = runyard(here, "logs", "web", "api", "-n", "5")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 10
    tags = [ln.split()[1] for ln in lines]
    assert set(tags) == {"web", "api"}
    assert all(f"{tag} line" in ln for tag, ln in zip(tags, lines, strict=True))
    stamps = [ln.split()[0] for ln in lines]
    assert stamps == sorted(stamps)  # interleaved by time, not one service after the other
    out = runyard(here, "logs", "--all", "-n", "1", "--json")
    assert out.returncode == 0, out.stderr
    docs = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert {doc["service"] for doc in docs} == {"web", "api", "idle"}
    assert runyard(here, "logs").returncode == 2


#: Runs until the file named in its environment appears, then exits 3.
UNTIL_FILE = """
import os, sys, time
flag = os.environ["STOP_FLAG"]
while not os.path.exists(flag):
    time.sleep(0.02)
sys.exit(3)
"""


def _row(out: str, name: str) -> dict[str, str]:
    lines = out.splitlines()
    header = lines[0].split()
    row = next(line for line in lines[1:] if line.split()[0] == name).split()
    return dict(zip(header, row, strict=False))


def test_status_shows_no_cpu_rss_for_a_gone_process_and_no_ready_without_a_probe(
    daemons,
) -> None:
    root = short_root()
    flag = root.parent / "stop-now"
    project = f'[services.once]\nrestart = "never"\nenv = {{ STOP_FLAG = "{flag}" }}\n'
    tree = build_tree(root, {"once": UNTIL_FILE, "idle": SLEEPER}, project)
    d = daemons(tree).start()
    here = tree.root.parent

    def sampled() -> bool:
        with d.client() as c:
            once, idle = c.status(["once", "idle"]).services
        return once.rss is not None and idle.state == "running"  # past start_secs

    wait_for(sampled, 15, "the stats sampler to see once, and idle running")
    idle = _row(runyard(here, "status").stdout, "idle")
    assert idle["STATE"] == "running" and idle["READY"] == "-"  # no probe: not "yes"
    flag.write_text("")

    def gone() -> bool:
        with d.client() as c:
            (s,) = c.status(["once"]).services
        return s.pid is None

    wait_for(gone, 15, "once to exit")
    (doc,) = json.loads(runyard(here, "status", "once", "--json").stdout)
    assert doc["cpu_percent"] is None and doc["rss"] is None, doc
    row = _row(runyard(here, "status").stdout, "once")
    assert row["CPU%"] == "-" and row["RSS"] == "-", row


def test_runtime_remove_refuses_a_version_a_service_runs_from(tree: RuntimeTree, daemons) -> None:
    d = daemons(tree).start()
    here = tree.root.parent
    with d.client() as c:
        wait_for(lambda: c.status(["idle"]).services[0].pid, what="idle running")
    out = runyard(here, "runtime", "remove", "idle", "1.0.0")
    assert out.returncode == 1
    assert "idle 1.0.0 is in use (pid " in out.stderr
    assert (tree.root / "bin" / "idle" / "1.0.0").is_dir()
    assert runyard(here, "stop", "idle").returncode == 0
    out = runyard(here, "runtime", "remove", "idle", "1.0.0")
    assert out.returncode == 0, out.stderr
    assert not (tree.root / "bin" / "idle").exists()


def test_runtime_remove_refuses_a_version_the_daemon_will_restart(daemons) -> None:
    """Was: a service waiting in backoff has no pid, so its version was removed and the
    daemon's next start of it could only fail (its program gone)."""
    project = (
        '[services.crash]\nrestart = "always"\nstart_secs = 0.2\n'
        "backoff = { initial = 30.0, multiplier = 1.0, max = 30.0, jitter = 0.0 }\n"
    )
    tree = build_tree(short_root(), {"crash": "import sys\nsys.exit(3)\n"}, project)
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["crash"]).services[0].state == "backoff", what="backoff")
    here = tree.root.parent
    out = runyard(here, "runtime", "remove", "crash", "1.0.0")
    assert out.returncode == 1, out
    assert "crash 1.0.0 is in use (" in out.stderr, out.stderr
    assert (tree.root / "bin" / "crash" / "1.0.0").is_dir()


def test_runtime_remove_refuses_the_last_version_of_a_configured_service() -> None:
    """Review finding: removing the last version of a service runyard.toml configures made
    the next daemon start (and every reload) refuse the whole project, as [services.NAME] for
    nothing installed is an error. Refused, with what to do; without the section it goes."""
    tree = build_tree(short_root(), {"web": SLEEPER, "api": SLEEPER}, "[services.web]\n")
    here = tree.root.parent
    out = runyard(here, "runtime", "remove", "web", "1.0.0")
    assert out.returncode == 1, out
    assert "last version of [services.web]" in out.stderr and out.stderr.count("\n") == 1
    assert (tree.root / "bin" / "web" / "1.0.0").is_dir()
    out = runyard(here, "runtime", "remove", "api", "1.0.0")  # no section: nothing refuses it
    assert out.returncode == 0, out.stderr
