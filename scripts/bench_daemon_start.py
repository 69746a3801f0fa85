"""Benchmark `daemon`, the cold-start phase and the per-run figures (see bench_daemon.py).

* cold phase: the same 50 sleepers, all autostarted. A driver that already imported its client
  library spawns the daemon (foreground, its own session), waits for the control socket file,
  then polls `status` 5 ms apart until every service runs: the seconds from the spawn. Then a
  shutdown. Runyard is launched once more with 500 sleepers (the goal: all running within
  2 s). The contenders take turns launch by launch, max(3, sessions) x launches rounds (9; 6
  with --quick), in the full run and with ``--only-phase cold`` alone: launches in a block per
  contender, minutes apart, met a box whose speed had drifted between the blocks (one day, the
  same code: 0.97x supervisord alternated, 1.07x in blocks). Runyard with every service under
  the subreaper (no cgroup) joins them as informational rows (bench_daemon_nocg.py).
  ``--only-phase fleet`` without ``cold`` still takes 3 launches per contender in its block.
* pm2 (installed from npm, driven by bench_pm2.js) is in bench_daemon_pm2.py.
* Every figure that comes from several runs is shown as median (min-max), and each run notes
  the load of the box while it ran: the 1-minute load average at its end and how busy the
  CPUs were (``/proc/stat``, every process, ours included) over it.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_daemon as bd
import bench_daemon_nocg as nocg

__all__ = [
    "BoxLoad",
    "alternate_cold",
    "cold_phases",
    "fig_cold",
    "median_range",
    "ready_path",
]

COLD_MANY = 500


def cold_phases(base: Path) -> tuple[bd.Phase, bd.Phase]:
    """50 and COLD_MANY autostarted sleepers, each in its own tree."""
    out = []
    for n in (bd.SERVICES, COLD_MANY):
        sleepers = {f"s{i:03d}": bd.SLEEPER for i in range(n)}
        bins = bd.build_tree(base / f"cold{n}" / "rt", sleepers)
        programs = tuple(bd.Program(name, path, autostart=True) for name, path in bins.items())
        out.append(bd.Phase(f"cold{n}", base / f"cold{n}" / "rt", programs))
    return out[0], out[1]


def ready_path(contender: bd.Contender, phase: bd.Phase) -> str:
    """The file whose appearance says the daemon's control socket is bound."""
    if isinstance(contender, bd.Runyard):  # runyard@base too
        from runyard.protocol.endpoints import endpoints_for

        return endpoints_for(phase.tree_root).control.removeprefix("ipc://")
    if contender.name == "pm2":
        return contender.address(phase) + "/rpc.sock"
    return contender.address(phase).removeprefix("ipc://")


@dataclass
class BoxLoad:
    """How busy the box was over one run: the CPUs (all processes) and the load average."""

    started: tuple[int, int] = field(default_factory=lambda: _cpu_jiffies())

    def end(self) -> str:
        busy0, total0 = self.started
        busy1, total1 = _cpu_jiffies()
        pct = 100 * (busy1 - busy0) / max(1, total1 - total0)
        return f"load {os.getloadavg()[0]:.1f}, cpus {pct:.0f}% busy"


def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@contextlib.contextmanager
def cold_driver(contender: bd.Contender, phase: bd.Phase) -> Iterator[bd.Driver]:
    wd = contender.workdir(phase)
    wd.mkdir(parents=True, exist_ok=True)
    driver = bd.Driver(
        contender.python, contender.name, contender.address(phase), wd / "driver.err", ("--cold",)
    )
    try:
        driver.recv(timeout=60.0)  # ready: its client library is imported
        yield driver
    finally:
        driver.close()


def fig_cold(
    contender: bd.Contender, phase: bd.Phase, launches: int
) -> tuple[list[float], list[str], list[float]]:
    """Seconds from spawn to every service running, per launch, the box's load in each, and the
    CPU seconds the daemon had spent by then (on a shared box, the figure the load sways
    least; also shown with the load)."""
    argv = contender.configure(phase)
    wd = contender.workdir(phase)
    secs, loads, cpus = [], [], []
    for _ in range(launches):
        with cold_driver(contender, phase) as driver:
            load = BoxLoad()
            reply = driver.call(
                "cold_start",
                timeout=180.0,
                argv=argv,
                cwd=str(wd),
                log=str(wd / "daemon.stderr"),
                ready=ready_path(contender, phase),
                expect=len(phase.programs),
            )
            cpus.append(reply.get("cpu", float("nan")))
            loaded = f"{load.end()}, daemon CPU {cpus[-1]:.3f} s"
            driver.call("cold_stop", timeout=180.0)
        # after the stop, so a launch that fails it leaves no daemon on the tree
        contained = nocg.check_contained(contender, reply, len(phase.programs))
        loads.append(f"{loaded}, {contained}" if contained else loaded)
        secs.append(reply["secs"])
        time.sleep(0.5)  # let the stopped children go before the next launch
    return secs, loads, cpus


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_runs(values: list[float], num: Any) -> str:
    """``median (min-max)`` of several runs; one run is shown alone."""
    if len(values) == 1:
        return num(values[0])
    med, lo, hi = median_range(values)
    return f"{num(med)} ({num(lo)}-{num(hi)})"


def measure_start(
    contender: bd.Contender,
    fleet: bd.Phase,
    cold: tuple[bd.Phase, bd.Phase],
    settings: bd.Settings,
) -> dict[str, Any]:
    """The cold starts, then ``settings.sessions`` fleet phases: every figure as a list of runs
    (``n/a (why)`` when a phase failed), and the load of each run under ``loads``."""
    if "fleet" not in settings.phases:  # --only-phase flood
        keys = ("cold_s", "cold500_s", *nocg.NOCG_KEYS.values(), *bd.PHASE_KEYS["fleet"])
        return {key: "skipped" for key in keys}
    out: dict[str, Any] = {"loads": {}}
    phases = [(cold[0], "cold_s")]
    if contender.name == "runyard":
        phases.append((cold[1], "cold500_s"))
    if "cold" in settings.phases:  # alternated with the others instead (alternate_cold)
        phases = []
    else:
        out.update({key: "skipped (no cold phase)" for key in nocg.NOCG_KEYS.values()})
    for phase, key in phases:
        started = time.monotonic()
        print(f"  {contender.name}: {phase.name} phase ...", end="", flush=True)
        try:
            out[key], out["loads"][key], _ = fig_cold(contender, phase, settings.launches)
            print(f" {time.monotonic() - started:.1f}s")
        except Exception as exc:
            print(f" FAILED: {exc}")
            out[key] = f"n/a ({type(exc).__name__})"
    runs: list[dict[str, float]] = []
    loads = []
    for n in range(settings.sessions):
        started = time.monotonic()
        print(
            f"  {contender.name}: fleet phase {n + 1}/{settings.sessions} ...", end="", flush=True
        )
        try:
            load = BoxLoad()
            with bd.serving(contender, fleet) as session:
                runs.append(bd.fig_start_stop_idle_status(session, settings))
            loads.append(load.end())
            print(f" {time.monotonic() - started:.1f}s")
        except Exception as exc:
            print(f" FAILED: {exc}")
            for key in bd.PHASE_KEYS["fleet"]:
                out.setdefault(key, f"n/a ({type(exc).__name__})")
            return out
    for key in bd.PHASE_KEYS["fleet"]:
        out[key] = [r[key] for r in runs]
    out["loads"]["fleet"] = loads
    return out


def precompile(repo: Path) -> None:
    """Byte-compile the checkout, as installing the wheel does: with PYTHONDONTWRITEBYTECODE
    set (CI boxes, this one) every daemon launch would compile ~100 modules from source, and
    the anchors' venv has its .pyc files from pip."""
    import compileall

    for package in ("daemon", "protocol", "runtime", "schemas"):
        compileall.compile_dir(str(repo / package), quiet=1)


# --------------------------------------------------------------------------- startstop, A/B


class RunyardBase(bd.Runyard):
    """``--baseline DIR``: the Runyard of another checkout, run by that checkout's own venv
    (made by its scripts/bootstrap), on the same trees as this one."""

    name = "runyard@base"


def baseline_python(checkout: Path) -> str:
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        raise bd.BenchError(f"--baseline {checkout}: no .venv (run its scripts/bootstrap)")
    return str(python)


def alternate_start_stop(
    contenders: list[bd.Contender], fleet: bd.Phase, settings: bd.Settings
) -> dict[str, dict[str, Any]]:
    """The startstop phase: ``max(3, settings.sessions)`` rounds; in each, every contender in a
    rotated order gets a fresh daemon and ``settings.rounds`` start-all/stop-all pairs (the
    first kept out as a warm-up). start_ms/stop_ms per contender: one median per session."""
    out: dict[str, dict[str, Any]] = {
        c.name: {"start_ms": [], "stop_ms": [], "loads": {"startstop": []}} for c in contenders
    }
    sessions = max(3, settings.sessions)
    for n in range(sessions):
        shift = n % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            print(f"  {contender.name}: startstop {n + 1}/{sessions} ...", end="", flush=True)
            res = out[contender.name]
            try:
                load, starts, stops = BoxLoad(), [], []
                with bd.serving(contender, fleet) as session:
                    for r in range(settings.rounds + 1):
                        s = session.driver.call("start_all", expect=bd.SERVICES, within=60.0)
                        time.sleep(0.2)
                        t = session.driver.call("stop_all", expect=bd.SERVICES, within=60.0)
                        time.sleep(0.2)
                        if r:
                            starts.append(s * 1e3)
                            stops.append(t * 1e3)
                res["start_ms"].append(statistics.median(starts))
                res["stop_ms"].append(statistics.median(stops))
                res["loads"]["startstop"].append(load.end())
                print(f" start {res['start_ms'][-1]:.0f} ms, stop {res['stop_ms'][-1]:.0f} ms")
            except Exception as exc:
                print(f" FAILED: {exc}")
                res["start_ms"] = res["stop_ms"] = f"n/a ({type(exc).__name__})"
                contenders = [c for c in contenders if c is not contender]
                if not contenders:
                    return out
    return out


def alternate_cold(
    contenders: list[bd.Contender], cold: tuple[bd.Phase, bd.Phase], settings: bd.Settings
) -> dict[str, dict[str, Any]]:
    """The cold phase (the full run's, or ``--only-phase cold`` alone): ``max(3, settings.sessions) *
    settings.launches`` rounds; in each, every contender in a rotated order gets one launch to
    50 running (Runyard and runyard@base also one to COLD_MANY), so a load that comes and goes
    falls on all of them alike (runyard@subreaper too: bench_daemon_nocg); one whose launch
    failed gets ``n/a`` and no further launches of that phase. cold_s / cold500_s:
    the seconds of each launch."""
    out: dict[str, dict[str, Any]] = {
        c.name: {"cold_s": [], "loads": {"cold_s": []}} for c in contenders
    }
    rounds = max(3, settings.sessions) * settings.launches
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    for n in range(rounds):
        shift = n % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            phases = [(cold[0], "cold_s")]
            if contender.name.startswith("runyard"):
                phases.append((cold[1], "cold500_s"))
            res = out[contender.name]
            for phase, key in phases:
                if not isinstance(res.setdefault(key, []), list):
                    continue  # it failed in an earlier round: no more launches of it here
                print(f"  {contender.name}: {phase.name} {n + 1}/{rounds} ...", end="", flush=True)
                try:
                    secs, loads, cpus = fig_cold(contender, phase, 1)
                except Exception as exc:
                    print(f" FAILED: {exc}")
                    res[key] = f"n/a ({type(exc).__name__})"
                    continue
                res[key] += secs
                res["loads"].setdefault(key, []).extend(loads)
                if key == "cold_s":
                    cpu[contender.name] += cpus
                print(f" {secs[0]:.3f} s ({loads[0]})")
    for name, values in cpu.items():
        out[name]["cold_cpu_s"] = values  # in the results file, not in the table
        if values:
            shown = fmt_runs(values, lambda v: f"{v:.3f}")
            print(f"  {name}: daemon CPU to 50 running, s: {shown}")
    return out
