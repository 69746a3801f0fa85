"""The daemon's descriptor table grows once, before ZeroMQ's threads start (daemon/fd_room.py).

Finding (issue 16, cold start): a cold start of 50 services grew the table three times after
the control socket's bind (64 -> 512 slots), and with threads sharing the table every growth
waited for an RCU grace period: one FIFO open took 13 ms, ~20 ms of a ~260 ms cold start.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from daemonkit import build_tree, daemon_refuses, wait_for

from runyard.daemon.fd_room import FDS_PER_SERVICE, MOST

pytestmark = pytest.mark.timeout(120)

IDLE = "import time\nwhile True:\n    time.sleep(1000)\n"

#: Runs the daemon with ControlServer.bind wrapped: what the table holds, and how many threads
#: the process has, when the bind is about to start ZeroMQ's I/O threads.
AT_BIND = """
import os, sys
from pathlib import Path
from runyard.daemon import server
from runyard.daemon.cli import main

real = server.ControlServer.bind

def bind(self):
    with open("/proc/self/status") as f:
        slots = next(line.split()[1] for line in f if line.startswith("FDSize:"))
    threads = len(os.listdir("/proc/self/task"))
    Path(os.environ["AT_BIND"]).write_text(f"{slots} {threads}")
    return real(self)

server.ControlServer.bind = bind
sys.argv = ["runyard", *sys.argv[1:]]
sys.exit(main())
"""


def _slots(pid: int | str) -> int:
    """``FDSize`` of /proc/PID/status: the slots of its descriptor table."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("FDSize:"))


def _room(services: int) -> int:
    return 64 + FDS_PER_SERVICE * services


def _idle_services(count: int, first: int = 0) -> tuple[dict[str, str], str]:
    names = [f"s{i:03d}" for i in range(first, first + count)]
    return {n: IDLE for n in names}, "".join(f"[services.{n}]\nautostart = false\n" for n in names)


def test_a_cold_start_grows_the_descriptor_table_before_zeromq_starts_its_threads(
    root, daemons, monkeypatch
) -> None:
    services, project = _idle_services(60)
    tree = build_tree(root, services, project)
    script = root.parent / "at_bind.py"
    script.write_text(AT_BIND)
    monkeypatch.setenv("AT_BIND", str(root.parent / "at_bind.txt"))
    d = daemons(tree, [sys.executable, str(script)]).start()
    slots, threads = map(int, (root.parent / "at_bind.txt").read_text().split())
    assert threads == 1  # nothing shares the table yet: growing it waits for no grace period
    # before: the size inherited from the launcher (64-256 here), grown by the boot under threads
    assert slots >= _room(60), slots
    assert d.proc is not None and _slots(d.proc.pid) == slots  # the boot needed no growth


def test_a_reload_that_adds_services_grows_the_table_for_them_at_once(root, daemons) -> None:
    services, project = _idle_services(2)
    tree = build_tree(root, services, project)
    d = daemons(tree).start()
    assert d.proc is not None
    assert _slots(d.proc.pid) < _room(72)
    more, more_project = _idle_services(70, first=2)
    tree = build_tree(root, {**services, **more}, project + more_project)
    with d.client(timeout=60) as c:
        c.reload()
        wait_for(lambda: len(c.status().services) == 72, 30, "72 services after the reload")
    assert _slots(d.proc.pid) >= _room(72)


def _in_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter (its own descriptor table and limits); its stdout."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_the_room_stays_under_the_hard_descriptor_limit_and_replaces_nothing_open() -> None:
    out = _in_child(
        """
        import os, resource
        from runyard.daemon.fd_room import make_room
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
        r, w = os.pipe()
        os.dup2(w, 199)  # the top the limit allows is open already: it must stay ours
        before = os.fstat(199).st_ino
        top = make_room(1000)
        print(top, os.fstat(199).st_ino == before, len(os.listdir("/proc/self/fd")))
        """
    )
    top, kept, open_fds = out.split()
    assert int(top) == 0  # no free descriptor at or above 199: nothing asked, nothing replaced
    assert kept == "True"
    assert int(open_fds) < 10


def test_the_room_asked_for_is_what_the_services_need_capped() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the child raises its soft to it
    ceiling = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    most = min(MOST, ceiling - 1)
    assert most > _room(50), hard  # the box allows the room of 50 services
    out = _in_child(
        """
        import os
        from runyard.daemon.fd_room import make_room
        def slots():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("FDSize:"))
        small = make_room(50), slots()
        huge = make_room(10**6), slots()
        print(*small, *huge, len(os.listdir("/proc/self/fd")))
        """
    )
    top50, slots50, top_huge, slots_huge, open_fds = map(int, out.split())
    assert top50 == _room(50) and slots50 >= top50 + 1
    assert top_huge == most and slots_huge >= most + 1  # under MOST and the soft limit
    assert open_fds < 10  # the probes were given back


def test_no_room_is_asked_for_a_limit_below_the_daemon_own_needs() -> None:
    code = """
        import resource
        from runyard.daemon.fd_room import make_room
        resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))
        print(make_room(50))
    """
    assert _in_child(code) == "0"


#: Runs ``python -m runyard.daemon`` under a soft RLIMIT_NOFILE of 128 (the hard one as it is).
LOW_SOFT = ["/bin/sh", "-c", 'ulimit -S -n 128 && exec "$0" "$@"', sys.executable, "-m"]
LOW_SOFT.append("runyard.daemon")


def _open_files(pid: int) -> tuple[str, str]:
    """(soft, hard) of "Max open files" in /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


def test_a_daemon_of_more_services_than_its_soft_descriptor_limit_holds_runs_them_all(
    root, daemons
) -> None:
    """Finding: 500 services under a soft limit of 1,024 (a login shell's, a systemd unit's)
    crashed the daemon at its 251st service (EMFILE opening a log spool). Scaled down: 24
    services under 128. The daemon raises its own soft limit; each program gets 128 back,
    whichever way it is started (the cgroup's shell step, the subreaper's, a child step for
    rlimits), unless it sets its own ``nofile``."""
    services, project = {}, ""
    for i in range(21):
        services[f"s{i:02d}"] = IDLE
        project += f"[services.s{i:02d}]\n"
    services.update(sub=IDLE, core=IDLE, own=IDLE)
    project += '[services.sub]\ncontainment = "subreaper"\n[services.core]\ncore = 0\n'
    project += "[services.own]\nnofile = 100\n"
    probed = root.parent / "probe_limits.txt"  # what the exec readiness probe of s00 got
    probe = f"grep 'Max open files' /proc/self/limits > {probed}"
    project = project.replace(
        "[services.s00]\n",
        f'[services.s00]\nreadiness = {{ kind = "exec", command = ["/bin/sh", "-c", "{probe}"] }}\n',
    )
    tree = build_tree(root, services, project)
    d = daemons(tree, LOW_SOFT).start()
    assert d.proc is not None
    daemon_soft, hard = _open_files(d.proc.pid)
    assert int(daemon_soft) > 128
    with d.client(timeout=30) as c:
        rows = wait_for(
            lambda: (
                (rows := c.status().services)
                and all(s.state == "running" and s.pid for s in rows)
                and rows
            ),
            60,
            "every service running",
        )
    got = {s.name: _open_files(s.pid) for s in rows}
    assert got.pop("own") == ("100", "100")
    assert set(got.values()) == {("128", hard)}, got
    assert probed.read_text().split()[3:5] == ["128", hard]  # s00 runs: its probe passed
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert f"RLIMIT_NOFILE raised from 128 to {daemon_soft} for 24 services" in log


def test_a_hard_descriptor_limit_too_low_for_the_services_is_one_line_not_a_crash(root) -> None:
    services, project = _idle_services(60)
    tree = build_tree(root, services, project)
    launcher = ["/bin/sh", "-c", 'ulimit -n 100 && exec "$0" "$@"', sys.executable, "-m"]
    line = daemon_refuses(tree.root, launcher=[*launcher, "runyard.daemon"])
    assert "out of open files at " in line, line
    assert "RLIMIT_NOFILE is 100 (hard 100); raise its hard limit" in line, line
    log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
    assert "60 services may hold up to 544 open files and RLIMIT_NOFILE allows 100" in log
    assert "daemon crashed" not in log


def test_an_engine_gets_the_soft_descriptor_limit_its_daemon_had_not_the_raised_one(
    tmp_path,
) -> None:
    """Engines (sealed runs) are started by runtime/runs/process.py, not through a service's
    spawn step: they too get the soft limit back."""
    before = "resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))"
    out = _engine_in_child(
        tmp_path,
        before + "\nraised = raise_soft(1000)",
        "grep 'Max open files' /proc/self/limits",
        'print(raised, done.returncode, (tmp / "out").read_text().split()[3])',
    )
    raised, code, engine_soft = out.split()
    assert int(raised) > 1000 and code == "0"
    assert engine_soft == "128"


def test_an_engine_is_waited_for_when_its_pidfd_is_past_1024(tmp_path) -> None:
    """Finding (review): a daemon of many services holds descriptors past FD_SETSIZE, and the
    engine's pidfd then landed at 1105: select() raised "filedescriptor out of range" and the
    sealed run failed. The wait polls instead."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) holds no 1,100 descriptors")
    out = _engine_in_child(
        tmp_path,
        "raise_soft(2000)\nheld = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]",
        "exit 7",
        "print(max(held), done.returncode)",
    )
    highest, code = map(int, out.split())
    assert highest > 1024 and code == 7


def _engine_in_child(tmp: Path, before: str, script: str, after: str) -> str:
    """In a fresh interpreter: ``before``, then an engine ``sh -c script`` through run_engine
    (its exit in ``done``), then ``after``; its stdout."""
    code = "\n".join(
        [
            "import os, resource",
            "from pathlib import Path",
            "from runyard.runtime.core.nofile import raise_soft",
            "from runyard.runtime.runs.process import EngineCall, run_engine",
            f"tmp = Path({str(tmp)!r})",
            before,
            "call = EngineCall(",
            f"    argv=['/bin/sh', '-c', {script!r}], env={{'PATH': '/usr/bin:/bin'}}, cwd=tmp,",
            "    stdin=b'', stdout_path=tmp / 'out', stderr_path=tmp / 'err', timeout=30,",
            ")",
            "done = run_engine(call)",
            after,
        ]
    )
    return _in_child(code)
