"""Liveness: a service that stops answering is restarted; readiness is not liveness.

Real daemon, real services (a small http.server that can be told to hang), real probes.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import msgspec
import psutil
import pytest
from daemonkit import build_tree, wait_for

from runyard.daemon.liveness import Liveness, LivenessMonitor, parse_liveness
from runyard.protocol.messages import ServiceStatus
from runyard.runtime.config.supervision import SupervisionError

pytestmark = pytest.mark.timeout(90)

#: Serves GET /health until the file argv[2] appears; then removes it, notes when it hung in
#: argv[3], and keeps its listening socket open without ever answering again (hung, not dead).
HANGING_HTTP = """
import os, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
port, flag, hung = int(sys.argv[1]), sys.argv[2], sys.argv[3]
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
srv = HTTPServer(("127.0.0.1", port), H)
srv.timeout = 0.05
while not os.path.exists(flag):
    srv.handle_request()
os.unlink(flag)
with open(hung, "w") as f:
    f.write(repr(time.time()))
while True:
    time.sleep(1)
"""

#: Listens only after argv[2] seconds: a slow starter.
SLOW_TCP = """
import signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
time.sleep(float(sys.argv[2]))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    time.sleep(0.05)
"""

SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(c, name: str) -> ServiceStatus:
    (s,) = c.status([name]).services
    return s


def test_a_child_that_hangs_alive_port_open_not_answering_is_noticed(root, daemons) -> None:
    port = free_port()
    flag, hung = root.parent / "hang", root.parent / "hung-at"
    project = f"""
    [services.web]
    args = ["{port}", "{flag}", "{hung}"]
    liveness = {{ kind = "http", port = {port}, path = "/health", interval = 0.5, timeout = 0.3, failure_threshold = 3 }}
    """
    d = daemons(build_tree(root, {"web": HANGING_HTTP}, project)).start()
    with d.client() as c:
        first = wait_for(
            lambda: (s := status(c, "web")).live and s.state == "running" and s, what="web live"
        )
        assert "200" in first.live_detail
        flag.write_text("")
        want = f"liveness failed 3 times: http GET http://127.0.0.1:{port}/health: timeout"
        seen = wait_for(
            lambda: (s := status(c, "web")).reason.startswith(want) and s,
            timeout=20,
            what="the liveness reason",
        )
        assert seen.live is False and "timeout" in seen.live_detail
        again = wait_for(
            lambda: (s := status(c, "web")).pid not in (None, first.pid) and s.live and s,
            timeout=20,
            what="a new web process that answers",
        )
        assert again.restarts == first.restarts + 1
        assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"
        print(f"\nhang -> new process started: {again.started_at - float(hung.read_text()):.2f}s")


def test_a_slow_starter_within_start_period_is_not_restarted(root, daemons) -> None:
    port = free_port()
    project = f"""
    [services.slow]
    args = ["{port}", "2.0"]
    liveness = {{ kind = "tcp", port = {port}, interval = 0.2, timeout = 0.2, failure_threshold = 2, start_period = 4 }}
    """
    d = daemons(build_tree(root, {"slow": SLOW_TCP}, project)).start()
    with d.client() as c:
        first = wait_for(lambda: status(c, "slow").pid and status(c, "slow"), what="slow spawned")
        failing = wait_for(lambda: status(c, "slow").live is False, what="a failed probe")
        assert failing
        wait_for(lambda: status(c, "slow").live is True, timeout=20, what="slow answering")
        s = status(c, "slow")
        assert (s.pid, s.restarts, s.state) == (first.pid, first.restarts, "running"), s


def test_exec_liveness_restarts_a_service_whose_check_fails(root, daemons) -> None:
    sick = root.parent / "sick"
    check = [sys.executable, "-c", f"import os, sys; sys.exit(os.path.exists({str(sick)!r}))"]
    project = f"""
    [services.app]
    liveness = {{ kind = "exec", command = {msgspec.json.encode(check).decode()}, interval = 0.2, failure_threshold = 2 }}
    """
    d = daemons(build_tree(root, {"app": SLEEPER}, project)).start()
    with d.client() as c:
        first = wait_for(lambda: (s := status(c, "app")).live and s, what="app live")
        sick.write_text("")
        seen = wait_for(
            lambda: (
                (s := status(c, "app")).reason.startswith("liveness failed 2 times: exec") and s
            ),
            what="the liveness reason",
        )
        assert "exit 1" in seen.reason
        sick.unlink()
        again = wait_for(
            lambda: (s := status(c, "app")).pid not in (None, first.pid) and s.live and s,
            what="a new app process that passes",
        )
        assert again.restarts == first.restarts + 1


def _probes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_liveness_probes_stop_when_the_service_stops(root, daemons) -> None:
    marker = f"liveness-probe-{root.parent.name}"
    check = [sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"]
    project = f"""
    [services.app]
    liveness = {{ kind = "exec", command = {msgspec.json.encode(check).decode()}, interval = 0.2, timeout = 30 }}
    """
    d = daemons(build_tree(root, {"app": SLEEPER}, project)).start()
    with d.client() as c:
        wait_for(lambda: _probes(marker), what="a liveness probe running")
        (s,) = c.stop(["app"]).services
        assert s.state == "stopped"
        assert _probes(marker) == []
        time.sleep(0.5)  # no probe starts after the stop: it would show up within an interval
        assert _probes(marker) == []


# --- settings and the monitor alone -----------------------------------------------------------


def test_parse_liveness_checks_ranges_and_targets() -> None:
    where = "runyard.toml: services.web.liveness"
    spec = parse_liveness({"kind": "tcp", "port": "http", "start_period": 5}, {"http": 80}, where)
    assert (spec.interval, spec.failure_threshold, spec.start_period) == (10.0, 3, 5.0)
    for table, field in (
        ({"kind": "tcp", "port": 80, "start_period": float("nan")}, "start_period"),
        ({"kind": "tcp", "port": 80, "interval": 0}, "interval"),
        ({"kind": "http", "port": "nope"}, "port"),
        ({"kind": "exec", "command": []}, "command"),
        ({"kind": "log", "pattern": "x"}, "kind"),
    ):
        with pytest.raises(SupervisionError, match=rf"^{where}\.{field}"):
            parse_liveness(table, {"http": 80}, where)


def test_a_status_without_liveness_fields_still_decodes() -> None:
    old = msgspec.json.encode({"name": "web", "state": "running"})
    s = msgspec.json.decode(old, type=ServiceStatus)
    assert (s.live, s.live_detail) == (None, "")


@pytest.mark.timeout(20)
def test_monitor_counts_failures_only_after_the_grace_or_once_armed(tmp_path: Path) -> None:
    async def main() -> None:
        deaths: list[str] = []
        results: list[bool] = []
        spec = Liveness(kind="exec", command=["false"], interval=0.05, failure_threshold=2)
        m = LivenessMonitor(
            spec,
            port=None,
            env=None,
            cwd=str(tmp_path),
            grace=60,
            on_result=lambda ok, _: results.append(ok),
            on_dead=deaths.append,
        )
        m.start()
        deadline = time.monotonic() + 10
        while len(results) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert deaths == [] and len(results) >= 4  # failing, but within the grace
        m.arm()  # ready: the grace is over
        while not deaths and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await m.stop()
        assert deaths == ["liveness failed 2 times: exec false: exit 1"] and m.dead

    asyncio.run(main())


def test_a_liveness_cause_is_a_failure_whatever_the_exit_code() -> None:
    from runyard.daemon.fsm import Trigger
    from runyard.daemon.policy import BackoffPolicy, decide_restart

    cause = "liveness failed 3 times: tcp 127.0.0.1:1: timeout after 1s"
    common = {"failures": 1, "max_restarts": 5, "backoff": BackoffPolicy(jitter=0)}
    plain = decide_restart(restart="on-failure", exit_code=0, **common)
    assert plain.trigger is Trigger.EXIT_DONE
    failed = decide_restart(restart="on-failure", exit_code=0, cause=cause, **common)
    assert (failed.trigger, failed.reason, failed.delay) == (Trigger.EXIT_RETRY, cause, 0.5)
    never = decide_restart(restart="never", exit_code=-15, cause=cause, **common)
    assert (never.trigger, never.reason) == (Trigger.EXIT_DONE, cause)


def test_a_bad_liveness_setting_is_refused_in_one_line_naming_it(root) -> None:
    from daemonkit import daemon_refuses

    project = """
    [services.web]
    liveness = { kind = "tcp", port = 8080, start_period = nan }
    """
    build_tree(root, {"web": SLEEPER}, project)
    line = daemon_refuses(root)
    assert "services.web.liveness.start_period" in line and "0 to 3600" in line, line


def test_a_daemon_run_as_another_runyards_service_gives_its_probes_no_marker(
    root, daemons, monkeypatch
) -> None:
    """A review's concern: a daemon started as a service of another Runyard inherits its
    RUNYARD_SERVICE; a probe carrying it would look like an orphan to the reaper. The merged
    env already drops RUNYARD_*; the daemon also drops it from its own environment at start (as
    NOTIFY_SOCKET), for any child spawned with the daemon's environment."""
    seen = root.parent / "probe.env"
    code = f"import os; open({str(seen)!r}, 'w').write(os.environ.get('RUNYARD_SERVICE', '-'))"
    check = [sys.executable, "-c", code]
    project = f"""
    [services.app]
    liveness = {{ kind = "exec", command = {msgspec.json.encode(check).decode()}, interval = 0.2 }}
    """
    monkeypatch.setenv("RUNYARD_SERVICE", "outer")
    d = daemons(build_tree(root, {"app": SLEEPER}, project)).start()
    with d.client() as c:
        wait_for(lambda: status(c, "app").live, what="app live")
    assert seen.read_text() == "-"
