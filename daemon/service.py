"""One supervised service: its wanted state, its actual state, its process, logs and probe.

`ServiceRunner._set` is the only place that assigns ``state``; it goes through the transition
table (daemon/fsm.py) and tells the supervisor, which publishes the change and persists it.
Everything here runs on the daemon's single asyncio loop, so no locks are needed; the one
long operation (stop) is a task that concurrent callers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING

from protocol.messages import LogLine, ServiceStatus

from .fsm import ALIVE, ServiceState, Trigger, next_state
from .logs import LogPipes, LogReader, ServiceLog
from .policy import decide_restart
from .process import ProcessHandle, SpawnError, signal_group, spawn, stop_process, wait_exit
from .readiness import ReadinessMonitor
from .spec import ServiceSpec

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["ServiceRunner"]

S, T = ServiceState, Trigger

#: Exit code recorded when the program could not even be spawned (as a shell would say).
SPAWN_FAILED = 127


class ServiceRunner:
    def __init__(self, spec: ServiceSpec, sup: Supervisor) -> None:
        self.spec = spec
        self.sup = sup
        self.state = S.STOPPED
        self.wanted = "down"
        #: Set by a start request, cleared once a start happens: dependency gating waits on it.
        self.pending_start = False
        self.handle: ProcessHandle | None = None
        self.started_at: float | None = None
        self.restarts = 0
        self.failures = 0
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None
        self.reason = ""
        self.next_start_at: float | None = None
        self.ready: bool | None = None
        self.ready_detail = ""
        self.cpu_percent: float | None = None
        self.rss: int | None = None
        self.pipes = LogPipes(sup.fifo_dir, spec.name)
        self.log = ServiceLog(
            spec.name,
            sup.tree.logs_dir,
            max_bytes=spec.log_max_bytes,
            backups=spec.log_backups,
            mode=spec.log_mode,
            spool_dir=sup.fifo_dir,
        )
        self._reader: LogReader | None = None
        self._monitor: ReadinessMonitor | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._status: ServiceStatus | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    # --- the one place that changes state ----------------------------------------------------

    def _set(self, trigger: Trigger, reason: str | None = None) -> None:
        self.state = next_state(self.state, trigger)
        if reason is not None:
            self.reason = reason
        self.sup.on_change(self)

    # --- facts -------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        if self.state is not S.RUNNING:
            return False
        return True if self.spec.readiness is None else bool(self.ready)

    def satisfies(self, condition: str) -> bool:
        if condition == "completed":
            return self.state is S.EXITED and self.last_exit == 0
        if condition == "ready":
            return self.is_ready()
        return self.state is S.RUNNING

    def invalidate(self) -> None:
        """Something shown in status changed; the next status() builds it anew."""
        self._status = None

    def status(self) -> ServiceStatus:
        """What clients see. Cached between changes (a status of 50 services is the hottest
        request), except in backoff, where the countdown moves."""
        if self._status is not None and self.state is not S.BACKOFF:
            return self._status
        self._status = self._build_status()
        return self._status

    def _build_status(self) -> ServiceStatus:
        next_in = None
        if self.state is S.BACKOFF and self.next_start_at is not None:
            next_in = max(0.0, self.next_start_at - time.monotonic())
        return ServiceStatus(
            name=self.name,
            version=self.spec.version,
            state=str(self.state),
            wanted=self.wanted,
            ready=None if self.spec.readiness is None else bool(self.ready),
            ready_detail=self.ready_detail,
            pid=self.handle.pid if self.handle else None,
            pgid=self.handle.pgid if self.handle else None,
            started_at=self.started_at,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_exit_at=self.last_exit_at,
            reason=self.reason,
            next_start_in=next_in,
            cpu_percent=self.cpu_percent,
            rss=self.rss,
            ports=list(self.spec.ports),
            autostart=self.spec.autostart,
            depends_on=dict(self.spec.depends_on),
        )

    # --- starting ----------------------------------------------------------------------------

    def request_start(self) -> None:
        """Wanted up. The supervisor spawns once the dependencies allow (`start_now`)."""
        self.wanted = "up"
        if self.state in (S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF):
            self.pending_start = True
            if self.state is S.FATAL:
                self.failures = 0
        self.sup.on_change(self)

    def start_now(self) -> None:
        """Spawn; called by the supervisor when this is wanted up and its dependencies allow."""
        self.pending_start = False
        self._cancel_timers()
        self._set(T.START, reason="")
        self._spawn()

    def _spawn(self) -> None:
        spec = self.spec
        os.makedirs(spec.cwd, exist_ok=True)
        fds = self.pipes.prepare()
        try:
            handle = spawn(
                list(spec.argv),
                env=dict(spec.env),
                cwd=spec.cwd,
                stdout=fds.stdout,
                stderr=fds.stderr,
                keep_fds=fds.keep,
            )
        except SpawnError as exc:
            self.pipes.close_child_fds()
            self.sup.log.warning("%s: %s", self.name, exc)
            self._after_exit(SPAWN_FAILED, str(exc))
            return
        self.pipes.close_child_fds()
        self._attach(handle, started_at=time.time())
        if spec.start_secs <= 0:
            self._set(T.STARTED)
        else:
            self._later(spec.start_secs, self._started, handle)

    def adopt(self, handle: ProcessHandle) -> None:
        """Take over a process found alive after a daemon restart."""
        self.wanted = "up"
        self.pipes.reattach()
        self._set(T.ADOPT, reason="adopted after daemon restart")
        self._attach(handle, started_at=handle.create_time)

    def _attach(self, handle: ProcessHandle, started_at: float) -> None:
        self.handle = handle
        self.started_at = started_at
        loop = asyncio.get_running_loop()
        self._reader = LogReader()
        self._reader.attach(loop, self.pipes, self.log, self._on_lines)
        if self.spec.readiness is not None:
            self.ready = False
            self.ready_detail = "waiting for the first probe"
            self._monitor = ReadinessMonitor(
                self.spec.readiness,
                port=_probe_port(self.spec),
                env=self.spec.env,
                cwd=self.spec.cwd,
                on_change=self._on_ready,
            )
            self._monitor.start()
        self._later(self.spec.stable_secs, self._stable, handle)
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(handle))
        self.sup.on_change(self)

    def _started(self, handle: ProcessHandle) -> None:
        if self.handle is handle and self.state is S.STARTING:
            self._set(T.STARTED)

    def _stable(self, handle: ProcessHandle) -> None:
        if self.handle is handle and self.state is S.RUNNING:
            self.failures = 0

    def _on_ready(self, ready: bool, detail: str) -> None:
        self.ready = ready
        self.ready_detail = detail
        self.sup.on_change(self)

    def _on_lines(self, lines: list[LogLine]) -> None:
        if self._monitor is not None and lines:
            self._monitor.feed_log([line.line for line in lines])
        self.sup.on_log(self, lines)

    # --- exits -------------------------------------------------------------------------------

    async def _watch_exit(self, handle: ProcessHandle) -> None:
        code = await wait_exit(handle)
        await self._detach_io()
        if self.handle is not handle or self.state is S.STOPPING:
            return  # a stop owns this exit
        self.handle = None
        self._after_exit(code, None)

    async def _detach_io(self) -> None:
        if self._reader is not None:
            # The last lines a process wrote are kept: drain before reporting the exit.
            await self._reader.drain(timeout=2.0)
            self._reader.detach()
            self._reader = None
            self.log.flush()
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
        self.ready = None if self.spec.readiness is None else False

    def _after_exit(self, code: int | None, spawn_error: str | None) -> None:
        self._cancel_timers()
        self.last_exit = code
        self.last_exit_at = time.time()
        self.started_at = None
        self.failures += 1
        decision = decide_restart(
            restart=self.spec.restart,
            exit_code=code,
            failures=self.failures,
            max_restarts=self.spec.max_restarts,
            backoff=self.spec.backoff,
        )
        reason = spawn_error or decision.reason
        if decision.trigger is T.EXIT_RETRY:
            self.restarts += 1
            self.next_start_at = time.monotonic() + decision.delay
            self._later(decision.delay, self._retry)
            reason = f"{reason}; restart in {decision.delay:.1f}s"
        elif decision.trigger is T.EXIT_FATAL and spawn_error:
            reason = f"{spawn_error}; gave up after {self.spec.max_restarts} restarts in a row"
        self._set(decision.trigger, reason=reason)

    def _retry(self) -> None:
        if self.state is S.BACKOFF and self.wanted == "up":
            self.next_start_at = None
            self._set(T.RETRY, reason="")
            self._spawn()

    # --- stopping ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Wanted down; returns when no process of this service is left."""
        self.wanted = "down"
        self.pending_start = False
        self._cancel_timers()
        if self._stop_task is not None and not self._stop_task.done():
            await asyncio.shield(self._stop_task)
            return
        if self.state in (S.BACKOFF, S.EXITED, S.FATAL):
            self.next_start_at = None
            self._set(T.STOP, reason="stopped")
            return
        if self.state not in ALIVE or self.handle is None:
            self.sup.on_change(self)
            return
        self._stop_task = asyncio.get_running_loop().create_task(self._stop(self.handle))
        await asyncio.shield(self._stop_task)

    async def _stop(self, handle: ProcessHandle) -> None:
        self._set(T.STOP, reason="stopping")
        result = await stop_process(
            handle, stop_signal=self.spec.stop_signal, stop_timeout=self.spec.stop_timeout
        )
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        else:
            await self._detach_io()
        self.handle = None
        self.started_at = None
        self.last_exit = result.exit_code
        self.last_exit_at = time.time()
        how = "killed after stop_timeout" if result.killed else "stopped"
        if result.survivors:
            how += f"; survivors {result.survivors}"
        self._set(T.STOPPED, reason=how)

    def send_signal(self, sig: int) -> bool:
        return self.handle is not None and signal_group(self.handle, sig)

    # --- timers ------------------------------------------------------------------------------

    def _later(self, delay: float, fn, *args) -> None:  # type: ignore[no-untyped-def]
        self._timers.append(asyncio.get_running_loop().call_later(delay, fn, *args))

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def close(self) -> None:
        """Release what this runner holds without touching a live process (daemon exit)."""
        self._cancel_timers()
        if self._reader is not None:
            self._reader.detach()
            self._reader = None
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
        if self._watch is not None:
            self._watch.cancel()
        self.log.close()
        self.pipes.close()


def _probe_port(spec: ServiceSpec) -> int | None:
    from .readiness import resolve_port

    assert spec.readiness is not None
    return resolve_port(spec.readiness, spec.port_map)
