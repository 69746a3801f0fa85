"""sd_notify (issue 12, "services that speak for themselves"): NOTIFY_SOCKET, READY=1 as a
readiness of its own, STATUS= in status, the WATCHDOG=1 watchdog, foreign senders ignored.

The services speak through Debian's real ``systemd-notify`` (run as their child, which waits on
BARRIER=1 until the daemon has read what it sent), so these tests need it: they skip without it,
and fail under CI=true (.ci/run installs the ``systemd`` package).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool
from daemonkit import build_tree, wait_for

from runyard.daemon.notify import (
    SUN_PATH_MAX,
    NotifyChannel,
    belongs,
    notify_address,
    parse_message,
)
from runyard.daemon.process import ProcessHandle


def one(c, name: str):
    (s,) = c.status([name]).services
    return s


def notifier(systemd_notify: str, *, before: str = "", args: str, after: str = "") -> str:
    """A service that runs ``before``, calls systemd-notify with ``args``, runs ``after``, idles."""
    return f"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
{before}
subprocess.run([{systemd_notify!r}, *{args}], check=True)
{after}
while True:
    time.sleep(0.05)
"""


# --- the protocol, pure ------------------------------------------------------------------------


def test_parse_message_reads_the_well_known_assignments() -> None:
    m = parse_message(b"READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\nX=ignored\nnonsense\n")
    assert m.ready is True and m.status == "serving 3 clients" and m.watchdog == "1"
    assert not m.stopping and m.watchdog_sec is None
    m = parse_message(b"STOPPING=1\nWATCHDOG_USEC=2500000\nREADY=0\nMAINPID=1")
    assert m.stopping and m.watchdog_sec == 2.5 and m.ready is None and m.status is None
    assert parse_message(b"WATCHDOG=trigger").watchdog == "trigger"
    assert parse_message(b"STATUS=").status == ""


def test_long_root_gets_an_abstract_socket_that_systemd_notify_reaches(tmp_path: Path) -> None:
    tool = require_tool("systemd-notify")
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "temp"
    address = notify_address(deep, "web")
    assert address.startswith("@runyard-notify-")
    short = notify_address(Path("/tmp/x/temp"), "web")
    assert short == "/tmp/x/temp/notify/web.sock" and len(short) <= SUN_PATH_MAX
    channel = NotifyChannel(address)
    channel.bind()
    try:
        assert channel._sock is not None
        # --no-block: nobody reads this socket, so the barrier would wait for its timeout.
        out = subprocess.run(
            [tool, "--no-block", "--status=hi"],
            env={**os.environ, "NOTIFY_SOCKET": address},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert channel._sock.recv(4096) == b"STATUS=hi"
    finally:
        channel.close()


def test_belongs_is_the_process_its_descendants_and_its_group() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys; subprocess.run(['sleep', '30'])"],
        start_new_session=True,
    )
    try:
        handle = ProcessHandle(pid=child.pid, pgid=child.pid, create_time=0.0)
        assert belongs(child.pid, handle)
        grandchild = wait_for(
            lambda: [
                int(p)
                for p in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
            ],
            what="the grandchild",
        )
        assert belongs(grandchild[0], handle)
        assert not belongs(os.getpid(), handle)
        assert not belongs(1, handle)
    finally:
        os.killpg(child.pid, 9)
        child.wait(timeout=10)


# --- through a real daemon ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_ready_1_gates_a_dependant_and_status_text_is_shown(root, daemons) -> None:
    tool = require_tool("systemd-notify")
    db = notifier(
        tool,
        before="while not os.path.exists('go'):\n    time.sleep(0.02)",
        args="['--ready', '--status=accepting connections']",
    )
    project = (
        "[services.db]\nnotify = true\nstart_secs = 0\n"
        '[services.web]\nstart_secs = 0\ndepends_on = { db = "ready" }\n'
    )
    tree = build_tree(root, {"db": db, "web": db.replace("'go'", "'never'")}, project)
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: one(c, "db").state == "running", what="db running")
        s = one(c, "db")
        assert s.ready is False and s.ready_detail == "waiting for READY=1"
        assert one(c, "web").state == "stopped", "web started before db said READY=1"
        (tree.data_dir / "db" / "go").write_text("")
        wait_for(lambda: one(c, "web").state == "running", what="web running after READY=1")
        s = one(c, "db")
        assert s.ready is True and s.notify_status == "accepting connections"
        assert s.ready_detail == "the service said READY=1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    for args in (["status"], ["status", "--json"]):
        out = subprocess.run(
            [sys.executable, "-m", "runyard.daemon", *args],
            cwd=root.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "accepting connections" in out.stdout, (args, out.stdout, out.stderr)
    data = json.loads(out.stdout)
    services = data["services"] if isinstance(data, dict) else data
    (db_json,) = [s for s in services if s["name"] == "db"]
    assert db_json["notify_status"] == "accepting connections"


@pytest.mark.timeout(90)
def test_missing_watchdog_1_restarts_with_reason_watchdog_timeout(root, daemons) -> None:
    tool = require_tool("systemd-notify")
    # Says READY=1 and pings twice, writes what the daemon gave it, then falls silent.
    hung = notifier(
        tool,
        before=(
            "open('env.json', 'w').write(__import__('json').dumps({'pid': os.getpid(), "
            "'env': {k: v for k, v in os.environ.items() if k.startswith(('WATCHDOG', 'NOTIFY'))}}))"
        ),
        args="['--ready', 'WATCHDOG=1']",
        after=f"subprocess.run([{tool!r}, 'WATCHDOG=1'], check=True)",
    )
    project = "[services.hung]\nnotify = true\nwatchdog_sec = 0.6\nstart_secs = 0\n"
    tree = build_tree(root, {"hung": hung}, project)
    d = daemons(tree).start()
    with d.client() as c:
        first = wait_for(lambda: (s := one(c, "hung")).ready and s.pid, what="hung ready")
        seen = json.loads(wait_for(lambda: _read(tree.data_dir / "hung" / "env.json")))
        assert seen["pid"] == first
        assert seen["env"]["WATCHDOG_PID"] == str(first)
        assert seen["env"]["WATCHDOG_USEC"] == "600000"
        assert seen["env"]["NOTIFY_SOCKET"] == str(tree.temp_dir / "notify" / "hung.sock")
        s = wait_for(
            lambda: (s := one(c, "hung")).restarts >= 1 and s,
            what="a restart after the watchdog expired",
        )
        assert s.reason.startswith("watchdog timeout"), s.reason
        wait_for(lambda: (s := one(c, "hung")).pid and s.pid != first, what="a new process")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.mark.timeout(90)
def test_a_datagram_from_a_foreign_pid_is_ignored(root, daemons) -> None:
    tool = require_tool("systemd-notify")
    quiet = notifier(
        tool,
        before="while not os.path.exists('go'):\n    time.sleep(0.02)",
        args="['--ready', '--status=mine']",
    )
    tree = build_tree(root, {"quiet": quiet}, "[services.quiet]\nnotify = true\nstart_secs = 0\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: one(c, "quiet").state == "running", what="quiet running")
        # systemd-notify waits on BARRIER=1: once it returns, the daemon has read the datagram.
        out = subprocess.run(
            [tool, "--ready", "--status=forged"],
            env={**os.environ, "NOTIFY_SOCKET": str(tree.temp_dir / "notify" / "quiet.sock")},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        s = one(c, "quiet")
        assert s.ready is False and s.notify_status == "", s
        # A raw datagram from this very test process is ignored too.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"READY=1", str(tree.temp_dir / "notify" / "quiet.sock"))
        (tree.data_dir / "quiet" / "go").write_text("")
        wait_for(lambda: one(c, "quiet").ready, what="quiet ready by its own word")
        assert one(c, "quiet").notify_status == "mine"
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert "ignored a datagram from pid" in log


#: Says READY=1, WATCHDOG=1 and a numbered STATUS= every 0.1 s with its own socket code (it
#: must outlive a daemon's death, when nobody reads: systemd-notify's barrier would fail then).
TICKER = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
address = os.environ["NOTIFY_SOCKET"]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n = 0
while True:
    n += 1
    try:
        sock.sendto(f"READY=1\\nWATCHDOG=1\\nSTATUS=tick {n}".encode(), address)
    except OSError:
        pass  # no daemon reads right now
    time.sleep(0.1)
"""


def _tick(s) -> int:
    return int(s.notify_status.split()[1]) if s.notify_status.startswith("tick ") else 0


@pytest.mark.timeout(120)
def test_a_readopted_notify_service_is_heard_by_the_new_daemon(root, daemons) -> None:
    project = "[services.ticker]\nnotify = true\nwatchdog_sec = 1.0\nstart_secs = 0\n"
    tree = build_tree(root, {"ticker": TICKER}, project)
    d = daemons(tree).start()
    with d.client() as c:
        pid = wait_for(lambda: (s := one(c, "ticker")).ready and _tick(s) and s.pid)
    d.kill9()
    d2 = daemons(tree).start()
    with d2.client() as c:
        s = one(c, "ticker")
        assert s.pid == pid and s.ready is True and "adopted" in s.reason
        # The new daemon hears it (the address is the same), for longer than two watchdog
        # periods: the pings reach it, so the watchdog never fires.
        start = wait_for(lambda: _tick(one(c, "ticker")), what="a STATUS= heard after adoption")
        wait_for(lambda: _tick(one(c, "ticker")) > start + 25, what="2.5 s more of ticks")
        s = one(c, "ticker")
        assert s.pid == pid and s.restarts == 0 and s.state == "running", s


def test_watchdog_sec_without_notify_is_refused(root) -> None:
    from daemonkit import daemon_refuses

    build_tree(root, {"a": "import time\ntime.sleep(60)\n"}, "[services.a]\nwatchdog_sec = 5\n")
    line = daemon_refuses(root)
    assert "services.a.watchdog_sec: needs notify = true" in line, line


async def test_monitor_stopping_withdraws_ready_and_trigger_fails_at_once(tmp_path: Path) -> None:
    """NotifyMonitor's rules, fed messages directly (the socket path is covered above)."""
    import asyncio

    from runyard.daemon.notify import NotifyMessage, NotifyMonitor

    said: list[tuple[bool, str]] = []
    failed: list[str] = []
    me = ProcessHandle(pid=os.getpid(), pgid=os.getpgid(0), create_time=0.0)
    channel = NotifyChannel(str(tmp_path / "n.sock"))
    m = NotifyMonitor(
        channel,
        me,
        watchdog_sec=3600.0,
        on_change=lambda ready, detail: said.append((ready, detail)),
        on_status=lambda: None,
        on_fail=failed.append,
    )
    m.start()
    try:
        m.apply(NotifyMessage(ready=True))
        m.apply(NotifyMessage(stopping=True))
        assert said == [(True, "the service said READY=1"), (False, "the service said STOPPING=1")]
        m.apply(NotifyMessage(ready=True))  # once stopping, never ready again
        assert len(said) == 2 and m._timer is None  # and the watchdog is disarmed
        m.stopping = False
        m.apply(NotifyMessage(watchdog_sec=0.05))  # WATCHDOG_USEC= shortens it: it fires
        deadline = asyncio.get_running_loop().time() + 5
        while not failed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert failed == ["watchdog timeout"]
        failed.clear()
        m.start()
        m.apply(NotifyMessage(watchdog="trigger"))
        assert failed == ["watchdog triggered by the service (WATCHDOG=trigger)"]
    finally:
        m.stop()
        channel.close()
