"""The daemon end to end: real daemon process, real services, real sockets, the real client."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from daemonkit import SLEEPER, build_tree, wait_for

from runyard.protocol.client import Conflict, DaemonUnreachable, NotFound, OperationFailed

pytestmark = pytest.mark.timeout(90)


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for init to reap it (it runs nothing)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def states(client) -> dict[str, str]:
    return {s.name: s.state for s in client.status().services}


def test_starts_autostart_services_and_stops_them(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER}, "[services.b]\nautostart = false\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: states(c) == {"a": "running", "b": "stopped"}, what="a running, b stopped")
        (a,) = c.status(["a"]).services
        assert a.pid and a.pgid == a.pid and a.wanted == "up"
        assert os.getpgid(a.pid) == a.pid
        c.start(["b"])
        wait_for(lambda: states(c)["b"] == "running", what="b running")
        reply = c.stop(["a"])
        assert reply.services[0].state == "stopped"
        assert gone(a.pid)
        with pytest.raises(NotFound, match="no service 'nope'"):
            c.start(["nope"])


def test_crash_loop_backs_off_then_goes_fatal(root, daemons) -> None:
    crasher = "import sys\nprint('crashing', flush=True)\nsys.exit(3)\n"
    project = """
    [services.crash]
    restart = "always"
    max_restarts = 3
    start_secs = 0.5
    backoff = { initial = 0.1, multiplier = 2.0, max = 5.0, jitter = 0.0 }
    """
    tree = build_tree(root, {"crash": crasher}, project)
    d = daemons(tree).start()
    with d.client() as c:
        delays = []

        def observe() -> bool:
            (s,) = c.status(["crash"]).services
            m = re.search(r"restart in ([0-9.]+)s", s.reason)
            if s.state == "backoff" and m and (not delays or float(m.group(1)) != delays[-1]):
                delays.append(float(m.group(1)))
            return s.state == "fatal"

        wait_for(observe, 30, "crash to go fatal")
        (s,) = c.status(["crash"]).services
        assert s.restarts == 3 and s.last_exit == 3
        assert "gave up after 3 restarts" in s.reason
        assert delays == sorted(delays) and delays[-1] >= 0.4  # 0.1, 0.2, 0.4: it grew
        # A manual start gives a fatal service a new chance.
        c.start(["crash"])
        wait_for(
            lambda: c.status(["crash"]).services[0].state in ("starting", "backoff"),
            what="restarted",
        )


def test_readiness_gates_a_dependant_and_stop_all_goes_in_reverse(root, daemons) -> None:
    order_file = root.parent / "order.txt"
    slow_db = f"""
    import signal, socket, sys, time
    def bye(*a):
        with open({str(order_file)!r}, "a") as f:
            f.write("db\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    time.sleep(1.0)   # not ready for a while
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
    print("listening", flush=True)
    while True:
        time.sleep(0.05)
    """
    app = f"""
    import signal, sys, time
    def bye(*a):
        with open({str(order_file)!r}, "a") as f:
            f.write("app\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, bye)
    while True:
        time.sleep(0.05)
    """
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project = f"""
    [services.db]
    args = ["{port}"]
    readiness = {{ kind = "tcp", port = {port}, interval = 0.1, timeout = 0.5 }}
    [services.app]
    depends_on = {{ db = "ready" }}
    """
    tree = build_tree(root, {"db": slow_db, "app": app}, project)
    d = daemons(tree).start()
    with d.client() as c:
        (app_status,) = c.status(["app"]).services
        db_status = c.status(["db"]).services[0]
        if not db_status.ready:
            assert app_status.state == "stopped" and "waiting for db (ready)" in app_status.reason
        wait_for(lambda: states(c)["app"] == "running", 20, "app running")
        db_status = c.status(["db"]).services[0]
        assert db_status.ready is True and "127.0.0.1" in db_status.ready_detail
        c.stop([], all=True)
    assert order_file.read_text().split() == ["app", "db"]


def test_stop_kills_a_grandchild_that_ignores_sigterm(root, daemons) -> None:
    pids = root.parent / "grandchild.pid"
    forker = f"""
    import os, signal, time
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with open({str(pids)!r}, "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(0.05)
    while True:
        time.sleep(0.05)
    """
    tree = build_tree(root, {"forker": forker}, "[services.forker]\nstop_timeout = 0.5\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: pids.exists() and pids.read_text(), what="grandchild pid")
        grandchild = int(pids.read_text())
        (s,) = c.stop(["forker"]).services
        assert s.state == "stopped" and "killed" in s.reason
    assert gone(grandchild)


def test_kill9_daemon_readopts_without_duplicates_or_lost_lines(root, daemons) -> None:
    counter = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    i = 0
    while True:
        print(f"line {i}", flush=True)
        i += 1
        time.sleep(0.005)
    """
    tree = build_tree(root, {"counter": counter})
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: states(c)["counter"] == "running", what="running")
        pid = c.status(["counter"]).services[0].pid
    d.kill9()
    log = tree.logs_dir / "counter" / "counter.log"
    before = log.read_text().count("\n")
    # While no daemon runs, the child keeps writing into its FIFO (nothing lost, no SIGPIPE).
    wait_for(lambda: os.path.exists(f"/proc/{pid}"), what="child alive")
    d2 = daemons(tree).start()
    with d2.client() as c:
        (s,) = c.status(["counter"]).services
        assert s.pid == pid and s.state == "running"  # adopted, not restarted
        assert "adopted" in s.reason
        wait_for(lambda: log.read_text().count("\n") > before + 50, what="log keeps growing")
        c.stop(["counter"])
    numbers = [int(m) for m in re.findall(r" out line (\d+)$", log.read_text(), re.M)]
    assert numbers == list(range(len(numbers))), "a line was lost or duplicated"
    running = subprocess.run(
        ["pgrep", "-f", str(tree.bin_dir / "counter")], capture_output=True, text=True
    )
    assert running.stdout.strip() == ""


def test_reload_restarts_only_what_changed(root, daemons) -> None:
    tree = build_tree(root, {"keep": SLEEPER, "change": SLEEPER, "drop": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: set(states(c).values()) == {"running"}, what="all running")
        before = {s.name: s.pid for s in c.status().services}
        project = tree.root.parent / "runyard.toml"
        project.write_text(project.read_text() + '[services.change]\nenv = { X = "2" }\n')
        manifest = (tree.root / "manifest.json").read_text()
        import json

        doc = json.loads(manifest)
        doc["services"] = [s for s in doc["services"] if s["name"] != "drop"]
        (tree.root / "manifest.json").write_text(json.dumps(doc))
        reply = c.reload()
        assert "removed 1, restarted 1" in reply.message
        wait_for(lambda: states(c) == {"keep": "running", "change": "running"}, what="reloaded")
        after = {s.name: s.pid for s in c.status().services}
        assert after["keep"] == before["keep"]
        assert after["change"] != before["change"]
    assert gone(before["drop"])


def test_second_daemon_exits_naming_the_first(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    d = daemons(tree).start()
    out = subprocess.run(
        [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(tree.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert f"a daemon (pid {d.proc.pid}) is already running" in out.stderr


def test_socket_dir_is_private(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    daemons(tree).start()
    assert stat.S_IMODE(os.stat(tree.temp_dir).st_mode) == 0o700
    assert (tree.temp_dir / "control.sock").exists()


def test_logs_tail_and_signal(root, daemons) -> None:
    hup = """
    import signal, sys, time
    signal.signal(signal.SIGHUP, lambda *a: print("got hup", flush=True))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("hello out", flush=True)
    print("hello err", file=sys.stderr, flush=True)
    while True:
        time.sleep(0.05)
    """
    tree = build_tree(root, {"hup": hup})
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: len(c.logs_tail("hup").lines) >= 2, what="two lines")
        lines = c.logs_tail("hup").lines
        assert {(x.stream, x.line) for x in lines} == {("out", "hello out"), ("err", "hello err")}
        c.signal("hup", "HUP")
        wait_for(
            lambda: any(x.line == "got hup" for x in c.logs_tail("hup").lines), what="hup logged"
        )
        c.stop(["hup"])
        with pytest.raises(Conflict):
            c.signal("hup", "HUP")


def test_shutdown_stops_everything_and_client_sees_daemon_gone(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: states(c)["a"] == "running", what="running")
        pid = c.status().services[0].pid
        c.shutdown()
    d.proc.wait(timeout=30)
    assert gone(pid)
    with pytest.raises(DaemonUnreachable), d.client(timeout=0.5) as c:
        c.status()
    # A clean shutdown keeps what was wanted for the next daemon, with no process recorded.
    recorded = json.loads((tree.temp_dir / "state.json").read_text())["services"]["a"]
    assert recorded["wanted"] == "up" and recorded["pid"] is None


def test_sighup_reloads(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: states(c)["a"] == "running", what="running")
        pid = c.status().services[0].pid
        project = Path(tree.root.parent / "runyard.toml")
        project.write_text(project.read_text() + '[services.a]\nenv = { Y = "1" }\n')
        os.kill(d.proc.pid, signal.SIGHUP)
        wait_for(
            lambda: c.status().services[0].pid not in (None, pid), what="a restarted by SIGHUP"
        )


def test_ensure_and_du_through_the_daemon(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    d = daemons(tree).start()
    with d.client() as c:
        binary = c.ensure("a", "1.0.0").binary
        assert binary.version == "1.0.0" and binary.installed is False
        assert binary.fetched is False  # already there: no download
        report = c.du().report
        a = next(s for s in report.services if s.name == "a")
        assert a.bin.files == 1 and a.cache.files == 1
        with pytest.raises(OperationFailed, match="no service 'ghost'"):
            c.ensure("ghost", "latest")
