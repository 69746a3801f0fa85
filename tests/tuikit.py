"""Pilot helpers shared by the TUI tests: deadline waits, the services table's view, and a
bridge with fixed data for snapshots."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from textual.pilot import Pilot

from runyard.protocol.messages import (
    LogLine,
    LogsReply,
    RunShowReply,
    RunsReply,
    ServiceStatus,
    StatusReply,
)
from runyard.protocol.payloads import (
    ArtifactEntry,
    DiskReport,
    Port,
    RunDetails,
    RunSummary,
    ServiceSetup,
)
from runyard.tui.app import RunyardApp
from runyard.tui.bridge import ALL_LOGS, Bridge, BridgeTarget
from runyard.tui.services_table import ServicesTable


async def until(pilot: Pilot, cond: Callable[[], object], what: str, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Let the app run until ``cond()`` is truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def states(app: RunyardApp) -> dict[str, str]:
    table = app.services_screen.query_one(ServicesTable)
    return {name: s.state for name, s in table.services.items()}


async def select(pilot: Pilot, app: RunyardApp, name: str) -> None:
    table = app.services_screen.query_one(ServicesTable)
    table.move_cursor(row=table.get_row_index(name))
    await pilot.pause()
    assert table.selected == name


# --- a bridge with fixed data, for snapshots -------------------------------------------------------
#
# Snapshots must render the same on any machine, so nothing in them may come from a clock, a pid
# or a temp path. ScriptedBridge posts the same Bridge messages a daemon's events become, built
# from the fixed msgspec messages below, and answers the runs requests with fixed replies through
# Bridge's own runs_list / runs_show. Pilot tests against a real daemon cover the live path.

#: "Now" for the snapshots' uptimes: 2026-01-01 12:00:00 UTC.
NOW = 1_767_268_800.0
#: A root that exists nowhere: only its name is shown.
FIXED_ROOT = Path("/srv/runyard/runtime")


def _status(name: str, **fields: Any) -> ServiceStatus:
    return ServiceStatus(name=name, version="1.0.0", **fields)


SERVICES = [
    _status(
        "api",
        state="running",
        wanted="up",
        pid=4242,
        started_at=NOW - 3725,
        cpu_percent=1.5,
        rss=24_117_248,
        ports=[Port(name="http", port=8080, protocol="http")],
        ready=True,
        notify_status="serving",  # its sd_notify STATUS= text
        depends_on={"db": "ready"},
        containment="cgroup",
        setup=ServiceSetup(
            bin=f"{FIXED_ROOT}/bin/api/1.0.0/linux-amd64/bin/api",
            restart="on-failure",
            max_restarts=5,
            backoff="0.5s, x2, up to 30s",
            limits="memory_max 256 MiB, nofile 4096",
        ),
    ),
    _status(
        "db",
        state="running",
        wanted="up",
        pid=4188,
        started_at=NOW - 90_061,
        cpu_percent=12.25,
        rss=157_286_400,
        ports=[Port(name="pg", port=5432)],
        ready=False,
        ready_detail="tcp 127.0.0.1:5432: connection refused",
    ),
    _status(
        "worker",
        state="backoff",
        wanted="up",
        restarts=3,
        last_exit=1,
        next_start_in=4.0,
        last_exit_at=NOW - 2,
        reason="exited with 1; restart in 4.0s",
        setup=ServiceSetup(
            bin=f"{FIXED_ROOT}/bin/worker/1.0.0/linux-amd64/bin/worker",
            restart="always",
            max_restarts=5,
            backoff="0.5s, x2, up to 30s",
        ),
    ),
    _status("cache", state="stopped", last_exit=0),
    _status(
        "mailer",
        state="fatal",
        wanted="up",
        restarts=5,
        last_exit=127,
        last_exit_at=NOW - 300,
        reason="exited with 127; gave up after 5 restarts in a row",
    ),
]
SNAPSHOT = StatusReply(
    services=SERVICES, seqs={}, daemon_pid=4000, daemon_started_at=NOW - 90_100, epoch=NOW
)


def _usage(n: int) -> dict[str, int]:
    return {"bytes": n, "files": max(1, n // 4096)}


def _disk_service(name: str, bin_: int, data: int, logs: int, config: int, cache: int) -> dict:  # type: ignore[type-arg]
    parts = {"bin": bin_, "data": data, "logs": logs, "config": config, "cache": cache}
    return {
        "name": name,
        **{k: _usage(v) for k, v in parts.items()},
        "total": _usage(sum(parts.values())),
    }


DISK_SERVICES = [
    _disk_service("api", 18_400_000, 2_100_000, 4_800_000, 3_100, 9_200_000),
    _disk_service("cache", 6_300_000, 0, 12_000, 900, 2_900_000),
    _disk_service("db", 96_000_000, 1_480_000_000, 230_000_000, 14_000, 41_000_000),
    _disk_service("mailer", 3_200_000, 80_000, 512, 700, 1_100_000),
    _disk_service("worker", 11_000_000, 45_000_000, 88_000_000, 2_000, 5_000_000),
]
DISK_REPORT: dict[str, Any] = {
    "root": str(FIXED_ROOT),
    "services": DISK_SERVICES,
    "other": _usage(1_300_000),
    "total": _usage(sum(s["total"]["bytes"] for s in DISK_SERVICES) + 1_300_000),
}


def _log_lines(service: str, count: int, start: float, step: float) -> list[LogLine]:
    lines = []
    for i in range(1, count + 1):
        if i % 5 == 0:
            lines.append(LogLine(i, start + i * step, "err", f"{service}: slow request #{i}"))
        else:
            lines.append(LogLine(i, start + i * step, "out", f"{service}: handled request #{i}"))
    return lines


LOGS = {
    "api": _log_lines("api", 40, NOW - 30, 0.5),
    "db": _log_lines("db", 25, NOW - 29.8, 0.8),
    "worker": [LogLine(1, NOW - 12, "err", "worker: cannot reach db: connection refused")],
}

RUN_ID = "20260101T115900.123456Z-1b6c93ea"
REJECTED_ID = "20260101T115700.654321Z-0c0ffee0"
RUNS = [
    {
        "run_id": REJECTED_ID,
        "engine": "heatstats",
        "status": "rejected",
        "path": f"{FIXED_ROOT}/data/heatstats/rejected/{REJECTED_ID}",
        "engine_version": "1.0.0",
        "started_at": "2026-01-01T11:57:00.654321Z",
        "reason": "input: needs an upstream artifact (--from-run)",
    },
    {
        "run_id": RUN_ID,
        "engine": "heat1d",
        "status": "sealed",
        "path": f"{FIXED_ROOT}/data/heat1d/runs/{RUN_ID}",
        "engine_code": "HEAT1D",
        "engine_version": "1.0.0",
        "project_id": "default",
        "started_at": "2026-01-01T11:59:00.127001Z",
        "duration": 0.195851,
        "signed": False,
        "reason": "",
    },
]
RUN = {
    "summary": RUNS[1],
    "run_input": {
        "context": {},
        "engine_code": "HEAT1D",
        "engine_version": "1.0.0",
        "inputs": {"alpha": "1/4", "cells": 5, "initial": [0, 0, 16, 0, 0], "steps": 3},
        "parameters": {"boundary": "fixed", "decimals": 3},
        "project_id": "default",
        "run_id": RUN_ID,
    },
    "run_output": {
        "engine": {"engine_code": "HEAT1D", "engine_version": "1.0.0"},
        "inputs_hash": "f846994adbc0e2ccc212277a18a8cad56e369e9fe7b9710d18e9d3f80261cfd5",
        "metrics": {"cell_updates": 15, "max_cell": 2},
        "outputs": {"alpha": "1/4", "cells": 5, "temperatures": ["0", "7/2", "5", "7/2", "0"]},
        "outputs_hash": "a06b44d011a463a5a892e57db99cd55f836c265ddde0c7cfee6ae7693d1de8ee",
        "run_id": RUN_ID,
    },
    "run_meta": {"duration": 0.195851, "engine": "heat1d", "exit_code": 0, "run_id": RUN_ID},
}
#: (path, size, role) of the bundle's files; each sha256 is that of the path's name (fixed).
ARTIFACTS = [
    {"path": path, "size": size, "sha256": hashlib.sha256(path.encode()).hexdigest(), "role": role}
    for path, size, role in (
        ("COUPLING_RULES.json", 14, "definition"),
        ("ENGINE_MANIFEST.json", 181, "definition"),
        ("RUN_CONDITIONS.json", 1262, "run"),
        ("RUN_INPUT.json", 244, "run"),
        ("RUN_META.json", 341, "run"),
        ("RUN_OUTPUT.json", 553, "run"),
        ("SEALING_SPEC.md", 3462, "definition"),
        ("artifacts/profile.csv", 116, "artifact"),
        ("artifacts/temperatures-over-time.csv", 48_213, "artifact"),
        ("logs/engine.stderr", 0, "log"),
    )
]


class FixedRunsClient:
    """Answers the runs requests the bridge makes with the fixed replies above (and the logs
    tails the details pane asks for, from LOGS)."""

    async def logs_tail(
        self, service: str, n: int = 100, after_seq: int | None = None
    ) -> LogsReply:
        lines = LOGS.get(service, [])[-n:]
        return LogsReply(service=service, lines=lines, last_seq=lines[-1].seq if lines else 0)

    async def runs_list(self, include_rejected: bool = False) -> RunsReply:
        return RunsReply(runs=msgspec.convert(RUNS, list[RunSummary]))

    async def runs_show(self, run_id: str) -> RunShowReply:
        return RunShowReply(
            run=msgspec.convert(RUN, RunDetails),
            artifacts=msgspec.convert(ARTIFACTS, list[ArtifactEntry]),
        )


class ScriptedBridge(Bridge):
    """A Bridge that talks to no daemon: on start it posts Connected (the fixed snapshot) and
    DiskUpdated, then Disconnected(``down``) if given; a logs screen gets the fixed lines as a
    catch-up would bring them (for ALL_LOGS merged by time, with their services)."""

    def __init__(self, root: Path, target: BridgeTarget, *, down: str = "") -> None:
        super().__init__(root, target)
        self.down = down
        self.client = FixedRunsClient()  # type: ignore[assignment]

    async def run(self) -> None:
        self.target.post_message(self.Connected(SNAPSHOT))
        self.target.post_message(self.DiskUpdated(msgspec.convert(DISK_REPORT, DiskReport)))
        if self.down:
            self.target.post_message(self.Disconnected(self.down))
        while not self._stopping:
            await self._retopic.wait()
            self._retopic.clear()

    def follow_logs(self, service: str | None) -> None:
        super().follow_logs(service)
        if service == ALL_LOGS:
            merged = sorted(
                ((line.ts, name, line) for name, lines in LOGS.items() for line in lines),
                key=lambda item: item[0],
            )
            self.target.post_message(
                self.LogLines(
                    ALL_LOGS,
                    [line for _, _, line in merged],
                    reset=True,
                    sources=[name for _, name, _ in merged],
                )
            )
        elif service is not None:
            self.target.post_message(self.LogLines(service, LOGS.get(service, []), reset=True))


def scripted_app(*, down: str = "", **kwargs: Any) -> RunyardApp:
    """A RunyardApp on the fixed data: no daemon, a fixed clock, a root that exists nowhere."""
    return RunyardApp(
        FIXED_ROOT, bridge=functools.partial(ScriptedBridge, down=down), clock=lambda: NOW, **kwargs
    )
