"""Daemon configuration: refused at load with one line, systemd notify, the health endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from daemonkit import SLEEPER, Daemon, build_tree, daemon_refuses, wait_for

from runyard.daemon.spec import load_specs
from runyard.runtime.config.project import load_project
from runyard.runtime.core.errors import RunyardError

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("project", "message"),
    [
        (
            '[services.a]\ndepends_on = { b = "ready" }\n[services.b]\ndepends_on = { c = "started" }\n'
            '[services.c]\ndepends_on = { a = "completed" }\n',
            "dependency cycle: a -> b -> c -> a",
        ),
        (
            '[services.a]\ndepends_on = { ghost = "ready" }\n',
            "services.a.depends_on: 'ghost' is not an installed service",
        ),
        (
            '[services.a]\nstop_signal = "NOPE"\n',
            "services.a.stop_signal: 'NOPE' is not a signal name",
        ),
        ('[services.a]\nreadiness = { kind = "tcp", port = "web" }\n', "unknown port name 'web'"),
        (
            '[services.a]\ncwd = "../../etc"\n',
            "services.a.cwd: '../../etc' leaves the runtime tree",
        ),
        (
            '[services.a]\nrestart = "sometimes"\n',
            "services.a.restart: invalid enum value 'sometimes'",
        ),
    ],
)
def test_bad_config_is_refused_with_one_line(root, project: str, message: str) -> None:
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER, "c": SLEEPER}, project)
    project_file = root.parent / "runyard.toml"
    with pytest.raises(RunyardError) as err:
        load_specs(tree, load_project(project_file))
    assert message in str(err.value)
    assert message in daemon_refuses(root, project_file)


def test_sd_notify_ready_after_the_socket_answers(root) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    sock_path = str(root.parent / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(sock_path)
        notify.settimeout(20)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
        env["NOTIFY_SOCKET"] = sock_path
        proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(tree.root)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        d = Daemon(tree)
        d.proc = proc
        try:
            assert notify.recv(100) == b"READY=1"
            with d.client(timeout=2) as c:
                assert c.hello().pid == proc.pid
        finally:
            d.stop()


def test_health_endpoints(root) -> None:
    port = free_port()
    tree = build_tree(
        root,
        {"a": SLEEPER, "b": SLEEPER},
        f'[daemon]\nhealth_port = {port}\n[services.b]\nreadiness = {{ kind = "log", pattern = "never" }}\n',
    )
    d = Daemon(tree).start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/healthz")[0] == 200, what="healthz")
        status, body = _get(base + "/readyz")
        assert status == 503 and body["ready"] is False
        assert body["services"]["b"]["ready"] is False
        with d.client() as c:
            c.stop(["b"])
            # b is autostart but stopped on purpose: still not ready, as an orchestrator must see.
            wait_for(lambda: _get(base + "/readyz")[1]["services"]["a"]["ready"], what="a ready")
        assert _get(base + "/nope")[0] == 404
    finally:
        d.stop()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def test_daemon_idle_rss_regression_no_crypto_or_jsonschema_at_start() -> None:
    """The daemon process (`python -m runyard.daemon daemon` imports the whole CLI) must not load
    cryptography, jsonschema or textual until a run, a key or the TUI asks for them (idle RSS)."""
    code = (
        "import sys, daemon.cli, daemon.main; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'jsonschema', 'textual'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_each_load_reads_the_user_config_and_templates_again(root, monkeypatch) -> None:
    """What the services of one load share is made per load_specs call (issue 16), never kept:
    a reload sees a changed user env.toml and a config/{name}/ made since the last load."""
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER})
    project = load_project(root.parent / "runyard.toml")
    user = root.parent / "xdg" / "runyard" / "env.toml"
    user.parent.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root.parent / "xdg"))
    user.write_text('[env]\nWHO = "first"\n')
    specs, _ = load_specs(tree, project)
    assert [s.env["WHO"] for s in specs.values()] == ["first", "first"]
    assert specs["b"].stop_timeout != 7
    user.write_text('[env]\nWHO = "second"\n[services.a.env]\nWHO = "${data_dir}"\n')
    (tree.config_dir / "b").mkdir()
    (tree.config_dir / "b" / "service.toml").write_text("stop_timeout = 7\n")
    (tree.config_dir / "b" / "env.toml").write_text('FROM = "${config_dir}"\n')
    specs, _ = load_specs(tree, project)
    assert specs["a"].env["WHO"] == str(tree.data_dir / "a")
    assert specs["b"].env["WHO"] == "second"
    assert specs["b"].stop_timeout == 7
    assert specs["b"].env["FROM"] == str(tree.config_dir / "b")
