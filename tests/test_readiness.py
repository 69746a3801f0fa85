"""Readiness probes and the monitor, against real sockets, a real http.server and real processes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import psutil
import pytest

from runyard.daemon.readiness import (
    LogMatcher,
    Readiness,
    ReadinessMonitor,
    parse_readiness,
    probe_exec,
    probe_http,
    probe_tcp,
    resolve_port,
    validate_readiness,
)

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
WHERE = "runyard.toml: services.web.readiness"


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def process_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its (foreign) parent to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


# --- servers ------------------------------------------------------------------------------------


class TcpServer:
    """An asyncio server on 127.0.0.1:0 that accepts and reads until the peer closes."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await reader.read()  # never answers; returns when the client hangs up
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self._writers):
            writer.close()
        await wait_until(lambda: not self._writers)


@pytest.fixture
async def tcp_server() -> AsyncIterator[TcpServer]:
    server = TcpServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = {"/healthz": 200, "/down": 503}.get(self.path, 404)
        body = b"ok\n" if code == 200 else b"no\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer((HOST, 0), HealthHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- tcp ----------------------------------------------------------------------------------------


async def test_tcp_probe_connects_to_a_listening_port(tcp_server: TcpServer) -> None:
    ok, detail = await probe_tcp(HOST, tcp_server.port, 2.0)
    assert ok, detail
    assert detail == f"tcp {HOST}:{tcp_server.port}: connected"


async def test_tcp_probe_reports_a_refused_connection(closed_port: int) -> None:
    ok, detail = await probe_tcp(HOST, closed_port, 2.0)
    assert not ok
    assert "refused" in detail and str(closed_port) in detail


# --- http ---------------------------------------------------------------------------------------


async def test_http_probe_is_ok_on_the_expected_status(http_port: int) -> None:
    ok, detail = await probe_http(HOST, http_port, "/healthz", 200, 2.0)
    assert ok, detail
    assert "200" in detail


async def test_http_probe_fails_on_another_status(http_port: int) -> None:
    ok, detail = await probe_http(HOST, http_port, "/down", 200, 2.0)
    assert not ok
    assert "503" in detail and "expected 200" in detail
    # The expected status is configurable: a 503 can be what "ready" means.
    ok, _ = await probe_http(HOST, http_port, "/down", 503, 2.0)
    assert ok


async def test_http_probe_times_out_on_a_server_that_never_answers(
    tcp_server: TcpServer,
) -> None:
    started = time.monotonic()
    ok, detail = await probe_http(HOST, tcp_server.port, "/healthz", 200, 0.5)
    elapsed = time.monotonic() - started
    assert not ok
    assert "timeout" in detail
    assert 0.4 <= elapsed < 1.5


async def test_http_probe_reports_a_refused_connection(closed_port: int) -> None:
    ok, detail = await probe_http(HOST, closed_port, "/", 200, 2.0)
    assert not ok
    assert "refused" in detail


# --- exec ---------------------------------------------------------------------------------------


async def test_exec_probe_is_ok_on_exit_0_and_fails_otherwise() -> None:
    ok, detail = await probe_exec([sys.executable, "-c", "import sys; sys.exit(0)"], None, None, 10)
    assert ok, detail
    ok, detail = await probe_exec([sys.executable, "-c", "import sys; sys.exit(1)"], None, None, 10)
    assert not ok
    assert detail.endswith("exit 1")


async def test_exec_probe_reports_a_command_that_cannot_start(tmp_path: Path) -> None:
    ok, detail = await probe_exec([str(tmp_path / "missing")], None, None, 5)
    assert not ok
    assert "cannot start" in detail


HANG = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
os.replace(tmp, sys.argv[1])
time.sleep(600)
"""


async def test_exec_probe_kills_a_hanging_command_and_its_group_at_the_timeout(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pids"
    started = time.monotonic()
    ok, detail = await probe_exec([sys.executable, "-c", HANG, str(pid_file)], None, None, 3.0)
    elapsed = time.monotonic() - started
    assert not ok
    assert "timeout" in detail and "killed" in detail
    assert elapsed < 6.0
    pids = read_pids(pid_file)
    assert len(pids) == 2, "the command did not get to write its pids"
    await wait_until(lambda: all(process_gone(pid) for pid in pids))


async def test_exec_probe_kills_what_the_command_leaves_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    leave = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "open(sys.argv[1], 'w').write(str(p.pid))"
    )
    ok, detail = await probe_exec([sys.executable, "-c", leave, str(pid_file)], None, None, 10)
    assert ok, detail
    [pid] = read_pids(pid_file)
    await wait_until(lambda: process_gone(pid))


async def test_exec_probe_runs_with_the_given_env_and_cwd(tmp_path: Path) -> None:
    check = (
        "import os, sys; "
        "ok = os.environ.get('RY_PROBE') == 'yes' and 'RY_UNSET' not in os.environ "
        "and os.getcwd() == os.path.realpath(sys.argv[1]); "
        "sys.exit(0 if ok else 3)"
    )
    argv = [sys.executable, "-c", check, str(tmp_path)]
    os.environ["RY_UNSET"] = "1"
    try:
        ok, detail = await probe_exec(argv, {"RY_PROBE": "yes"}, str(tmp_path), 10)
        assert ok, detail
        ok, detail = await probe_exec(argv, {"RY_PROBE": "no"}, str(tmp_path), 10)
        assert not ok and detail.endswith("exit 3")
        ok, detail = await probe_exec(argv, {"RY_PROBE": "yes"}, None, 10)
        assert not ok and detail.endswith("exit 3")
    finally:
        del os.environ["RY_UNSET"]


# --- log ----------------------------------------------------------------------------------------


def test_log_matcher_searches_lines_and_stays_matched() -> None:
    matcher = LogMatcher(r"listening on :\d+")
    assert not matcher.feed(["booting", "loading config"])
    assert not matcher.matched
    assert matcher.feed(["x", "web: listening on :8080\n", "y"])
    assert matcher.matched_line == "web: listening on :8080"
    assert matcher.feed(["anything else"])
    assert matcher.feed([])


async def test_log_monitor_becomes_ready_on_the_first_matching_line() -> None:
    changes: list[tuple[bool, str]] = []
    spec = Readiness(kind="log", pattern="ready")
    monitor = ReadinessMonitor(
        spec, port=None, env=None, cwd=None, on_change=lambda r, d: changes.append((r, d))
    )
    monitor.start()
    try:
        monitor.feed_log(["starting", "warming up"])
        assert not monitor.ready and changes == []
        long_line = "ready " + "x" * 300
        monitor.feed_log(["still starting", long_line, "ready again"])
        assert monitor.ready
        assert changes == [(True, f"matched: {long_line[:200]}")]
        assert monitor.last_detail == changes[0][1]
        monitor.feed_log(["ready", "crash!"])
        assert monitor.ready and len(changes) == 1
    finally:
        await monitor.stop()


async def test_other_kinds_ignore_fed_log_lines(tcp_server: TcpServer) -> None:
    changes: list[tuple[bool, str]] = []
    spec = Readiness(kind="tcp", port=tcp_server.port, interval=60, initial_delay=60)
    monitor = ReadinessMonitor(
        spec,
        port=tcp_server.port,
        env=None,
        cwd=None,
        on_change=lambda r, d: changes.append((r, d)),
    )
    monitor.start()
    try:
        monitor.feed_log(["ready"])
        assert not monitor.ready and changes == []
    finally:
        await monitor.stop()


# --- the monitor --------------------------------------------------------------------------------


class RecordingMonitor(ReadinessMonitor):
    """The real monitor, with a record of every probe result it saw."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.results: list[bool] = []

    async def probe_once(self) -> tuple[bool, str]:
        ok, detail = await super().probe_once()
        self.results.append(ok)
        return ok, detail


async def test_monitor_needs_threshold_successes_then_failure_threshold_failures(
    tcp_server: TcpServer,
) -> None:
    changes: list[tuple[bool, str, list[bool]]] = []
    spec = Readiness(kind="tcp", port="main", interval=0.05, threshold=2, failure_threshold=3)
    port = resolve_port(spec, {"main": tcp_server.port})
    monitor: RecordingMonitor

    def on_change(ready: bool, detail: str) -> None:
        assert monitor.ready is ready
        changes.append((ready, detail, list(monitor.results)))

    monitor = RecordingMonitor(spec, port=port, env=None, cwd=None, on_change=on_change)
    assert not monitor.ready
    monitor.start()
    try:
        await wait_until(lambda: monitor.ready)
        assert changes == [(True, f"tcp {HOST}:{port}: connected", [True, True])]

        await tcp_server.close()
        await wait_until(lambda: not monitor.ready)
        assert len(changes) == 2
        ready, detail, seen = changes[1]
        assert not ready and "refused" in detail
        assert seen[-3:] == [False, False, False] and seen[-4] is True

        # Staying down reports nothing more.
        n = len(monitor.results)
        await wait_until(lambda: len(monitor.results) >= n + 3)
        assert len(changes) == 2
    finally:
        await monitor.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("readiness-")]


async def test_monitor_never_ready_reports_no_change(closed_port: int) -> None:
    changes: list[tuple[bool, str]] = []
    spec = Readiness(kind="tcp", port=closed_port, interval=0.02, failure_threshold=1)
    monitor = RecordingMonitor(
        spec, port=closed_port, env=None, cwd=None, on_change=lambda r, d: changes.append((r, d))
    )
    monitor.start()
    try:
        await wait_until(lambda: len(monitor.results) >= 5)
        assert changes == [] and not monitor.ready
        assert "refused" in monitor.last_detail
    finally:
        await monitor.stop()


async def test_monitor_threshold_counts_exec_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    count = "import sys; open(sys.argv[1], 'a').write('x')"
    changes: list[tuple[bool, str, int]] = []

    def on_change(ready: bool, detail: str) -> None:
        changes.append((ready, detail, len(runs.read_text())))

    spec = Readiness(
        kind="exec", command=[sys.executable, "-c", count, str(runs)], interval=0.01, threshold=3
    )
    monitor = ReadinessMonitor(spec, port=None, env=None, cwd=str(tmp_path), on_change=on_change)
    monitor.start()
    try:
        await wait_until(lambda: monitor.ready)
    finally:
        await monitor.stop()
    assert [(r, n) for r, _, n in changes] == [(True, 3)]


async def test_monitor_stop_kills_a_running_exec_probe(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    spec = Readiness(kind="exec", command=[sys.executable, "-c", HANG, str(pid_file)], timeout=60)
    monitor = ReadinessMonitor(spec, port=None, env=None, cwd=None, on_change=lambda r, d: None)
    monitor.start()
    await wait_until(pid_file.exists)
    pids = read_pids(pid_file)
    await monitor.stop()
    await wait_until(lambda: all(process_gone(pid) for pid in pids))
    assert not monitor.ready


async def test_monitor_starts_once_and_stops_idempotently(tcp_server: TcpServer) -> None:
    spec = Readiness(kind="tcp", port=tcp_server.port, initial_delay=60)
    monitor = ReadinessMonitor(
        spec, port=tcp_server.port, env=None, cwd=None, on_change=lambda r, d: None
    )
    monitor.start()
    with pytest.raises(RuntimeError):
        monitor.start()
    await monitor.stop()
    await monitor.stop()


async def test_a_failing_on_change_does_not_stop_probing(tcp_server: TcpServer) -> None:
    def on_change(ready: bool, detail: str) -> None:
        raise RuntimeError("callback bug")

    spec = Readiness(kind="tcp", port=tcp_server.port, interval=0.02)
    monitor = RecordingMonitor(spec, port=tcp_server.port, env=None, cwd=None, on_change=on_change)
    monitor.start()
    try:
        await wait_until(lambda: len(monitor.results) >= 3)
        assert monitor.ready
    finally:
        await monitor.stop()


def test_monitor_refuses_a_network_probe_without_a_port() -> None:
    with pytest.raises(ValueError, match="needs a resolved port"):
        ReadinessMonitor(
            Readiness(kind="http", port="web"), port=None, env=None, cwd=None, on_change=print
        )


# --- configuration ------------------------------------------------------------------------------

PORTS = {"http": 8080, "admin": 9090}


def check(**fields: object) -> str:
    with pytest.raises(ValueError) as info:
        validate_readiness(msgspec.convert(fields, Readiness), PORTS, WHERE)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_validate_names_an_unknown_port_and_lists_the_known_ones() -> None:
    message = check(kind="http", port="htp")
    assert message == f"{WHERE}.port: unknown port name 'htp' (known: admin, http)"
    message = check(kind="tcp")
    assert message.startswith(f"{WHERE}.port: ")


def test_validate_refuses_an_empty_command() -> None:
    assert check(kind="exec").startswith(f"{WHERE}.command: ")
    assert check(kind="exec", command=[""]).startswith(f"{WHERE}.command: ")


def test_validate_refuses_a_bad_regex() -> None:
    message = check(kind="log", pattern="ready(")
    assert message.startswith(f"{WHERE}.pattern: not a valid regex: ")
    assert "missing )" in message
    assert check(kind="log").startswith(f"{WHERE}.pattern: ")


def test_validate_refuses_zero_interval_and_other_bad_numbers() -> None:
    assert check(kind="tcp", port=1, interval=0).startswith(f"{WHERE}.interval: ")
    assert check(kind="tcp", port=1, timeout=-1).startswith(f"{WHERE}.timeout: ")
    assert check(kind="tcp", port=1, threshold=0).startswith(f"{WHERE}.threshold: ")
    assert check(kind="tcp", port=1, failure_threshold=0).startswith(f"{WHERE}.failure_threshold")
    assert check(kind="tcp", port=70000).startswith(f"{WHERE}.port: expected 1-65535")
    assert check(kind="http", port=1, path="healthz").startswith(f"{WHERE}.path: ")


def test_valid_specs_pass_and_ports_resolve() -> None:
    for fields in (
        {"kind": "tcp", "port": "admin"},
        {"kind": "http", "port": 8081, "path": "/healthz", "status": 204},
        {"kind": "exec", "command": ["true"]},
        {"kind": "log", "pattern": r"^listening on \d+$"},
    ):
        validate_readiness(msgspec.convert(fields, Readiness), PORTS, WHERE)
    assert resolve_port(Readiness(kind="tcp", port="admin"), PORTS) == 9090
    assert resolve_port(Readiness(kind="tcp", port=1234), PORTS) == 1234
    assert resolve_port(Readiness(kind="tcp", port="1234"), PORTS) == 1234
    assert resolve_port(Readiness(kind="tcp", port="nope"), PORTS) is None
    assert resolve_port(Readiness(kind="exec"), PORTS) is None


def test_parse_readiness_converts_a_toml_table_and_names_the_field() -> None:
    spec = parse_readiness({"kind": "http", "port": "http", "interval": 2}, PORTS, WHERE)
    assert spec.interval == 2.0 and resolve_port(spec, PORTS) == 8080
    with pytest.raises(ValueError, match=r"readiness\.intervall: unknown field$"):
        parse_readiness({"kind": "tcp", "port": 1, "intervall": 2}, PORTS, WHERE)
    with pytest.raises(ValueError, match=r"readiness\.kind: "):
        parse_readiness({"kind": "grpc"}, PORTS, WHERE)
