"""Readiness: whether a running service is able to serve, as reported by a probe.

"Spawned" and "ready" are different facts (s6). The FSM knows a process is ``running``; this
module owns the second fact: the ``[services.NAME.readiness]`` table, four probes and the
monitor that runs one of them for one spawned process.

    [services.web.readiness]
    kind = "http"          # tcp | http | exec | log
    port = "http"          # a defaultPorts name of the service, or a number
    path = "/healthz"
    interval = 1.0         # seconds between probe starts
    threshold = 2          # consecutive successes to become ready
    failure_threshold = 3  # consecutive failures, once ready, to become not ready

The tcp, http and exec probes themselves live in daemon/probes.py (liveness runs them too) and
are re-exported here. A ``log`` probe runs no loop; the daemon feeds it captured lines
and the first match makes the service ready for the rest of that process's life.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec

from runyard.runtime.config.supervision import SupervisionError, range_problem
from runyard.runtime.core.manifest import decode_error_message

from .probes import (
    check_target,
    end_task,
    probe_exec,
    probe_http,
    probe_tcp,
    resolve_port,
    run_probe,
)

__all__ = [
    "LogMatcher",
    "Readiness",
    "ReadinessMonitor",
    "parse_readiness",
    "probe_exec",
    "probe_http",
    "probe_tcp",
    "resolve_port",
    "validate_readiness",
]

log = logging.getLogger("runyard.readiness")

#: Longest matched log line quoted in a detail.
MATCH_DETAIL_CHARS = 200


class Readiness(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``readiness`` table of a service's supervision settings."""

    kind: Literal["tcp", "http", "exec", "log"]
    #: tcp/http: a ``defaultPorts`` name of the service, or a port number.
    port: str | int | None = None
    host: str = "127.0.0.1"
    #: http: the request target.
    path: str = "/"
    #: http: the status that means ready.
    status: int = 200
    #: exec: argv run with the service's env and cwd; exit 0 = ready.
    command: list[str] = []
    #: log: a regex searched in each captured output line; once matched, stays ready.
    pattern: str = ""
    interval: float = 1.0
    timeout: float = 1.0
    threshold: int = 1
    failure_threshold: int = 3
    initial_delay: float = 0.0


# --- configuration ------------------------------------------------------------------------------


def parse_readiness(table: Mapping[str, Any], ports: Mapping[str, int], where: str) -> Readiness:
    """A TOML table -> a checked `Readiness`; SupervisionError (a ValueError) is one line."""
    for key, value in table.items():  # every number in its range; NaN and infinity never
        problem = range_problem(key, value)
        if problem:
            raise SupervisionError(f"{where}.{key}: {problem}")
    try:
        spec = msgspec.convert(dict(table), Readiness)
    except msgspec.ValidationError as exc:
        raise SupervisionError(f"{where}.{decode_error_message(exc)}") from None
    validate_readiness(spec, ports, where)
    return spec


def validate_readiness(r: Readiness, ports: Mapping[str, int], where: str) -> None:
    """Check what types cannot; SupervisionError (a ValueError) names ``where`` and the field."""

    def fail(field: str, problem: str) -> SupervisionError:
        return SupervisionError(f"{where}.{field}: {problem}")

    for field in ("interval", "timeout"):
        value = getattr(r, field)
        if not (math.isfinite(value) and value > 0):
            raise fail(field, f"expected a number of seconds > 0, got {value!r}")
    if not (math.isfinite(r.initial_delay) and r.initial_delay >= 0):
        raise fail("initial_delay", f"expected a number of seconds >= 0, got {r.initial_delay!r}")
    for field in ("threshold", "failure_threshold"):
        if getattr(r, field) < 1:
            raise fail(field, f"expected a count >= 1, got {getattr(r, field)}")

    check_target(r, ports, fail)
    if r.kind == "log":
        if not r.pattern:
            raise fail("pattern", "kind 'log' needs a non-empty regex")
        try:
            re.compile(r.pattern)
        except re.error as exc:
            raise fail("pattern", f"not a valid regex: {exc}") from None


class LogMatcher:
    """Searches captured output lines for a regex; once one matched, it stays matched."""

    def __init__(self, pattern: str) -> None:
        self._regex = re.compile(pattern)
        #: The first line that matched (without its line ending), or None.
        self.matched_line: str | None = None

    @property
    def matched(self) -> bool:
        return self.matched_line is not None

    def feed(self, lines: Iterable[str]) -> bool:
        """True once any line fed so far matched."""
        if self.matched_line is not None:
            return True
        for line in lines:
            line = line.rstrip("\r\n")
            if self._regex.search(line):
                self.matched_line = line
                return True
        return False


# --- the monitor --------------------------------------------------------------------------------


class MonitorPhase(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class ReadinessMonitor:
    """Runs one readiness probe for one spawned process and reports transitions.

    ``on_change(ready, detail)`` is called only when ``ready`` flips; it starts False. One
    monitor per process: a respawned process gets a new monitor (and starts not ready).
    """

    def __init__(
        self,
        spec: Readiness,
        *,
        port: int | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
        on_change: Callable[[bool, str], None],
    ) -> None:
        if spec.kind in ("tcp", "http") and port is None:
            raise ValueError(f"readiness kind {spec.kind!r} needs a resolved port")
        self.spec = spec
        self.port = port
        self._env = env
        self._cwd = cwd
        self._on_change = on_change
        self._matcher = LogMatcher(spec.pattern) if spec.kind == "log" else None
        self._ready = False
        self._successes = 0
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self.phase = MonitorPhase.NEW
        #: What the latest probe (or log match) said; "" before the first one.
        self.last_detail = ""

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        """Start probing (needs a running event loop); a log monitor only waits for lines."""
        if self.phase is not MonitorPhase.NEW:
            raise RuntimeError(f"readiness monitor already {self.phase.value}")
        self.phase = MonitorPhase.RUNNING
        if self._matcher is None:
            self._task = asyncio.get_running_loop().create_task(
                self._probe_loop(), name=f"readiness-{self.spec.kind}"
            )

    def feed_log(self, lines: Sequence[str]) -> None:
        """Captured output lines of the process; only a ``log`` monitor looks at them."""
        if self._matcher is None or self._ready or self.phase is MonitorPhase.STOPPED:
            return
        if self._matcher.feed(lines):
            line = self._matcher.matched_line or ""
            self.last_detail = f"matched: {line[:MATCH_DETAIL_CHARS]}"
            self._set_ready(True)

    async def stop(self) -> None:
        """Cancel the probe loop and wait for it (a running exec probe is killed and reaped)."""
        self.phase = MonitorPhase.STOPPED
        task, self._task = self._task, None
        await end_task(task)

    async def probe_once(self) -> tuple[bool, str]:
        """One probe of the configured kind; never raises for what it probes."""
        if self._matcher is not None:
            return self._matcher.matched, self.last_detail
        return await run_probe(self.spec, self.port, self._env, self._cwd)

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.spec.initial_delay)
        next_start = loop.time()
        while True:
            try:
                ok, detail = await self.probe_once()
            except Exception as exc:  # a bug, not a probe failure: log it, count it, go on
                log.exception("readiness probe crashed")
                ok, detail = False, f"probe error: {exc!r}"
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that raced with the probe's completion: honour it.
                raise asyncio.CancelledError
            self._record(ok, detail)
            # Fixed rate, but a probe slower than the interval delays the next instead of
            # bunching them up.
            next_start = max(next_start + self.spec.interval, loop.time())
            await asyncio.sleep(next_start - loop.time())

    def _record(self, ok: bool, detail: str) -> None:
        self.last_detail = detail
        if ok:
            self._successes += 1
            self._failures = 0
            if not self._ready and self._successes >= self.spec.threshold:
                self._set_ready(True)
        else:
            self._failures += 1
            self._successes = 0
            if self._ready and self._failures >= self.spec.failure_threshold:
                self._set_ready(False)

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        try:
            self._on_change(ready, self.last_detail)
        except Exception:  # the caller's bug must not stop the probing
            log.exception("readiness on_change callback failed")
