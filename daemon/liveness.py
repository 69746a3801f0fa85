"""Liveness: whether a running service still answers, apart from whether it is ready.

Readiness (daemon/readiness.py) gates dependants and /readyz and never restarts anything: a
service that is not ready is waited for. Liveness is the other question: a process that is
alive, holds its port and no longer answers is hung, and only a restart helps. This module owns
the ``[services.NAME.liveness]`` table and the monitor that probes one process with the same
tcp / http / exec probes readiness uses (daemon/probes.py):

    [services.web.liveness]
    kind = "http"          # tcp | http | exec
    port = "http"
    path = "/health"
    interval = 10.0        # seconds between probe starts
    timeout = 1.0
    failure_threshold = 3  # consecutive failures that end the process
    start_period = 0.0     # grace after the start before failures count

Failures count once the grace is over: ``start_period`` after the process started, or earlier
when its readiness probe reports ready (it has shown it is up). The monitor only reports: after
``failure_threshold`` consecutive counted failures it calls ``on_dead(reason)`` once and stops
probing; the runner ends the process and its restart policy decides what follows.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from runyard.runtime.config.supervision import SupervisionError, range_problem
from runyard.runtime.core.manifest import decode_error_message

from .probes import check_target, end_task, run_probe

__all__ = ["Liveness", "LivenessMonitor", "parse_liveness"]

log = logging.getLogger("runyard.liveness")


class Liveness(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``liveness`` table of a service's supervision settings."""

    kind: Literal["tcp", "http", "exec"]
    #: tcp/http: a ``defaultPorts`` name of the service, or a port number.
    port: str | int | None = None
    host: str = "127.0.0.1"
    #: http: the request target.
    path: str = "/"
    #: http: the status that means alive.
    status: int = 200
    #: exec: argv run with the service's env and cwd; exit 0 = alive.
    command: list[str] = []
    interval: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    start_period: float = 0.0


def parse_liveness(table: Mapping[str, Any], ports: Mapping[str, int], where: str) -> Liveness:
    """A TOML table -> a checked `Liveness`; SupervisionError (a ValueError) is one line."""
    for key, value in table.items():  # every number in its range (RANGES); NaN never
        problem = range_problem(key, value)
        if problem:
            raise SupervisionError(f"{where}.{key}: {problem}")
    try:
        spec = msgspec.convert(dict(table), Liveness)
    except msgspec.ValidationError as exc:
        raise SupervisionError(f"{where}.{decode_error_message(exc)}") from None

    def fail(field: str, problem: str) -> SupervisionError:
        return SupervisionError(f"{where}.{field}: {problem}")

    for field in ("interval", "timeout"):
        if not (math.isfinite(getattr(spec, field)) and getattr(spec, field) > 0):
            raise fail(field, f"expected a number of seconds > 0, got {getattr(spec, field)!r}")
    check_target(spec, ports, fail)
    return spec


class LivenessMonitor:
    """Probes one process at a fixed rate; reports every result, and a death once.

    ``on_result(ok, detail)`` after each probe (for status), ``on_dead(reason)`` once, when
    ``failure_threshold`` consecutive failures were counted after the grace. One monitor per
    process, as for readiness.
    """

    def __init__(
        self,
        spec: Liveness,
        *,
        port: int | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
        grace: float,
        on_result: Callable[[bool, str], None],
        on_dead: Callable[[str], None],
    ) -> None:
        if spec.kind in ("tcp", "http") and port is None:
            raise ValueError(f"liveness kind {spec.kind!r} needs a resolved port")
        self.spec = spec
        self.port = port
        self._env = env
        self._cwd = cwd
        self._grace = max(0.0, grace)
        self._on_result = on_result
        self._on_dead = on_dead
        self._armed_at: float | None = None
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        #: Set once ``on_dead`` was called: this process is given up on.
        self.dead = False

    def start(self) -> None:
        """Start probing (needs a running event loop); the grace counts from now."""
        loop = asyncio.get_running_loop()
        if self._armed_at is None:
            self._armed_at = loop.time() + self._grace
        self._task = loop.create_task(self._probe_loop(), name=f"liveness-{self.spec.kind}")

    def arm(self) -> None:
        """The service reported ready: the grace is over, failures count from now."""
        now = asyncio.get_running_loop().time()
        if self._armed_at is None or self._armed_at > now:
            self._armed_at = now

    async def stop(self) -> None:
        """Cancel the probe loop and wait for it (a running exec probe is killed and reaped)."""
        task, self._task = self._task, None
        await end_task(task)

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while not self.dead:
            try:
                ok, detail = await run_probe(self.spec, self.port, self._env, self._cwd)
            except Exception as exc:  # a bug, not a probe failure: log it, count it, go on
                log.exception("liveness probe crashed")
                ok, detail = False, f"probe error: {exc!r}"
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # a cancel that raced with the probe's end
            self._record(ok, detail, loop.time())
            next_start = max(next_start + self.spec.interval, loop.time())
            await asyncio.sleep(next_start - loop.time())

    def _record(self, ok: bool, detail: str, now: float) -> None:
        armed = self._armed_at is not None and now >= self._armed_at
        self._failures = 0 if ok else self._failures + (1 if armed else 0)
        self._call(self._on_result, ok, detail)
        if self._failures >= self.spec.failure_threshold:
            self.dead = True
            self._call(self._on_dead, f"liveness failed {self._failures} times: {detail}")

    @staticmethod
    def _call(fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # the caller's bug must not stop the probing
            log.exception("liveness callback failed")
