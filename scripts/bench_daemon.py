"""Benchmark `daemon`: Runyard's daemon beside supervisord, Circus and pm2, in one run.

Each contender runs the same programs from the same Runyard tree, one contender at a time.
pm2 joins the cold-start, fleet, flood and scale phases when npm can install it (how it is
configured and measured: bench_daemon_pm2.py); the cold-start phase, the fleet phase's
repetition (3 daemons, median (min-max), the box's load in each) are in
bench_daemon_start.py, with the ``startstop`` phase (only start/stop 50, the contenders
alternated, never run by default) and ``--baseline DIR`` (another checkout's Runyard, for A/B in
one run; with it the flood phase alternates the contenders too, bench_daemon_ab.py); the scale
phase (500 services under a 100 MB/s flood) is bench_daemon_scale.py:

* fleet phase: 50 services (``#!/bin/sh`` + ``exec sleep 3600``), none started at boot.
  ``--runs`` rounds (2 with --quick) of: start all, poll status until all 50 report running;
  then a blocking stop of all 50 (medians are shown). In the last round, before the stop:
  the idle daemon's CPU% over 10 s (3 s with --quick, ``--idle-secs``) and its RSS, then
  `status` latency, 2000 calls (300) after 200 (50) warm-up calls. Idle means nobody has asked
  anything for 8 s (``idle_settle``): a Runyard status request buys CPU/RSS sampling for
  ``LINGER`` (5 s) and the sampler's last round comes up to one ``STATS_INTERVAL`` (2 s) later
  (daemon/stats.py); with the 2 s wait this bench had, its 10 s window held 3 rounds of 50
  /proc reads (4-6 ms of the 5-7 ms measured). Every contender waits the same. The CPU is the
  run time of every thread of the daemon (``/proc/PID/task/*/schedstat``, nanoseconds): the
  user+system ticks of ``/proc/PID/stat`` count 10 ms each, 0.1 % of a 10 s window, as much
  as the goal (the tick figure is used when a thread ended within the window).
* flood phase: the same 50 sleepers running, plus one child that writes 100-byte lines (one
  ``write`` per line, as a line-buffered program does) flat out for 5 s (1.5 s), then a
  ``DONE n t0 t1`` line (its CLOCK_MONOTONIC at its first and after its last write), then
  sleeps; the log is polled every 10 ms, reading back only below the size just polled.
  Throughput is payload bytes (n x 100) over the time from the child's first write to the
  first poll that finds the DONE line (``Flood``: up to one poll late, never shorter than the
  child's own writing; a window under 20 polls, out of order or from an earlier flood is
  shown as ``n/a (why)``, and left out of the median); CPU is the daemon process's
  user+system seconds (psutil, every thread; for pm2 its reaped helper children too) over
  that flood, per GB of payload; both are medians of 3 floods (1 with --quick), each flood's
  MB/s is printed too.
  The same again with a block-writing child (``blockflood``: the same lines, 64 KiB per
  ``write``, as a program writing through a full stdio buffer does; capped at 3 GB).
  Then one more flood with a client calling `status` flat out: the p99 of the calls made
  within it. Each flood starts after an ``os.sync()``: several GB of earlier floods still
  being written back would otherwise throttle whichever flood comes later (for every
  contender, the one writing more bytes more). ``--only-phase flood`` measures only this
  phase; the box's load over it is noted under the table. For reference, each child
  ``| cat > file`` (a plain 64 KiB pipe) is timed the same way. The child is slower per line
  when its reader wakes for every few writes, so MB/s depends on how the reader batches as
  much as on its speed, and it is noisy on a small VM. The line child's ceiling through a
  pipe is printed too (``pipe_ceiling``: a 1 MiB pipe drained every 2 ms and discarded, no
  reader waiting, nothing written; 3 runs): no supervisor captures it much faster than that.

Settings that differ from the defaults, the same for all (pm2's: bench_daemon_pm2.py):
nothing autostarts in the fleet phase; start_secs = 0 (supervisord ``startsecs=0``; Circus
has no such wait). Circus starts no ``autostart = false`` watcher on a `start` of all (nor
on a glob) and refuses a start while one runs, so its "start all" is one waiting ``start
NAME`` per watcher. stdout and stderr are captured to files for every program (Runyard: one
file with a timestamp and stream tag per line; supervisord
``stdout_logfile``/``stderr_logfile``; Circus ``FileStream``s; pm2 ``out_file``/
``error_file`` with no prefix, its default); no rotation during the flood (Runyard
``log_max_bytes`` = 1 TiB, its maximum: three block floods at 500 MB/s passed 8 GiB and
rotated under the DONE poll; ``*_logfile_maxbytes=0``, Circus ``max_bytes=0``, pm2 has
none). supervisord answers XML-RPC on a unix socket, Circus and Runyard on ipc:// sockets,
pm2 on its axon RPC unix socket. `status` means: Runyard ``Client.status()``
(a full record per service), supervisord ``getAllProcessInfo`` (a dict per process), Circus
``status`` (one state string per watcher), pm2 ``pm2.list()`` (`pm2 jlist`'s RPC: every
app's env and pidusage).

Every client call runs in a driver process started with the contender's own interpreter
(this file, ``--driver KIND ADDRESS``): Runyard's with the project venv, the anchors' with
``.bench/anchors-venv`` (made on first use: ``python -m venv`` + ``pip install supervisor
circus``), pm2's in node (bench_pm2.js). So the module level imports only the standard
library. The bench process makes itself a child subreaper, so whatever it started and
whatever got orphaned is killed at the end, on errors, Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVICES = 50
LINE = b"flood " + b"x" * 93 + b"\n"  # 100 bytes
SLEEPER = b"#!/bin/sh\nexec sleep 3600\n"
ANCHORS = {  # PyPI package -> (module to import, versions to try in turn)
    "supervisor": ("supervisor.xmlrpc", ["supervisor"]),
    "circus": ("circus.client", ["circus", "circus==0.18.0", "circus==0.17.2"]),
}


class BenchError(RuntimeError):
    """A contender could not be measured; the message says why."""


@dataclass(frozen=True)
class Settings:
    rounds: int
    status_calls: int
    warmup: int
    idle_secs: float
    flood_secs: float
    flood_cap: int
    floods: int  # quiet floods; the median is shown
    settle_secs: float = 2.0
    phases: tuple[str, ...] = ("cold", "fleet", "flood", "scale")  # --only-phase
    sessions: int = 3  # fleet phases (a daemon each), shown as median (min-max)
    launches: int = 3  # cold starts
    idle_settle: float = 8.0  # no request for this long before the idle window (see above)


def idle_settle() -> float:
    """Seconds without a request before an idle window: Runyard's sampler stops at most
    LINGER + STATS_INTERVAL after the last status (daemon/stats.py), and a second more."""
    from runyard.daemon.stats import LINGER, STATS_INTERVAL

    return LINGER + STATS_INTERVAL + 1.0


def settings_for(opts: Any) -> Settings:
    phases = tuple(getattr(opts, "only_phase", None) or ("cold", "fleet", "flood", "scale"))
    idle = getattr(opts, "idle_secs", None)
    if opts.quick:
        return Settings(
            min(opts.runs, 2),
            300,
            50,
            idle or 3.0,
            1.5,
            300_000_000,
            1,
            phases=phases,
            sessions=2,
            launches=2,
            idle_settle=idle_settle(),
        )
    return Settings(
        opts.runs,
        2000,
        200,
        idle or 10.0,
        5.0,
        1_500_000_000,
        floods=3,
        phases=phases,
        idle_settle=idle_settle(),
    )


# --------------------------------------------------------------------------- the drivers
# What runs inside each contender's own interpreter: one small adapter per client library,
# and the timed operations, written once on top of the adapters.


class RunyardAPI:
    RUNNING, STOPPED = "running", "stopped"

    def __init__(self, address: str) -> None:
        from runyard.protocol.client import Client

        self.client = Client(address, timeout=10.0)

    def status(self) -> Any:
        return self.client.status()

    def states(self) -> dict[str, str]:
        return {s.name: s.state for s in self.client.status().services}

    def start_all(self) -> None:
        self.client.start(all=True)

    def start(self, name: str) -> None:
        self.client.start([name])

    def stop(self, name: str) -> None:
        self.client.stop([name], wait=True)

    def stop_all(self) -> None:
        self.client.stop(all=True, wait=True)

    def shutdown(self) -> None:
        self.client.shutdown()

    def close(self) -> None:
        self.client.close()

    def contained(self) -> dict[str, list[str]]:
        """Per service: the containment its status says and its process's cgroup v2 path."""
        from bench_daemon_nocg import containment_of

        return containment_of(self.client.status().services)


class SupervisordAPI:
    RUNNING, STOPPED = "RUNNING", "STOPPED"

    def __init__(self, address: str) -> None:
        import xmlrpc.client

        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport("", "", "unix://" + address)
        self.rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def status(self) -> Any:
        return self.rpc.getAllProcessInfo()

    def states(self) -> dict[str, str]:
        return {p["name"]: p["statename"] for p in self.rpc.getAllProcessInfo()}

    def start_all(self) -> None:
        self.rpc.startAllProcesses(False)

    def start(self, name: str) -> None:
        self.rpc.startProcess(name, False)

    def stop(self, name: str) -> None:
        self.rpc.stopProcess(name, True)

    def stop_all(self) -> None:
        self.rpc.stopAllProcesses(True)

    def shutdown(self) -> None:
        self.rpc.shutdown()

    def close(self) -> None:
        pass  # one HTTP connection; dropped with the object


class CircusAPI:
    RUNNING, STOPPED = "active", "stopped"

    def __init__(self, address: str) -> None:
        from circus.client import CircusClient

        self.client = CircusClient(endpoint=address, timeout=10.0)

    def _call(self, command: str, **props: Any) -> dict[str, Any]:
        reply = self.client.call({"command": command, "properties": props})
        if reply.get("status") != "ok":
            raise BenchError(f"circus {command}: {reply}")
        return reply

    def status(self) -> Any:
        return self._call("status")

    def states(self) -> dict[str, str]:
        return self._call("status")["statuses"]

    def start_all(self) -> None:
        # `start` without a name (or with a glob) skips autostart = False watchers, and the
        # arbiter refuses a start while another runs: one by one, each waiting.
        for name in self.states():
            self._call("start", name=name, match="simple", waiting=True)

    def start(self, name: str) -> None:
        self._call("start", name=name)

    def stop(self, name: str) -> None:
        self._call("stop", name=name, waiting=True)

    def stop_all(self) -> None:
        self._call("stop", waiting=True)

    def shutdown(self) -> None:
        self._call("quit")

    def close(self) -> None:
        self.client.stop()


APIS: dict[str, Callable[[str], Any]] = {
    "runyard": RunyardAPI,
    "runyard@base": RunyardAPI,  # --baseline: its own checkout's client
    "runyard@subreaper": RunyardAPI,  # the cold phase's no-cgroup variant (bench_daemon_nocg)
    "supervisord": SupervisordAPI,
    "circus": CircusAPI,
}


def _until(api: Any, done: Callable[[dict[str, str]], bool], within: float, what: str) -> int:
    """Poll ``api.states()`` (5 ms apart) until ``done``; return how many polls it took."""
    deadline = time.monotonic() + within
    polls = 0
    while True:
        polls += 1
        states = api.states()
        if done(states):
            return polls
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:g}s waiting for {what}: {states}")
        time.sleep(0.005)


def connect(kind: str, address: str, within: float, pause: float = 0.05) -> Any:
    """A client that got an answer; a fresh one per try (a failed HTTP connection is stuck)."""
    deadline = time.monotonic() + within
    while True:
        api = APIS[kind](address)
        try:
            api.states()
            return api
        except Exception as exc:
            with contextlib.suppress(Exception):
                api.close()
            if time.monotonic() > deadline:
                raise BenchError(f"no answer within {within:g}s: {exc}") from None
            time.sleep(pause)


def op_wait_running(api: Any, names: list[str], within: float) -> int:
    return _until(
        api, lambda s: all(s.get(n) == api.RUNNING for n in names), within, "services to run"
    )


def op_start_all(api: Any, expect: int, within: float) -> float:
    """Seconds from sending `start all` until a status shows every service running."""
    return _timed_until(api, api.start_all, api.RUNNING, expect, within)


def op_stop_all(api: Any, expect: int, within: float) -> float:
    """Seconds from a blocking `stop all` until a status shows every service stopped (the
    first status after the call does, unless the call returned early)."""
    return _timed_until(api, api.stop_all, api.STOPPED, expect, within)


def _timed_until(
    api: Any, action: Callable[[], None], state: str, expect: int, within: float
) -> float:
    started = time.perf_counter()
    action()

    def all_there(states: dict[str, str]) -> bool:
        return len(states) == expect and all(v == state for v in states.values())

    _until(api, all_there, within, f"every service {state}")
    return time.perf_counter() - started


def op_status_latency(api: Any, calls: int, warmup: int) -> list[int]:
    """Nanoseconds per `status` call."""
    for _ in range(warmup):
        api.status()
    out = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        api.status()
        out.append(clock() - t0)
    return out


def op_flood(api: Any, name: str, query_secs: float, warmup: int) -> list[tuple[float, int]]:
    """Start ``name``; then, for ``query_secs``, call `status` flat out: (monotonic, ns) each."""
    for _ in range(warmup if query_secs else 0):
        api.status()
    api.start(name)
    out = []
    clock = time.perf_counter_ns
    end = time.monotonic() + query_secs
    while (now := time.monotonic()) < end:
        t0 = clock()
        api.status()
        out.append((now, clock() - t0))
    return out


def op_stop(api: Any, name: str) -> None:
    api.stop(name)


def op_shutdown(api: Any) -> None:
    api.shutdown()


OPS: dict[str, Callable[..., Any]] = {
    "wait_running": op_wait_running,
    "start_all": op_start_all,
    "stop_all": op_stop_all,
    "status_latency": op_status_latency,
    "flood": op_flood,
    "stop": op_stop,
    "shutdown": op_shutdown,
    "status_window": lambda api, **kw: __import__("bench_daemon_scale").op_status_window(api, **kw),
}


class ColdStart:
    """The cold-start driver: it launches the daemon itself, so the clock starts at the spawn
    and no connection attempt of another process is in between (its client library is imported
    before the clock starts)."""

    def __init__(self, kind: str, address: str) -> None:
        self.kind, self.address = kind, address
        with contextlib.suppress(Exception):  # import the client library now, off the clock
            APIS[kind](address).close()
        self.daemon: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], cwd: str, log: str, ready: str, expect: int) -> dict[str, Any]:
        """Launch, wait for the control socket file ``ready``, then poll `status` (5 ms apart)
        until ``expect`` services run: the seconds from the spawn, and the daemon's pid."""
        Path(ready).unlink(missing_ok=True)  # a stale socket file of a killed daemon
        with open(log, "ab") as out:
            started = time.perf_counter()
            self.daemon = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                start_new_session=True,
            )
        deadline = time.monotonic() + 120.0
        while not os.path.exists(ready):
            if self.daemon.poll() is not None:
                raise BenchError(f"the daemon exited ({self.daemon.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise BenchError(f"no {ready} within 120s")
            time.sleep(0.002)
        api = connect(self.kind, self.address, within=120.0, pause=0.005)
        try:
            running = api.RUNNING

            def all_running(states: dict[str, str]) -> bool:
                return len(states) == expect and all(v == running for v in states.values())

            _until(api, all_running, 120.0, f"{expect} services to run")
            secs = time.perf_counter() - started
            cpu = cpu_seconds(self.daemon.pid)
            contained = getattr(api, "contained", dict)()  # off the clock: Runyard's only
            return {"secs": secs, "pid": self.daemon.pid, "cpu": cpu, "contained": contained}
        finally:
            api.close()

    def stop(self) -> None:
        """Shut the daemon down and reap it."""
        assert self.daemon is not None
        api = connect(self.kind, self.address, within=30.0)
        with contextlib.suppress(Exception):  # the reply may not make it out
            api.shutdown()
        api.close()
        self.daemon.wait(timeout=120)


def cpu_seconds(pid: int) -> float:
    """The CPU time of ``pid``'s threads so far (their schedstat, in ns: /proc/PID/stat counts
    in 10 ms ticks), or NaN when it cannot be read. Less swayed by the box's load than wall
    time: on a shared box it tells what the daemon itself spent."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total / 1e9


def driver_main(kind: str, address: str, cold: bool = False) -> int:
    """Connect, say so; then one JSON request per stdin line, one JSON reply per stdout line,
    until stdin closes. ``cold``: connect to nothing yet, take `cold_start` / `cold_stop`."""
    try:
        api = ColdStart(kind, address) if cold else connect(kind, address, within=30.0)
        print(json.dumps({"ok": "connected"}), flush=True)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)
        return 1
    for line in sys.stdin:
        req = json.loads(line)
        try:
            op = req.pop("op")
            if cold:
                reply = {"ok": api.start(**req) if op == "cold_start" else api.stop()}
            else:
                reply = {"ok": OPS[op](api, **req)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(json.dumps(reply), flush=True)
    return 0


# --------------------------------------------------------------------------- the bench side


class Driver:
    """A driver process, spoken to one request at a time (``send`` + ``recv`` split for floods)."""

    def __init__(
        self, python: str, kind: str, address: str, stderr: Path, extra: tuple[str, ...] = ()
    ) -> None:
        script = [str(Path(__file__).resolve()), "--driver", kind, address]
        if kind == "pm2":  # node, and the driver in bench_pm2.js
            script = [str(HERE / "bench_pm2.js"), "driver", address]
        with open(stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [python, *script, *extra],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=clean_env(),
            )
        self.stderr = stderr
        self._pending: bytes | None = None

    def check(self) -> None:
        """Raise now if the driver already answered with an error (keep a good answer)."""
        assert self.proc.stdout is not None
        if self._pending is None and select.select([self.proc.stdout], [], [], 0)[0]:
            self._pending = self.proc.stdout.readline()
            if b'"error"' in self._pending:
                self.recv(0)

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        line, self._pending = self._pending, None
        if line is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
        else:
            ready = [True]
        if not line:
            tail = self.stderr.read_text(errors="replace")[-800:] if self.stderr.exists() else ""
            why = "no reply in time" if not ready else "the driver exited"
            raise BenchError(f"driver: {why}; stderr: {tail.strip() or '-'}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(reply["error"])
        return reply["ok"]

    def call(self, op: str, timeout: float = 120.0, **args: Any) -> Any:
        self.send(op, **args)
        return self.recv(timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}


@dataclass(frozen=True)
class Program:
    name: str
    path: Path
    autostart: bool
    rotate: tuple[int, int] | None = None  # (max bytes, backups); None: no rotation


@dataclass(frozen=True)
class Phase:
    name: str  # "fleet" or "flood"
    tree_root: Path  # the Runyard tree whose binaries every contender runs
    programs: tuple[Program, ...]


class Contender:
    """How one supervisor is configured and launched; every client call goes through a Driver."""

    name = ""
    cpu_of_children = False  # the daemon's CPU includes its reaped children's (pm2's helpers)
    keeper_note = ""  # what log_keeper does, for the notes under the table

    def __init__(self, base: Path, python: str) -> None:
        self.base = base
        self.python = python

    def workdir(self, phase: Phase) -> Path:
        return self.base / f"{self.name}-{phase.name}"

    def configure(self, phase: Phase) -> list[str]:
        """Write the configuration for ``phase``; return the daemon's argv (foreground)."""
        raise NotImplementedError

    def address(self, phase: Phase) -> str:
        raise NotImplementedError

    def log_path(self, phase: Phase, program: str) -> Path:
        """Where the stdout of ``program`` lands."""
        return self.workdir(phase) / "logs" / f"{program}.out"

    def log_keeper(self, phase: Phase) -> contextlib.AbstractContextManager[None]:
        """What bounds the logs of ``phase`` from outside while it runs, for a supervisor that
        cannot rotate them (pm2); nothing for the others."""
        return contextlib.nullcontext()


class Runyard(Contender):
    name = "runyard"
    service_settings = ""  # TOML lines added to every service (a variant's, bench_daemon_nocg)

    def workdir(self, phase: Phase) -> Path:
        return phase.tree_root.parent

    def configure(self, phase: Phase) -> list[str]:
        project = self.workdir(phase) / "runyard.toml"
        sections = [f'root = "{phase.tree_root.name}"\n']
        for p in phase.programs:
            size, backups = p.rotate or (1 << 40, 5)
            sections.append(
                f"[services.{p.name}]\nautostart = {str(p.autostart).lower()}\nstart_secs = 0\n"
                f"log_max_bytes = {size}\nlog_backups = {backups}\n{self.service_settings}"
            )
        project.write_text("\n".join(sections))
        root = str(phase.tree_root)
        return [
            self.python,
            "-m",
            "runyard.daemon",
            "daemon",
            "--root",
            root,
            "--project",
            str(project),
        ]

    def address(self, phase: Phase) -> str:
        return str(phase.tree_root)

    def log_path(self, phase: Phase, program: str) -> Path:
        return phase.tree_root / "logs" / program / f"{program}.log"


class Supervisord(Contender):
    name = "supervisord"

    def configure(self, phase: Phase) -> list[str]:
        wd = self.workdir(phase)
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        conf = [
            f"[unix_http_server]\nfile={wd}/supervisor.sock\nchmod=0700\n",
            f"[supervisord]\nnodaemon=true\nlogfile={wd}/supervisord.log\n"
            f"pidfile={wd}/supervisord.pid\nchildlogdir={wd}/logs\nloglevel=info\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        ]
        for p in phase.programs:
            size, backups = p.rotate or (0, 0)
            conf.append(
                f"[program:{p.name}]\ncommand={p.path}\nautostart={str(p.autostart).lower()}\n"
                "startsecs=0\nautorestart=false\n"
                f"stdout_logfile={wd}/logs/{p.name}.out\nstdout_logfile_maxbytes={size}\n"
                f"stdout_logfile_backups={backups}\n"
                f"stderr_logfile={wd}/logs/{p.name}.err\nstderr_logfile_maxbytes={size}\n"
                f"stderr_logfile_backups={backups}\n"
            )
        (wd / "supervisord.conf").write_text("\n".join(conf))
        return [str(Path(self.python).parent / "supervisord"), "-c", str(wd / "supervisord.conf")]

    def address(self, phase: Phase) -> str:
        return str(self.workdir(phase) / "supervisor.sock")


class Circus(Contender):
    name = "circus"

    def configure(self, phase: Phase) -> list[str]:
        wd = self.workdir(phase)
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        conf = [
            f"[circus]\nendpoint = ipc://{wd}/control.sock\n"
            f"pubsub_endpoint = ipc://{wd}/pubsub.sock\n"
            f"statsd = False\nloglevel = info\nlogoutput = {wd}/circusd.log\n"
        ]
        for p in phase.programs:
            size, backups = p.rotate or (0, 0)
            streams = "".join(
                f"{s}_stream.class = FileStream\n{s}_stream.filename = {wd}/logs/{p.name}.{ext}\n"
                f"{s}_stream.max_bytes = {size}\n{s}_stream.backup_count = {backups}\n"
                for s, ext in (("stdout", "out"), ("stderr", "err"))
            )
            conf.append(
                f"[watcher:{p.name}]\ncmd = {p.path}\nnumprocesses = 1\n"
                f"autostart = {p.autostart}\ncopy_env = True\n{streams}"
            )
        (wd / "circus.ini").write_text("\n".join(conf))
        return [str(Path(self.python).parent / "circusd"), str(wd / "circus.ini")]

    def address(self, phase: Phase) -> str:
        return f"ipc://{self.workdir(phase)}/control.sock"


CONTENDERS: tuple[type[Contender], ...] = (Runyard, Supervisord, Circus)


@dataclass
class Session:
    """A running daemon of one contender, its driver, and psutil's view of the daemon."""

    daemon: subprocess.Popen[bytes]
    driver: Driver
    process: Any  # psutil.Process
    children: bool = False  # count the daemon's reaped children too

    def cpu_secs(self) -> float:
        t = self.process.cpu_times()
        if self.children:
            return t.user + t.system + t.children_user + t.children_system
        return t.user + t.system


@contextlib.contextmanager
def serving(contender: Contender, phase: Phase) -> Iterator[Session]:
    """Launch the daemon and its driver; shut it down gracefully, or kill what it left."""
    import psutil

    wd = contender.workdir(phase)
    wd.mkdir(parents=True, exist_ok=True)
    argv = contender.configure(phase)
    with open(wd / "daemon.stderr", "ab") as err:
        daemon = subprocess.Popen(
            argv,
            cwd=wd,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
    driver = None
    try:
        driver = Driver(
            contender.python, contender.name, contender.address(phase), wd / "driver.err"
        )
        driver.recv(timeout=40.0)  # connected
        yield Session(daemon, driver, psutil.Process(daemon.pid), contender.cpu_of_children)
        driver.call("shutdown", timeout=60.0)
        daemon.wait(timeout=30)
    finally:
        if driver is not None:
            driver.close()
        kill_tree(daemon)


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon's group and the group of every process under it, if any is left."""
    import psutil

    groups = set()
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(child.pid))
    if proc.poll() is None:
        groups.add(proc.pid)  # started with start_new_session: its pgid is its pid
    for pgid in groups - {os.getpgrp()}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def reaping() -> Iterator[None]:
    """Become a child subreaper; at the end, kill every process still under us and reap them."""
    import psutil

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    try:
        yield
    finally:
        left, names = [], []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:  # zombies are only reaped below
                    names.append(f"{child.pid} {' '.join(child.cmdline())[:80]}")
                    left.append(child)
        for child in left:
            with contextlib.suppress(OSError):
                pgid = os.getpgid(child.pid)
                if pgid != os.getpgrp():
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    os.kill(child.pid, signal.SIGKILL)
        psutil.wait_procs(left, timeout=10)
        with contextlib.suppress(ChildProcessError):
            for _ in range(1000):  # reap zombies orphaned to us
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
        if left:
            print(f"  cleanup: killed {len(left)} leftover process(es): {'; '.join(names)}")


# --------------------------------------------------------------------------- fixtures


def build_tree(root: Path, programs: dict[str, bytes]) -> dict[str, Path]:
    """Install each ``name: program`` as service ``name`` 1.0.0 the way tests/daemonkit does:
    an archive per service, a catalog, `runtime.ensure_service`. Returns the binaries."""
    sys.path.insert(0, str(REPO / "tests"))
    from archives import archive_record, make_tar, write_catalog
    from runyard import runtime
    from runyard.runtime.core.manifest import init_tree
    from runyard.runtime.core.tree import RuntimeTree

    init_tree(RuntimeTree(root))
    repo = root.parent / "archives"
    repo.mkdir(parents=True, exist_ok=True)
    records = []
    for name, data in programs.items():
        archive = make_tar(repo / f"{name}-1.0.0.tar.gz", {f"bin/{name}": data})
        records.append(archive_record(archive, name, "1.0.0"))
    catalog = str(write_catalog(repo / "catalog.json", records))
    return {
        name: Path(runtime.ensure_service(name, "1.0.0", root=root, catalog=catalog).bin_path)
        for name in programs
    }


def flood_program(secs: float, cap: int, block: int = 0) -> bytes:
    """The flood child: ``LINE`` per ``write``, or with ``block`` whole lines per ``write``;
    then ``DONE lines t0 t1``: its CLOCK_MONOTONIC (ns) just before its first write and after
    its last (see ``Flood``), then it sleeps."""
    if block:
        return block_flood_program(secs, cap, block)
    return (
        f"#!{sys.executable}\n".encode()
        + textwrap.dedent(
            f"""\
        import os, time
        os.set_blocking(1, True)
        line, write, n = {LINE!r}, os.write, 0
        t0 = time.monotonic_ns()
        deadline = t0 / 1e9 + {secs!r}
        while n * len(line) < {cap} and time.monotonic() < deadline:
            for _ in range(1000):
                write(1, line)
            n += 1000
        write(1, b"DONE %d %d %d\\n" % (n, t0, time.monotonic_ns()))
        time.sleep(3600)
        """
        ).encode()
    )


def block_flood_program(secs: float, cap: int, block: int) -> bytes:
    per = block // len(LINE)
    return (
        f"#!{sys.executable}\n".encode()
        + textwrap.dedent(
            f"""\
        import os, time
        os.set_blocking(1, True)
        chunk, write, n = {LINE!r} * {per}, os.write, 0
        t0 = time.monotonic_ns()
        deadline = t0 / 1e9 + {secs!r}
        while n * {len(LINE)} < {cap} and time.monotonic() < deadline:
            for _ in range(100):
                write(1, chunk)
            n += {100 * per}
        write(1, b"DONE %d %d %d\\n" % (n, t0, time.monotonic_ns()))
        time.sleep(3600)
        """
        ).encode()
    )


#: The block flood child's write size (whole 100-byte lines) and its cap.
BLOCK = 64 * 1024
BLOCK_CAP = 3_000_000_000


def make_phases(base: Path, settings: Settings) -> tuple[Phase, Phase]:
    sleepers = {f"s{i:02d}": SLEEPER for i in range(SERVICES)}
    fleet_bins = build_tree(base / "fleet" / "rt", sleepers)
    flood = {
        **sleepers,
        "flood": flood_program(settings.flood_secs, settings.flood_cap),
        "blockflood": flood_program(settings.flood_secs, BLOCK_CAP, BLOCK),
    }
    flood_bins = build_tree(base / "flood" / "rt", flood)
    fleet = Phase(
        "fleet",
        base / "fleet" / "rt",
        tuple(Program(n, p, autostart=False) for n, p in fleet_bins.items()),
    )
    flooding = Phase(
        "flood",
        base / "flood" / "rt",
        tuple(Program(n, p, autostart="flood" not in n) for n, p in flood_bins.items()),
    )
    return fleet, flooding


def ensure_anchors(repo: Path) -> tuple[str, dict[str, str]]:
    """The anchors' venv (made if missing); the interpreter and, per anchor, its version or
    ``n/a (reason)``."""
    venv = repo / ".bench" / "anchors-venv"
    python = venv / "bin" / "python"
    log = repo / ".bench" / "anchors-install.log"
    if not python.exists():
        print(f"  making {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    found: dict[str, str] = {}
    for package, (module, specs) in ANCHORS.items():
        version = _anchor_version(python, package, module)
        for spec in specs if version is None else []:
            print(f"  pip install {spec} into {venv} (log: {log}) ...", flush=True)
            with open(log, "ab") as out:
                subprocess.run(
                    [str(python), "-m", "pip", "install", "--disable-pip-version-check", spec],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=600,
                )
            version = _anchor_version(python, package, module)
            if version is not None:
                break
        found[package] = version or (
            f"n/a ({package} does not install or import on Python "
            f"{sys.version_info.major}.{sys.version_info.minor}; see {log.name})"
        )
    return str(python), found


def _anchor_version(python: Path, package: str, module: str) -> str | None:
    code = f"import importlib.metadata as m, {module}; print(m.version({package!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


# --------------------------------------------------------------------------- the figures


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def fig_start_stop_idle_status(s: Session, settings: Settings) -> dict[str, float]:
    """Figures 1, 2 and 4 on the fleet phase (see the module docstring for the order)."""
    starts, stops = [], []
    out: dict[str, float] = {}
    for round_no in range(settings.rounds):
        starts.append(s.driver.call("start_all", expect=SERVICES, within=60.0))
        if round_no == settings.rounds - 1:
            out.update(fig_idle(s, settings))
            out.update(fig_status(s, settings))
        else:
            time.sleep(0.2)
        stops.append(s.driver.call("stop_all", expect=SERVICES, within=60.0))
    out["start_ms"] = statistics.median(starts) * 1e3
    out["stop_ms"] = statistics.median(stops) * 1e3
    return out


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Run time in nanoseconds of each thread of ``pid`` (schedstat's first field: the
    scheduler's own clock, where /proc/PID/stat rounds to 10 ms ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(OSError, ValueError, IndexError),
            open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f,
        ):
            out[int(tid)] = int(f.read().split()[0])
    return out


def fig_idle(s: Session, settings: Settings) -> dict[str, float]:
    """CPU% over ``idle_secs`` once nobody has asked for ``idle_settle`` seconds (module
    docstring), every thread's run time; the tick figure if a thread ended meanwhile."""
    time.sleep(settings.idle_settle)
    ticks0, ns0, t0 = s.cpu_secs(), thread_cpu_ns(s.daemon.pid), time.monotonic()
    time.sleep(settings.idle_secs)
    ns1, wall = thread_cpu_ns(s.daemon.pid), time.monotonic() - t0
    if ns0.keys() <= ns1.keys():
        cpu_pct = (sum(ns1.values()) - sum(ns0.values())) / 1e9 / wall * 100
    else:
        cpu_pct = (s.cpu_secs() - ticks0) / wall * 100
    return {"idle_cpu": cpu_pct, "idle_rss": s.process.memory_info().rss / 2**20}


def fig_status(s: Session, settings: Settings) -> dict[str, float]:
    ns = s.driver.call(
        "status_latency", calls=settings.status_calls, warmup=settings.warmup, timeout=300.0
    )
    return {"status_p50": percentile(ns, 50) / 1e3, "status_p99": percentile(ns, 99) / 1e3}


#: The flood children's last line: lines written, then the child's CLOCK_MONOTONIC in ns just
#: before its first write and just after its last (``flood_program``).
DONE = re.compile(rb"DONE (\d+) (\d+) (\d+)\n")
#: Bytes read back from below a polled size to find the DONE line (Runyard's prefix included).
TAIL = 128
#: How often a log is polled for its DONE line.
POLL = 0.01
#: A window shorter than this many polls is no figure: the DONE poll is up to one poll late.
MIN_POLLS = 20


@dataclass(frozen=True)
class Flood:
    """One flood, timed from the child's first write (the child's own clock, from its DONE
    line: CLOCK_MONOTONIC is one clock for every process, the bench's ``time.monotonic``) to
    the first poll that found the DONE line in the log, read after that poll's size.

    Why not from the log alone: the bench used to time from the first poll that saw the file
    grow to the one that saw the DONE line, scaled by the bytes that came between the two;
    its tail read (``seek(size - 64); read()``) read to the end of a file still growing, and
    under a flood that can take until the flood is over (one read returned 1.5 GB, 1.3 s), so
    the DONE line was found with the time and size of a poll made early in the flood: 23246
    MB/s for a 3 GB block flood (the whole payload over ~0.13 s), and "over before two polls
    saw it" for the ``| cat`` reference, whose first poll was that one. Now the tail read stops
    at the polled size, and the window cannot be shorter than the child's own writing (its DONE
    is in the file only after it wrote it): no figure above what the child could write."""

    lines: int  # as the child counted them
    start: float  # the child's first write, monotonic seconds
    wrote: float  # the child's last write returned
    end: float  # the first poll whose tail held the DONE line
    asked: float  # just before the flood was asked for

    @property
    def payload(self) -> int:
        return self.lines * len(LINE)

    @property
    def invalid(self) -> str | None:
        """Why this flood's window gives no figure, or None."""
        if self.start < self.asked:
            return "its DONE line is from a flood that began before this one was asked for"
        if not self.start <= self.wrote <= self.end:
            return (
                f"its window is out of order (first write {self.start:.3f}, last "
                f"{self.wrote:.3f}, DONE seen {self.end:.3f})"
            )
        if self.end - self.start < MIN_POLLS * POLL:
            return f"its window, {self.end - self.start:.3f} s, is under {MIN_POLLS} polls"
        return None

    @property
    def rate(self) -> float:
        """Payload bytes per second (the file holds more with Runyard's timestamps)."""
        if (why := self.invalid) is not None:
            raise BenchError(f"the flood gives no figure: {why}")
        return self.payload / (self.end - self.start)


def read_done(log: Path, size0: int, size: int) -> re.Match[bytes] | None:
    """The DONE line in the last ``TAIL`` bytes below ``size`` and above ``size0``, or None.
    Only up to ``size``: the file grows on after it was polled (see ``Flood``)."""
    n = min(TAIL, size - size0)
    if n <= 0:
        return None
    fd = os.open(log, os.O_RDONLY)
    try:
        tail = os.pread(fd, n, size - n)
    finally:
        os.close(fd)
    return DONE.search(tail)


def watch_flood(
    log: Path, size0: int, timeout: float, driver: Driver | None = None, asked: float = 0.0
) -> Flood:
    """Poll ``log`` every ``POLL`` from offset ``size0`` until its DONE line appears; ``asked``:
    the monotonic time before the flood was asked for (a DONE line from before it is refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver is not None:
            driver.check()
        size = log.stat().st_size if log.exists() else 0
        now = time.monotonic()  # after the size: the DONE line below it was there by now
        if (done := read_done(log, size0, size)) is not None:
            lines, t0, t1 = (int(g) for g in done.groups())
            return Flood(lines, t0 / 1e9, t1 / 1e9, now, asked)
        time.sleep(POLL)
    raise BenchError(f"no DONE line in {log} within {timeout:g}s")


def median_rate(rates: list[float | str]) -> float | str:
    """The median of the floods that gave a figure; ``n/a (why)`` when none did."""
    valid = [r for r in rates if not isinstance(r, str)]
    return statistics.median(valid) if valid else str(rates[0])


def count_lines(path: Path, offset: int) -> int:
    n = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(8 << 20):
            n += chunk.count(b"\n")
    return n


def fig_flood(s: Session, logs: Callable[[str], Path], settings: Settings) -> dict[str, Any]:
    """Figure 3: quiet floods of the line child, then of the block child (throughput, CPU per
    GB; medians, each flood's shown too), then one line flood under `status` calls."""
    out: dict[str, Any] = {}
    for name, key in (("flood", "flood"), ("blockflood", "flood_block")):
        quiet = [quiet_flood(s, logs(name), settings, name) for _ in range(settings.floods)]
        out[f"{key}_mbps"] = median_rate([mbps for mbps, _ in quiet])
        out[f"{key}_cpu_gb"] = statistics.median(cpu for _, cpu in quiet)
        out[f"{key}_runs"] = quiet
    during = busy_flood(s, logs("flood"), settings)
    if isinstance(during, str):  # n/a (why): the quiet floods' figures stand
        out["flood_status_p99"] = during
    else:
        out["flood_status_p99"] = percentile(during, 99) / 1e6
        out["flood_status_calls"] = len(during)
    return out


def quiet_flood(s: Session, log: Path, settings: Settings, name: str) -> tuple[float | str, float]:
    """One flood with no client calling: (payload MB/s, or ``n/a (why)`` when its window gives
    no figure, see ``Flood``; daemon CPU seconds per GB)."""
    size0 = log.stat().st_size if log.exists() else 0
    os.sync()  # the previous floods' dirty pages are written back before, not during, this one
    cpu0 = s.cpu_secs()
    asked = time.monotonic()
    s.driver.send("flood", name=name, query_secs=0.0, warmup=0)
    run = watch_flood(log, size0, settings.flood_secs + 60, s.driver, asked)
    cpu = s.cpu_secs() - cpu0
    s.driver.recv(timeout=60.0)
    s.driver.call("stop", name=name)
    got = count_lines(log, size0)
    if got != run.lines + 1:
        raise BenchError(f"{log}: {got} lines after the flood, the child wrote {run.lines + 1}")
    why = run.invalid
    mbps = run.rate / 1e6 if why is None else f"n/a ({why})"
    return mbps, cpu / (run.payload / 1e9)


def busy_flood(s: Session, log: Path, settings: Settings) -> list[int] | str:
    """One flood while the driver calls `status` flat out: ns per call within the flood, or
    ``n/a (why)`` when the flood's window gives none (``calls_within``)."""
    timeout = settings.flood_secs + 60
    size0 = log.stat().st_size if log.exists() else 0
    os.sync()
    asked = time.monotonic()
    s.driver.send("flood", name="flood", query_secs=settings.flood_secs, warmup=settings.warmup)
    run = watch_flood(log, size0, timeout, s.driver, asked)
    samples = s.driver.recv(timeout=timeout)
    s.driver.call("stop", name="flood")
    return calls_within(run, samples)


def calls_within(run: Flood, samples: list[tuple[float, int]]) -> list[int] | str:
    """The ns of the status calls made within ``run``'s window, or ``n/a (why)``: a window that
    cannot be timed, or too few calls in it (the run's other figures are kept)."""
    if (why := run.invalid) is not None:
        return f"n/a (the busy flood: {why})"
    during = [ns for t, ns in samples if run.start <= t <= run.end]
    if len(during) < 20:
        return f"n/a (only {len(during)} status calls during the busy flood)"
    return during


#: The laziest reader that never lets the flood child's pipe fill: 1 MiB, read every 2 ms.
CEILING_PIPE, CEILING_NAP = 1 << 20, 0.002


def pipe_ceiling(phase: Phase, settings: Settings) -> float:
    """MB/s of the line flood child into a 1 MiB pipe that this process drains every 2 ms and
    discards: no reader is ever waiting on the pipe (a waiting one costs the child a wake-up
    per write), it never fills, and nothing is written anywhere, so what is measured is the
    child's own ceiling through a pipe on this box. A reader that reads as soon as data comes
    makes the child slower (probes: spinning 134 MB/s, every 0.5 ms 304, every 2 ms 326; into
    /dev/null, no pipe, ~505), so no supervisor can capture this child much faster than this."""
    flood = next(p for p in phase.programs if p.name == "flood")
    r, w = os.pipe()
    asked = time.monotonic()
    try:
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), CEILING_PIPE)
        proc = subprocess.Popen([str(flood.path)], stdout=w, start_new_session=True)
    finally:
        os.close(w)
    os.set_blocking(r, False)
    done = None
    tail = b""
    deadline = time.monotonic() + settings.flood_secs + 60
    try:
        while done is None and time.monotonic() < deadline:
            time.sleep(CEILING_NAP)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(r, 1 << 20):
                    tail = (tail + chunk)[-TAIL:]
            done = DONE.search(tail)
        if done is None:
            raise BenchError(
                f"no DONE line from the flood child within {settings.flood_secs + 60:g}s"
            )
        lines, t0, t1 = (int(g) for g in done.groups())
        return Flood(lines, t0 / 1e9, t1 / 1e9, time.monotonic(), asked).rate / 1e6
    finally:
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def pipe_reference(phase: Phase, workdir: Path, settings: Settings, name: str) -> float:
    """MB/s of a flood child straight into ``cat > file`` (a 64 KiB pipe), for reference."""
    flood = next(p for p in phase.programs if p.name == name)
    log = workdir / "reference.log"
    asked = time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f"exec '{flood.path}' | cat > '{log}'"], start_new_session=True
    )
    try:
        run = watch_flood(log, 0, settings.flood_secs + 60, asked=asked)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.unlink(missing_ok=True)
    return run.rate / 1e6


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Target:
    text: str
    check: Callable[[dict[str, float]], bool]  # values by contender -> met?
    needs: tuple[str, ...] = ("runyard",)
    informational: bool = False  # shown beside a goal's figure, never judged (n/a still fails)


def at_most(limit: float, unit: str) -> Target:
    return Target(f"<= {limit:g} {unit}", lambda v: v["runyard"] <= limit)


def ratio_vs(anchor: str, ratio: float, higher_is_better: bool) -> Target:
    """Runyard at least ``ratio`` x the anchor (higher is better) or at most ``ratio`` x."""
    if higher_is_better:
        check = lambda v: v["runyard"] >= ratio * v[anchor]  # noqa: E731
        return Target(f">= {ratio:g}x {anchor}", check, ("runyard", anchor))
    check = lambda v: v["runyard"] <= ratio * v[anchor]  # noqa: E731
    return Target(f"<= {ratio:g}x {anchor}", check, ("runyard", anchor))


def at_least_as_good(anchor: str, higher_is_better: bool = False) -> Target:
    if higher_is_better:
        return Target(f">= {anchor}", lambda v: v["runyard"] >= v[anchor], ("runyard", anchor))
    return Target(f"<= {anchor}", lambda v: v["runyard"] <= v[anchor], ("runyard", anchor))


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    target: Target


METRICS = (
    Metric("cold_s", "cold start: launch -> 50 running", "s", at_least_as_good("supervisord")),
    Metric("cold500_s", "cold start: launch -> 500 running", "s", at_most(2, "s")),
    Metric("status_p50", "status p50, 50 services", "µs", ratio_vs("circus", 0.5, False)),
    Metric("status_p99", "status p99, 50 services", "µs", at_most(1000, "µs")),
    Metric("start_ms", "start 50 until all running", "ms", at_least_as_good("supervisord")),
    Metric("stop_ms", "stop 50, blocking", "ms", at_least_as_good("circus")),
    Metric("flood_mbps", "log capture, line-buffered", "MB/s", ratio_vs("supervisord", 1.2, True)),
    Metric(
        "flood_cpu_gb", "CPU per GB, line-buffered", "s/GB", ratio_vs("supervisord", 0.8, False)
    ),
    Metric(
        "flood_block_mbps", "log capture, 64 KiB writes", "MB/s", ratio_vs("supervisord", 1, True)
    ),
    Metric(
        "flood_block_cpu_gb", "CPU per GB, 64 KiB writes", "s/GB", ratio_vs("supervisord", 1, False)
    ),
    Metric("flood_status_p99", "status p99 while flooding", "ms", at_most(10, "ms")),
    Metric("idle_rss", "idle RSS, 50 services", "MiB", at_most(30, "MiB")),
    Metric("idle_cpu", "idle CPU, 50 services", "%", at_most(0.1, "%")),
    Metric("scale_status_p50", "status p50, 500 services + 100 MB/s flood", "ms", at_most(5, "ms")),
    Metric("scale_status_p99", "status p99, 500 services + 100 MB/s flood", "ms", at_most(5, "ms")),
    Metric(
        "scale_flood_mbps",
        "flood captured meanwhile (of 100)",
        "MB/s",
        Target(">= 90 MB/s", lambda v: v["runyard"] >= 90),
    ),
    Metric(
        "cold_nocg_s",
        "cold start: launch -> 50 running, no cgroup (containment = subreaper)",
        "s",
        Target("info, not a goal", lambda v: True, informational=True),
    ),
    Metric(
        "cold500_nocg_s",
        "cold start: launch -> 500 running, no cgroup (containment = subreaper)",
        "s",
        Target("info, not a goal", lambda v: True, informational=True),
    ),
)
PHASE_KEYS = {
    "fleet": ("status_p50", "status_p99", "start_ms", "stop_ms", "idle_rss", "idle_cpu"),
    "flood": (
        "flood_mbps",
        "flood_cpu_gb",
        "flood_block_mbps",
        "flood_block_cpu_gb",
        "flood_status_p99",
    ),
    "scale": ("scale_status_p50", "scale_status_p99", "scale_flood_mbps"),
}


def num(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if value >= 100:
        return f"{value:.0f}"
    if 0 < abs(value) < 0.1:  # an idle CPU% (ns resolution): 0.04 and 0.005 differ
        return f"{value:.3f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def render(results: dict[str, dict[str, Any]]) -> tuple[list[str], bool]:
    """The table as Markdown rows, and whether every judged target passed. A figure of several
    runs is shown as median (min-max) and judged by its median."""
    from bench_daemon_start import fmt_runs

    def shown(value: Any) -> str:
        return fmt_runs(value, num) if isinstance(value, list) else num(value)

    keys = {m.key for m in METRICS}
    results = {
        name: {
            k: (statistics.median(v) if isinstance(v, list) and v else v, v)
            for k, v in res.items()
            if k in keys
        }
        for name, res in results.items()
    }
    cells_of = {name: {k: shown(v[1]) for k, v in res.items()} for name, res in results.items()}
    results = {name: {k: v[0] for k, v in res.items()} for name, res in results.items()}
    names = list(results)  # runyard first, then the anchors
    anchors = [n for n in names if n != "runyard"]
    head = ["figure", "unit", *names, *[f"÷ {a}" for a in anchors]]
    rows = [[*head, "target", "verdict"]]
    ok = True
    for m in METRICS:
        values = {name: results[name].get(m.key, "n/a") for name in results}
        measured = {k: v for k, v in values.items() if isinstance(v, float)}
        ratios = [
            num(measured["runyard"] / measured[a])
            if "runyard" in measured and measured.get(a)
            else "-"
            for a in anchors
        ]
        if m.target.informational:
            verdict = "FAIL (no figure)" if str(values["runyard"]).startswith("n/a") else "info"
            ok &= verdict == "info"
        elif all(n in measured for n in m.target.needs):
            passed = m.target.check(measured)
            verdict = "PASS" if passed else "FAIL"
            ok &= passed
        else:
            verdict = "not judged"
            ok &= not str(values.get("runyard")).startswith(("n/a", "skipped"))
        cells = [cells_of[n].get(m.key, "n/a") for n in names]
        rows.append([m.label, m.unit, *cells, *ratios, m.target.text, verdict])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) + 2)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines, ok


# --------------------------------------------------------------------------- run


def measure(
    contender: Contender,
    phases: tuple[Phase, Phase],
    settings: Settings,
    cold: Any,
    scale: Phase | None = None,
) -> dict[str, Any]:
    """Every figure of one contender; a phase that fails leaves ``n/a (why)`` for its figures."""
    import bench_daemon_start

    fleet, flood = phases
    out: dict[str, Any] = bench_daemon_start.measure_start(contender, fleet, cold, settings)
    for phase, figures in (
        (flood, lambda s: fig_flood(s, lambda n: contender.log_path(flood, n), settings)),
    ):
        if phase.name not in settings.phases:
            for key in PHASE_KEYS[phase.name]:
                out[key] = "skipped"
            continue
        started, load = time.monotonic(), bench_daemon_start.BoxLoad()
        print(f"  {contender.name}: {phase.name} phase ...", end="", flush=True)
        try:
            with serving(contender, phase) as session:
                if phase is flood:
                    sleepers = [p.name for p in phase.programs if p.autostart]
                    session.driver.call("wait_running", names=sleepers, within=60.0)
                out.update(figures(session))
            out.setdefault("loads", {})[phase.name] = [load.end()]
            print(f" {time.monotonic() - started:.1f}s")
        except Exception as exc:
            print(f" FAILED: {exc}")
            for key in PHASE_KEYS[phase.name]:
                out.setdefault(key, f"n/a ({type(exc).__name__})")
        finally:
            for p in phase.programs:  # the flood logs are big
                contender.log_path(phase, p.name).unlink(missing_ok=True)
    if scale is None:  # --only-phase without scale
        out.update({key: "skipped" for key in PHASE_KEYS["scale"]})
    else:
        import bench_daemon_scale

        got = bench_daemon_scale.measure_scale(contender, scale, settings)
        out.setdefault("loads", {}).update(got.pop("loads", {}))
        out.update(got)
    return out


def run(opts: Any) -> bool:
    import platform

    import bench_daemon_pm2
    import bench_daemon_start

    settings = settings_for(opts)
    only = getattr(opts, "only", None)
    print("  anchors venv: checking ...", flush=True)
    anchor_python, versions = ensure_anchors(Path(opts.repo))
    node, versions["pm2"] = bench_daemon_pm2.ensure_pm2(Path(opts.repo))
    bench_daemon_start.precompile(Path(opts.repo))
    if getattr(opts, "baseline", None) is not None:  # else runyard@base compiles at each launch
        bench_daemon_start.precompile(Path(opts.baseline).resolve())
    cores = len(os.sched_getaffinity(0))
    print(
        f"  python {platform.python_version()}, {cores} cores, load "
        f"{os.getloadavg()[0]:.2f}; supervisor {versions['supervisor']}, "
        f"circus {versions['circus']}, pm2 {versions['pm2']}"
    )
    print(
        f"  {settings.rounds} start/stop rounds, {settings.status_calls} status calls after "
        f"{settings.warmup}, idle {settings.idle_secs:g}s, flood {settings.flood_secs:g}s"
    )
    print(
        f"  idle: CPU of every daemon thread over {settings.idle_secs:g}s (ns, schedstat), after "
        f"{settings.idle_settle:g}s with no request (Runyard samples CPU/RSS for LINGER + one "
        "interval after a status), the same for every contender"
    )
    base = Path(tempfile.mkdtemp(prefix="rybench-"))
    results: dict[str, dict[str, Any]] = {}
    # SIGTERM unwinds like Ctrl-C, so every finally below runs and nothing is left behind.
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with reaping():
            phases = make_phases(base, settings)
            cold = (
                bench_daemon_start.cold_phases(base)
                if {"fleet", "cold"} & set(settings.phases)
                else None
            )
            scale = None
            if "scale" in settings.phases:
                import bench_daemon_scale

                scale = bench_daemon_scale.scale_phase(base)
            refs = []
            for name in ("flood", "blockflood") if "flood" in settings.phases else ():
                try:
                    refs.append(
                        f"{name} {pipe_reference(phases[1], base, settings, name):.0f} MB/s"
                    )
                except BenchError as exc:
                    refs.append(f"{name} n/a ({exc})")
            if "flood" in settings.phases:
                try:
                    ceilings = [pipe_ceiling(phases[1], settings) for _ in range(3)]
                    refs.append(
                        f"the line child into a 1 MiB pipe read every 2 ms and discarded (its "
                        f"ceiling through a pipe here; 3 runs) "
                        f"{bench_daemon_start.fmt_runs(ceilings, num)} MB/s"
                    )
                except BenchError as exc:
                    refs.append(f"the line child's pipe ceiling n/a ({exc})")
            reference = ", ".join(refs)
            baseline = getattr(opts, "baseline", None)
            picked: list[Contender] = [Runyard(base, sys.executable)]
            if baseline is not None:
                python = bench_daemon_start.baseline_python(Path(baseline).resolve())
                picked.append(bench_daemon_start.RunyardBase(base, python))
            picked += [
                cls(base, anchor_python)
                for cls in CONTENDERS[1:]
                if not (only and cls.name not in only)
                and not versions[{"supervisord": "supervisor"}.get(cls.name, cls.name)].startswith(
                    "n/a"
                )
            ]
            alternated: dict[str, dict[str, Any]] = {}
            if "startstop" in settings.phases:
                alternated = bench_daemon_start.alternate_start_stop(picked, phases[0], settings)
            if baseline is not None and "flood" in settings.phases:
                import bench_daemon_ab

                floods = bench_daemon_ab.alternate_floods(picked, phases[1], settings)
                for name, got in floods.items():
                    loads = got.pop("loads")
                    alternated.setdefault(name, {"loads": {}}).update(got)
                    alternated[name].setdefault("loads", {}).update(loads)
                kept = tuple(p for p in settings.phases if p != "flood")
                settings = dataclasses.replace(settings, phases=kept)
            if "cold" in settings.phases:
                import bench_daemon_nocg as nocg

                variant = nocg.RunyardSubreaper(base, sys.executable)
                pm2 = []
                if not (only and "pm2" not in only) and not versions["pm2"].startswith("n/a"):
                    pm2.append(bench_daemon_pm2.PM2(base, node))
                colds = nocg.fold_subreaper(
                    bench_daemon_start.alternate_cold([*picked, *pm2, variant], cold, settings)
                )
                for name, got in colds.items():
                    loads = got.pop("loads")
                    alternated.setdefault(name, {"loads": {}}).update(got)
                    alternated[name].setdefault("loads", {}).update(loads)
            for cls in (*CONTENDERS, bench_daemon_pm2.PM2):
                package = {"supervisord": "supervisor", "circus": "circus", "pm2": "pm2"}.get(
                    cls.name
                )
                if only and cls.name not in only:
                    results[cls.name] = {m.key: "skipped" for m in METRICS}
                elif package and versions[package].startswith("n/a"):
                    results[cls.name] = {m.key: versions[package] for m in METRICS}
                else:
                    python = {"pm2": node, None: sys.executable}.get(package, anchor_python)
                    results[cls.name] = measure(cls(base, python), phases, settings, cold, scale)
                if cls.name == "runyard" and baseline is not None:
                    results["runyard@base"] = {m.key: "skipped" for m in METRICS}
            for name, got in alternated.items():
                loads = got.pop("loads")
                results[name].update(got)
                results[name].setdefault("loads", {}).update(loads)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        shutil.rmtree(base, ignore_errors=True)
    raw = Path(opts.repo) / ".bench" / "daemon-results.json"
    raw.write_text(json.dumps(results, indent=1, default=str))
    print(f"  every run's figures: {raw}")
    lines, ok = render(results)
    print("\n".join("  " + line for line in lines))
    print(
        "\n".join("  " + note for note in ["ratio = Runyard ÷ anchor;", *notes(results, reference)])
    )
    print(f"  {'PASS' if ok else 'FAIL'}: loadavg after {os.getloadavg()[0]:.2f}")
    return ok


def notes(results: dict[str, dict[str, Any]], reference: str) -> list[str]:
    """What the table leaves out: each flood's MB/s, how many status calls the busy flood saw."""
    from bench_daemon_nocg import subreaper_note

    runs = [
        f"{name} {kind} " + " / ".join(f"{num(r)} MB/s {num(c)} s/GB" for r, c in res[key])
        for name, res in results.items()
        for kind, key in (("line", "flood_runs"), ("block", "flood_block_runs"))
        if key in res
    ]
    calls = [
        f"{name} {res['flood_status_calls']}"
        for name, res in results.items()
        if "flood_status_calls" in res
    ]
    loads = [
        f"{name} {what}: {'; '.join(each)}"
        for name, res in results.items()
        for what, each in res.get("loads", {}).items()
    ]
    return [
        "the box during each run (median (min-max) figures): " + (" | ".join(loads) or "-") + ";",
        f"each quiet flood: {'; '.join(runs) or '-'};",
        f"for reference, the flood children | cat > file: {reference};",
        f"status calls within the busy flood: {', '.join(calls) or '-'}.",
        *(f"{name}: {note}." for name, res in results.items() for note in res.get("notes", ())),
        *subreaper_note(results),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", nargs=2, metavar=("KIND", "ADDRESS"))
    parser.add_argument("--cold", action="store_true", help="driver: launch the daemon itself")
    opts = parser.parse_args()
    if opts.driver:
        return driver_main(*opts.driver, cold=opts.cold)
    parser.error("run it through scripts/bench daemon")
    return 2


if __name__ == "__main__":
    sys.exit(main())
