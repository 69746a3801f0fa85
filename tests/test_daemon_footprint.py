"""An idle daemon stays small and asleep (issue 16): what its start imports, what wakes it.

Real daemons and interpreters; what a daemon reads is seen from outside, in /proc/PID/io
(``syscr``: every read-family syscall) and /proc/PID/maps (the extension modules loaded).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonkit import build_tree, thread_wakeups, wait_for

from runyard.daemon.stats import LINGER, STATS_INTERVAL
from runyard.protocol.transport import HEARTBEAT_MS
from runyard.runtime.config import env as env_module
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(120)

SLEEPER = "import time\nwhile True:\n    time.sleep(1000)\n"

#: Modules only some requests need: none may be imported by a daemon's start.
ONLY_ON_REQUEST = (
    "watchfiles",  # the disk watch: on the first `du` subscriber
    "runyard.daemon.diskwatch",
    "runyard.runtime.core.du",  # `runyard du`
    "runyard.runtime.acquisition.ensure",  # `runyard ensure`
    "runyard.runtime.acquisition.fetch",
    "runyard.runtime.runs.run",  # sealed runs, verify, replay
    "runyard.runtime.runs.verify",
    "runyard.runtime.bundle",
    "runyard.protocol.client",  # a client library: the daemon is the server
    "runyard.protocol.ssh_relay",
    "runyard.daemon.cli.control_cmd",  # other commands of the CLI
    "importlib.metadata",  # 3 MB for the own version string
    "urllib.request",
    "tarfile",
)

#: What a started daemon must not hold (issue 16, idle RSS): OpenSSL (ssl through asyncio,
#: hashlib: ~4.5 MiB together, docs/ARCHITECTURE.md "Idle footprint"; seen in its maps: the
#: import log also shows asyncio's attempts at ssl while lazy_ssl hides it), the http client
#: stack the startup checksum check pulled in through acquisition.fetch, psutil (0.9 MiB for
#: what /proc/PID/stat and /proc/stat give: daemon/proctable.py).
NOT_MAPPED = ("libssl", "libcrypto", "/_ssl.", "/_hashlib.", "/_psutil_linux.")
NOT_IN_A_STARTED_DAEMON = (
    "urllib.request",
    "http.client",
    "email",
    "runyard.runtime.acquisition.fetch",
    "psutil",
    "zmq.auth",  # the ZAP authenticator: only with [daemon] tcp
    "logging.handlers",  # (with pickle) for one rotating file handler
    "calendar",  # a log tail from the files
    "ctypes.util",  # find_library, never called (logs/heap.py imported it; issue 16 cold start)
    "runyard.runtime.ops.audit_verify",  # `runyard audit verify`: the daemon only writes
)


def _syscr(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError(f"no syscr in /proc/{pid}/io")


def test_a_daemon_start_imports_no_module_only_some_requests_need() -> None:
    """What `python -m runyard.daemon daemon ...` imports before it serves: the CLI's daemon
    parser, then runyard.daemon.main (the rest comes with requests)."""
    code = (
        "import json, sys\n"
        "sys.argv = ['runyard', 'daemon', '--root', '/nonexistent']\n"
        "from runyard.daemon import cli\n"
        "cli.daemon_parser().parse_args(sys.argv[1:])\n"
        "import runyard.daemon.main\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(ONLY_ON_REQUEST), sorted(loaded & set(ONLY_ON_REQUEST))


def test_runyard_daemon_help_and_the_full_parser_agree_on_the_daemon_command() -> None:
    from runyard.daemon.cli import build_parser, daemon_parser

    def daemon_options(parser) -> list[str]:  # type: ignore[no-untyped-def]
        sub = next(a for a in parser._actions if a.dest == "command")
        return sorted(o for a in sub.choices["daemon"]._actions for o in a.option_strings)

    assert daemon_options(daemon_parser()) == daemon_options(build_parser())


def test_starting_many_services_loads_the_manifest_once(root, monkeypatch) -> None:
    """load_specs resolved each service's env with a manifest load of its own: N loads, each
    validating N entries (a start of 500 sleepers took 22 s)."""
    from runyard.daemon.spec import load_specs
    from runyard.runtime.config.project import load_project

    tree: RuntimeTree = build_tree(root, {f"s{i}": SLEEPER for i in range(5)})
    loads = []
    real = env_module.load_manifest
    monkeypatch.setattr(env_module, "load_manifest", lambda t: loads.append(t) or real(t))
    specs, _ = load_specs(tree, load_project(root.parent / "runyard.toml"))
    assert len(specs) == 5
    assert loads == []


def test_an_idle_daemon_reads_nothing_and_a_one_shot_status_still_shows_cpu_and_rss(
    root, daemons
) -> None:
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER})
    d = daemons(tree).start()
    pid = d.proc.pid
    with d.client() as c:  # status calls: the sampler runs for LINGER seconds after the last
        wait_for(lambda: {s.state for s in c.status().services} == {"running"}, 20, "running")

    def quiet_for_an_interval() -> bool:
        before = _syscr(pid)
        time.sleep(STATS_INTERVAL + 0.5)  # one sampling interval, then compare
        return _syscr(pid) == before

    wait_for(quiet_for_an_interval, LINGER + 4 * STATS_INTERVAL, "the sampler to stop")
    assert quiet_for_an_interval(), "the idle daemon read something"
    assert "_rust_notify" not in Path(f"/proc/{pid}/maps").read_text()  # no disk watch

    with d.client() as c:  # the first status after the quiet spell samples before answering
        rows = c.status().services
    assert all(s.cpu_percent is not None and s.rss for s in rows), rows


def test_an_idle_daemon_nobody_is_connected_to_wakes_none_of_its_threads(root, daemons) -> None:
    """Issue 16's idle CPU: the read count (above) misses a timer or a thread that wakes and
    reads nothing. Once the sampler's LINGER is over, none of the daemon's threads (the loop,
    zmq's I/O and reaper threads, the spawner) runs."""
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER})
    d = daemons(tree).start()
    pid = d.proc.pid
    with d.client() as c:  # closed below: a connected client's heartbeats wake zmq's I/O thread
        wait_for(lambda: {s.state for s in c.status().services} == {"running"}, 20, "running")

    def quiet_for_an_interval() -> bool:
        before = thread_wakeups(pid)
        time.sleep(STATS_INTERVAL + 0.5)
        return thread_wakeups(pid) == before

    wait_for(quiet_for_an_interval, LINGER + 4 * STATS_INTERVAL, "the daemon to fall quiet")
    assert quiet_for_an_interval(), "an idle daemon's thread woke up"


def test_an_idle_client_over_ipc_wakes_no_daemon_thread(root, daemons) -> None:
    """Found once the stable_secs timers were gone: what was left of the bench's idle CPU
    (0.05-0.07 % over 10 s) was zmq's I/O thread answering the connected client's heartbeat
    PING every 500 ms. Over ipc a dead daemon's end closes by itself, so a client sends
    heartbeats over tcp only: a client left open and idle (a TUI, a script) wakes none of the
    daemon's threads."""
    tree = build_tree(root, {"a": SLEEPER}, "[services.a]\nstart_secs = 0\n")
    d = daemons(tree).start()
    pid = d.proc.pid
    with d.client() as c:
        c.hello()  # the control connection is up; hello buys no CPU/RSS sampling
        time.sleep(0.5)  # the reply and the boot's last state.json write are behind us
        before = thread_wakeups(pid)
        time.sleep(5 * HEARTBEAT_MS / 1000)
        assert thread_wakeups(pid) == before, "an idle ipc client's connection woke the daemon"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc: no request to the daemon)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def test_a_start_leaves_no_wakeup_for_its_stable_secs(root, daemons) -> None:
    """Found in the bench's idle window (8-18 s after its services started): every start armed
    a one-shot ``stable_secs`` timer, and 10 s later the 50 of one pass woke the idle daemon
    (12-22 ms of CPU in one loop turn on a VM whose pages had gone cold). Whether a run was
    stable is now judged when it ends. Nothing asks the daemon anything (``start`` says hello
    only), so no CPU/RSS sampling runs either: from a second after the spawns until a second
    past ``stable_secs``, none of its threads wakes."""
    stable = 2.5
    project = "".join(
        f"[services.{n}]\nstart_secs = 0\nstable_secs = {stable}\n" for n in ("a", "b")
    )
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER}, project)
    d = daemons(tree).start()
    pid = d.proc.pid
    wait_for(lambda: len(_children(pid)) == 2, 20, "both services spawned")
    spawned = time.monotonic()  # each run's stable mark is at most `stable` from now
    time.sleep(1.0)  # the boot's last state.json write and the hello's disconnect
    before = thread_wakeups(pid)
    time.sleep(max(0.0, spawned + stable + 1.0 - time.monotonic()))
    assert thread_wakeups(pid) == before, "the idle daemon woke up around its services' stable_secs"


def test_the_disk_watch_starts_with_its_first_subscriber(root, daemons) -> None:
    tree = build_tree(root, {"a": SLEEPER})
    d = daemons(tree).start()
    maps = Path(f"/proc/{d.proc.pid}/maps")
    assert "_rust_notify" not in maps.read_text()
    with d.client() as c, c.events(["du"]) as stream:
        wait_for(lambda: "_rust_notify" in maps.read_text(), 20, "the disk watch to start")
        # The first report may race the stream's snapshot (and be taken as seen): a change
        # makes the next one.
        data = tree.data_dir / "a"
        data.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 20
        event = None
        i = 0
        while event is None and time.monotonic() < deadline:
            (data / f"f{i % 5}").write_bytes(b"x" * 4096)
            i += 1
            event = stream.get(timeout=0.5)
        assert event is not None and event.topic == "du", "no du event within 20 s"


def test_a_young_process_gets_no_lifetime_cpu_its_start_up_would_dominate() -> None:
    """The first status after a quiet spell showed a just-started Python service at 10-20 %
    CPU (its interpreter's start-up over half a second of life)."""
    import os

    from runyard.daemon.stats import LIFETIME_MIN, lifetime_percent, read_sample

    me = read_sample(os.getpid())
    assert me is not None
    tick = os.sysconf("SC_CLK_TCK")
    born = me.start / tick
    assert lifetime_percent(me, born + LIFETIME_MIN / 2) is None
    old = me._replace(cpu_ticks=tick)  # one CPU second over 100 s of life
    assert lifetime_percent(old, born + 100) == 1.0


def _imported(importtime_log: str) -> set[str]:
    """The modules named in ``python -X importtime`` output."""
    return {
        line.split("|")[2].strip()
        for line in importtime_log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_a_started_daemon_holds_no_openssl_and_no_http_client(root, daemons, monkeypatch) -> None:
    """A daemon with running services imported ssl (asyncio's own import), hashlib (sha256 of
    audit lines, endpoint names, spec digests) and urllib.request (the startup checksum check
    took hash_file from acquisition.fetch): 36 MiB idle with 50 sleepers, 31 without them."""
    tree = build_tree(root, {"a": SLEEPER, "b": SLEEPER})
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # the daemon logs every import it makes
    d = daemons(tree).start()
    with d.client() as c:
        c.start(all=True)
        wait_for(lambda: {s.state for s in c.status().services} == {"running"}, 20, "running")
        c.stats()  # a one-shot sample of CPU and RSS, as `runyard top` asks
    maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
    assert [lib for lib in NOT_MAPPED if lib in maps] == []
    imported = _imported((root.parent / "daemon.stderr").read_text())
    assert "runyard.daemon.main" in imported  # the log is the daemon's
    assert sorted(imported & set(NOT_IN_A_STARTED_DAEMON)) == []


class _Snapshot(dict):  # type: ignore[type-arg]
    """A process table that can be weakly referenced, to count the ones alive."""


def test_stops_waiting_together_hold_no_process_table_each(tmp_path, monkeypatch) -> None:
    """Each waiting stop kept its last snapshot of the whole process table across its sleep: a
    stop of 50 services held up to 50 at once (~100 KB each on a busy box), a peak the idle
    daemon kept (idle RSS 30.4-32.7 MiB after the bench's stop rounds, 29.5 without it)."""
    import asyncio
    import os
    import signal
    import weakref

    from runyard.daemon import process, sweep

    made: list[weakref.ref[_Snapshot]] = []
    last: list[object] = [None, None]  # the real table and its snapshot (one per real table)
    real = sweep.proc_table

    def counted(max_age: float = 0.0) -> _Snapshot:
        table = real(max_age)
        if table is not last[0]:
            last[:] = [table, _Snapshot(table)]
            made.append(weakref.ref(last[1]))  # type: ignore[arg-type]
        return last[1]  # type: ignore[return-value]

    monkeypatch.setattr(sweep, "proc_table", counted)
    argv = ["sh", "-c", "trap '' TERM; exec sleep 60"]  # ignores SIGTERM: its stop waits
    handles: list = []

    async def scenario() -> tuple[int, list]:
        with open(os.devnull, "wb") as null:
            for _ in range(8):
                h = process.spawn(
                    argv,
                    env=dict(os.environ),
                    cwd=tmp_path,
                    stdout=null.fileno(),
                    stderr=null.fileno(),
                )
                handles.append(h)
        for h in handles:  # exec'd sleep: the trap is set
            wait_for(lambda h=h: Path(f"/proc/{h.pid}/comm").read_text().strip() == "sleep", 10)
        stops = []
        for h in handles:  # one after another: each polls on its own schedule
            stops.append(asyncio.ensure_future(process.stop_process(h, stop_timeout=1.0)))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # every stop is asleep in its wait now (one loop, no threads)
        import gc

        gc.collect()
        held = sum(r() is not None for r in made)
        return held, await asyncio.gather(*stops)

    try:
        held, results = asyncio.run(scenario())
    finally:
        for h in handles:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(h.pgid, signal.SIGKILL)
    assert all(r.killed and r.survivors == [] for r in results), results
    assert held <= 1, f"{held} process tables alive while the stops waited"
