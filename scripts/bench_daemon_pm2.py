"""Benchmark `daemon`: pm2 as a contender (see bench_daemon.py), in the anchors' phases.

pm2 is installed by the bench from the npm registry (``pm2@PM2_VERSION`` into .bench/pm2) and
skipped with a line when node, npm or the registry is missing. Its God daemon runs in the
foreground (``pm2.connect(noDaemon=true)`` in bench_pm2.js, the God inside that node process),
and every client call goes through the node driver in bench_pm2.js, which speaks the same
JSON lines as the Python drivers.

* Apps: HOME/ecosystem.json, the same binaries as the others, run as they are (``interpreter:
  none``, fork mode: pm2 spawns the program itself, no node wrapper), no autorestart. The
  flood and scale phases start pm2 with ``--boot``: it starts the autostart programs at once
  (HOME/boot.json), as the others do at boot. The flood children are left out of it: pm2
  7.0.4 never launches an app registered with ``autostart: false`` (`pm2 start NAME` leaves it
  stopped), so the driver's `flood` starts one with `pm2 start ecosystem.json --only NAME`
  (pm2 knows it from its first flood on: by the busy flood, a `status` reply lists the 52 apps
  the others list throughout). The cold-start driver loads the ecosystem itself, on
  its clock; the fleet phase loads nothing at boot, so its `start all` is `pm2 start
  ecosystem.json`.
* `status` is ``pm2.list()``: the ``getMonitorData`` RPC that `pm2 jlist` makes (every app's
  env and a pidusage of every pid), in the fleet, flood and scale phases alike.
* Logs: stdout and stderr of each app to its own file (``out_file``, ``error_file``; one
  app per name, so pm2 adds no ``-ID`` to the name) with pm2's default of no prefix per line
  (``time: false``, no ``log_date_format``, no JSON): the bytes as the child wrote them, as
  supervisord and Circus write them. Runyard alone adds a timestamp and a stream tag per line.
  pm2 also publishes every chunk it reads on its event bus (cloned and encoded even when no
  client subscribes, as the bench's drivers do not): that is its default, and it is counted.
* CPU: the God daemon's process, every thread (V8, libuv's pool that writes the files), plus
  its reaped children (``children_user`` + ``children_system``): pm2's sysmetrics spawns
  ``df -kP`` every 30 s and pidusage ``getconf`` once. An app it reaps would count too; the
  driver's `stop` returns only once the flood child is reaped, and the CPU of a flood is read
  before that stop, so no app's time falls into a reading.
* DONE line: the bench polls the app's out file (``Contender.log_path``: logs/NAME.out), as
  for supervisord and Circus.
* Rotation: pm2 has none of its own (pm2-logrotate is a separate module, polling every 30 s).
  The flood phase rotates for nobody. In the scale phase the others rotate at 50 MB; for pm2
  the bench truncates each log from outside once it passes that size (every 0.25 s, the
  bench's thread, not pm2's CPU; pm2 appends with O_APPEND so its writes land at the new
  end), until the daemon is gone: pm2 stops 500 apps one by one and the writers write on (a
  writer's log reached 380 MB when the truncation stopped with the timed windows). pm2 thus
  pays nothing for rotation there, which the notes under the table say.
* Cleanup: pm2 spawns its apps ``detached`` (a session each); ``bd.kill_tree`` kills every
  process group under the daemon and the bench's subreaper reaps whatever pm2 left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import bench_daemon as bd

__all__ = ["PM2", "PM2_VERSION", "ensure_pm2", "truncating"]

PM2_VERSION = "7.0.4"


def ensure_pm2(repo: Path) -> tuple[str | None, str]:
    """node and pm2's version, installing ``pm2@PM2_VERSION`` from the npm registry into
    .bench/pm2 on first use; (None, ``n/a (why)``) when node, npm or the registry is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "n/a (no node or npm on PATH)"
    prefix = repo / ".bench" / "pm2"
    package = prefix / "node_modules" / "pm2" / "package.json"
    if not package.is_file():
        print(f"  npm install pm2@{PM2_VERSION} into {prefix} ...", flush=True)
        prefix.mkdir(parents=True, exist_ok=True)
        argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix)]
        try:
            done = subprocess.run(
                [*argv, f"pm2@{PM2_VERSION}"], capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired:
            return None, "n/a (npm install timed out)"
        if done.returncode != 0 or not package.is_file():
            why = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
            return None, f"n/a (npm install pm2@{PM2_VERSION} failed: {why})"
    os.environ["BENCH_PM2_MODULE"] = str(package.parent)  # the drivers' and daemon's require()
    return node, json.loads(package.read_text())["version"]


class PM2(bd.Contender):
    """pm2's God daemon in the foreground; the apps in HOME/ecosystem.json (see the module
    docstring for what is configured and why)."""

    name = "pm2"
    cpu_of_children = True  # df and getconf, spawned by the God daemon
    keeper_note = (
        "no log rotation of its own; in the scale phase the bench truncated its logs past "
        "50 MB from outside, so pm2 paid nothing for rotation there"
    )

    def home(self, phase: bd.Phase) -> Path:
        return self.workdir(phase) / "home"

    def boots(self, phase: bd.Phase) -> bool:
        """Whether the daemon loads the ecosystem at boot: when something autostarts, except
        in a cold phase, whose driver loads it on its clock."""
        return any(p.autostart for p in phase.programs) and not phase.name.startswith("cold")

    def apps(self, phase: bd.Phase) -> list[dict[str, object]]:
        logs = self.workdir(phase) / "logs"
        return [
            {
                "name": p.name,
                "script": str(p.path),
                "interpreter": "none",
                "autorestart": False,
                "out_file": str(logs / f"{p.name}.out"),
                "error_file": str(logs / f"{p.name}.err"),
                "time": False,
            }
            for p in phase.programs
        ]

    def configure(self, phase: bd.Phase) -> list[str]:
        wd, home = self.workdir(phase), self.home(phase)
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        for sock in ("rpc.sock", "pub.sock"):  # a stale one would make a client spawn a daemon
            (home / sock).unlink(missing_ok=True)
        apps = self.apps(phase)
        (home / "ecosystem.json").write_text(json.dumps({"apps": apps}))
        boot = [app for app, p in zip(apps, phase.programs, strict=True) if p.autostart]
        (home / "boot.json").write_text(json.dumps({"apps": boot}))
        argv = [self.python, str(bd.HERE / "bench_pm2.js"), "daemon", str(home)]
        return [*argv, "--boot"] if self.boots(phase) else argv

    def address(self, phase: bd.Phase) -> str:
        return str(self.home(phase))

    def log_keeper(self, phase: bd.Phase) -> contextlib.AbstractContextManager[None]:
        rotated = [p for p in phase.programs if p.rotate is not None]
        if not rotated:
            return contextlib.nullcontext()
        size = min(p.rotate[0] for p in rotated if p.rotate is not None)
        paths = [self.log_path(phase, p.name) for p in rotated]
        paths += [path.with_suffix(".err") for path in paths]
        return truncating(paths, size)


@contextlib.contextmanager
def truncating(paths: list[Path], limit: int, every: float = 0.25) -> Iterator[None]:
    """While inside: every ``every`` seconds, truncate to 0 each of ``paths`` larger than
    ``limit`` (a bench thread, stopped and joined on the way out, errors included)."""
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(every):
            for path in paths:
                with contextlib.suppress(OSError):
                    if path.stat().st_size > limit:
                        os.truncate(path, 0)

    thread = threading.Thread(target=keep, name="pm2-log-truncation", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
