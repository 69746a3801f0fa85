"""One supervised service: its wanted state, its actual state, its process, logs and probe.

The runner is the one owner of its service. ``_commit`` is the only place that changes
``state`` (through the transition table, daemon/fsm.py), ``wanted``, ``reason``, ``restarts``
and ``spec``, and the only place that tells the supervisor, which publishes one state event and
records temp/state.json: one commit per transition, made once the facts of that transition are
in place (a start is announced once, ``starting`` with its pid). The supervisor never assigns a
runner's attributes: it asks (``want_up``, ``stop``, ``prepare_start``, ``hold``, ``block``,
``reconfigure``, ``restore``, ``adopt``, ``abandon``, ``observe``, ``fail``).

s6's rules: *wanted* (`Wanted`) is kept apart from *actual*; a process that goes down while
wanted up is handled by the restart policy; a start that meets a stop under way is queued and
honoured when the stop is done, never dropped.

Everything here runs on the daemon's single asyncio loop, so no locks are needed; the one long
operation (stop) is a task that concurrent callers share. What runs beside a process (its log
reader, its readiness probe) is carried by ``ServiceIO`` (daemon/service_io.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from runyard.protocol.messages import ServiceStatus
from runyard.runtime.config.limits import Limits

from .credentials import runs_as_other
from .fsm import ALIVE, ServiceState, Trigger, Wanted, next_state
from .host import RunnerHost
from .launch import prepare_launch
from .notify import notify_address
from .policy import RunClock, decide_restart
from .process import ProcessHandle, SpawnError, signal_group, stop_process, wait_exit
from .service_io import ServiceIO
from .service_limits import ServiceLimits
from .service_view import build_status
from .spawning import PreparedSpawn
from .spec import ServiceSpec
from .state import ServiceRecord
from .status_wire import ShownStatus

__all__ = ["STARTABLE", "ServiceRunner"]

S, T = ServiceState, Trigger

#: Exit code recorded when the program could not even be spawned (as a shell would say).
SPAWN_FAILED = 127
#: States from which the scheduler may spawn (``prepare_start``).
STARTABLE = frozenset({S.STOPPED, S.EXITED, S.FATAL, S.BACKOFF})


class ServiceRunner:
    def __init__(self, spec: ServiceSpec, sup: RunnerHost[ServiceRunner]) -> None:
        # --- owned: assigned only in _commit ---
        self.spec = spec
        self.state = S.STOPPED
        self.wanted = Wanted.DOWN
        self.reason = ""
        self.restarts = 0
        # --- the rest ---
        self.sup = sup
        #: Wanted up, not spawned yet: the scheduler spawns it once nothing holds it.
        self.pending_start = False
        #: Why this service may not start now (over the license limit, state.json cannot be
        #: written); "" when nothing blocks it. Set by block(), cleared by unblock().
        self.blocked = ""
        self.handle: ProcessHandle | None = None
        self.started_at: float | None = None
        self.failures = 0
        self._clock = RunClock()  # whether a run stayed up stable_secs, judged as it ends
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None
        self.next_start_at: float | None = None
        self.cpu_percent: float | None = None
        self.rss: int | None = None
        #: Its FIFOs and log (for good), a reader and probe (while a process runs).
        self.io = ServiceIO(
            spec,
            sup.tree.logs_dir,
            sup.fifo_dir,
            spool_dir=sup.spool_dir,
            on_lines=lambda lines: sup.on_log(self, lines),
            on_ready=self._commit,
            on_live=self._shown,
            on_dead=self.fail,
            notify_address=notify_address(
                sup.tree.temp_dir, spec.name, other_user=runs_as_other(spec.run_as)
            ),
        )
        self._watch: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._status: ShownStatus | None = None
        #: Changed but not announced yet (a start request, announced with the start itself).
        self._unannounced = False
        #: Why the daemon is ending the current process (``fail``); "" when it is not.
        self._failing = ""
        self._ending: asyncio.Task[None] | None = None
        #: Its cgroup and limits' bookkeeping (daemon/service_limits.py).
        self.limit_state = ServiceLimits()

    @property
    def name(self) -> str:
        return self.spec.name

    # --- the one place that changes state --------------------------------------------------

    def _commit(
        self,
        trigger: Trigger | None = None,
        *,
        reason: str | None = None,
        wanted: Wanted | None = None,
        restarts: int | None = None,
        spec: ServiceSpec | None = None,
        announce: bool = True,
    ) -> None:
        """Apply one transition and announce it once (event + state.json, by the supervisor).

        ``announce=False`` keeps the change for the next commit (or ``flush``), so a start
        request and the start it leads to are one event, not two.
        """
        if trigger is not None:
            self.state = next_state(self.state, trigger)
            if self.state is S.RUNNING:  # at once when started with start_secs 0, or adopted
                from_start = trigger is T.ADOPT or self.spec.start_secs <= 0
                self._clock.running(time.monotonic(), from_start=from_start)
            elif self._clock.left(time.monotonic()):  # stopped after a stable run
                self.failures = 0
        if reason is not None:
            self.reason = reason
        if wanted is not None:
            self.wanted = wanted
        if restarts is not None:
            self.restarts = restarts
        if spec is not None:
            self.spec = spec
        self._status = None
        if not announce:
            self._unannounced = True
            return
        self._unannounced = False
        self.sup.on_commit(self)

    def flush(self) -> None:
        """Announce what was changed without announcing (the scheduler calls it last)."""
        if self._unannounced:
            self._commit()

    # --- facts -----------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.state is S.RUNNING and (not self.spec.has_readiness or bool(self.io.ready))

    def satisfies(self, condition: str) -> bool:
        if condition == "completed":
            return self.state is S.EXITED and self.last_exit == 0
        if condition == "ready":
            return self.is_ready()
        return self.state is S.RUNNING

    def status(self) -> ServiceStatus:
        return self.shown().status

    def shown(self) -> ShownStatus:
        """What clients see, and its JSON. Cached between changes (a status of 50 services is
        the hottest request), except in backoff, where the countdown moves."""
        if self._status is not None and self.state is not S.BACKOFF:
            return self._status
        self._status = ShownStatus(build_status(self))
        return self._status

    def observe(self, cpu_percent: float | None, rss: int | None) -> None:
        """A CPU/RSS sample: shown in status, not a transition (no event)."""
        if (cpu_percent, rss) != (self.cpu_percent, self.rss):  # a sleeper's stay the same
            self.cpu_percent, self.rss = cpu_percent, rss
            self._status = None

    def _shown(self) -> None:
        """A liveness result: shown in status, not a transition (no event)."""
        self._status = None

    # --- what the supervisor asks ------------------------------------------------------------

    def want_up(self) -> None:
        """Wanted up. The supervisor spawns once the dependencies allow (``prepare_start``); a stop
        under way finishes first and then the start is honoured (``_stop``)."""
        if self.state in (S.STARTING, S.RUNNING):
            if self.wanted is not Wanted.UP:
                self._commit(wanted=Wanted.UP)
            return
        if self.state is S.FATAL:
            self.failures = 0  # a manual start gives a fatal service a new chance
        self.pending_start = True
        if self.state is S.STOPPING:
            self._commit(wanted=Wanted.UP, reason="start queued behind the stop under way")
        else:  # announced by the start, or by hold/block saying why it waits
            self._commit(wanted=Wanted.UP, announce=False)

    def hold(self, reason: str) -> None:
        """Wanted up but waiting (for dependencies): say why, once."""
        if reason != self.reason or self._unannounced:
            self._commit(reason=reason)

    def block(self, reason: str) -> None:
        """May not start until unblocked (license limit, state that cannot be recorded)."""
        self.blocked = reason
        if reason != self.reason or self._unannounced:
            self._commit(reason=reason)

    def unblock(self) -> None:
        was, self.blocked = self.blocked, ""
        if was and self.reason == was:
            self._commit(reason="")

    def reconfigure(self, spec: ServiceSpec) -> None:
        """Take a new definition (reload) with everything that depends on it: the log file's
        limits at once, the readiness probe for the next process (or now, if one runs)."""
        old = self.spec
        self._commit(spec=spec)
        self.io.reconfigure(old, spec)

    def restore(self, record: ServiceRecord) -> None:
        """What the previous daemon recorded: wanted, restarts, and fatal (kept, not retried)."""
        self.last_exit = record.last_exit
        if record.fatal and self.state is S.STOPPED:
            self._commit(
                T.RECALL_FATAL,
                wanted=record.wanted,
                restarts=record.restarts,
                reason=record.reason or "fatal when the previous daemon ended",
                announce=False,
            )
        else:
            self._commit(wanted=record.wanted, restarts=record.restarts, announce=False)

    # --- starting ----------------------------------------------------------------------------

    def prepare_start(self) -> PreparedSpawn | None:
        """A spawn but its Popen (the supervisor's ``StartBatch`` runs a pass's, then
        ``finish_start``); None when it failed already, handled as a spawn failure."""
        assert self.state in STARTABLE, self.state
        self.pending_start = False
        self.next_start_at = None
        self._cancel_timers()
        try:
            return prepare_launch(self.spec, self.io, self.limit_state, self.sup)
        except SpawnError as exc:
            self.finish_start(exc)
            return None

    def finish_start(self, spawned: ProcessHandle | SpawnError) -> None:
        self.io.pipes.close_child_fds()
        if isinstance(spawned, SpawnError):
            self.sup.log.warning("%s: %s", self.name, spawned)
            self._commit(T.START, reason="")  # there never was a pid to show
            self._after_exit(SPAWN_FAILED, str(spawned))
            return
        self._attach(spawned, started_at=time.time())
        self._commit(T.START, reason="")
        if self.spec.start_secs <= 0:
            self._commit(T.STARTED)
        else:
            self._later(self.spec.start_secs, self._started, spawned)

    def adopt(self, handle: ProcessHandle) -> None:
        """Take over a process found alive after a daemon restart."""
        self.io.pipes.reattach()
        self._attach(handle, started_at=handle.create_time)
        self._commit(T.ADOPT, wanted=Wanted.UP, reason="adopted after daemon restart")

    def abandon(self, reason: str) -> None:
        """A process was spawned but cannot be recorded: stop it (a process the next daemon
        cannot know of would become a duplicate) and start it again once unblocked."""
        self.block(reason)
        if self.state in ALIVE:
            asyncio.get_running_loop().create_task(self.stop(keep_wanted=True))

    def _attach(self, handle: ProcessHandle, started_at: float) -> None:
        self.handle = handle
        self.started_at = started_at
        self.limit_state.spawned()
        self.io.attach(self.spec, age=max(0.0, time.time() - started_at), handle=handle)
        self._clock.start(self.spec.stable_secs, time.monotonic())
        self._watch = asyncio.get_running_loop().create_task(self._watch_exit(handle))

    def _started(self, handle: ProcessHandle) -> None:
        if self.handle is handle and self.state is S.STARTING:
            self._commit(T.STARTED)

    def fail(self, reason: str) -> None:
        """The process is alive but failed a check of the daemon's (liveness): end it, its group
        and tree as a stop would, and let the restart policy decide as for any exit, with
        ``reason``. An operator's stop meanwhile takes over the exit as usual."""
        handle = self.handle
        if handle is None or self.state not in (S.STARTING, S.RUNNING) or self._failing:
            return
        self.sup.log.warning("%s: %s; ending it", self.name, reason)
        self._failing = reason
        self._commit(reason=f"{reason}; ending it")
        self._ending = asyncio.get_running_loop().create_task(self._end(handle))

    async def _end(self, handle: ProcessHandle) -> None:
        result = await stop_process(
            handle, stop_signal=self.spec.stop_signal, stop_timeout=self.spec.stop_timeout
        )
        if result.survivors:
            self.sup.log.warning("%s: survivors after ending it: %s", self.name, result.survivors)

    # --- exits -------------------------------------------------------------------------------

    async def _watch_exit(self, handle: ProcessHandle) -> None:
        code = await wait_exit(handle)
        cause = await self.limit_state.exit_cause(code)
        await self.io.detach(self.spec)
        if self.handle is not handle or self.state is S.STOPPING:
            return  # a stop owns this exit
        self.sup.containment.release(handle)  # what the main process left behind goes too
        self.handle = None
        self._after_exit(code, cause)

    def _after_exit(self, code: int | None, cause: str | None) -> None:
        """``cause`` (a spawn error, a limit, oom-killed) replaces what the exit code says."""
        self._cancel_timers()
        self.last_exit = code
        self.last_exit_at = time.time()
        self.started_at = None
        self.failures = (0 if self._clock.left(time.monotonic()) else self.failures) + 1
        cause, self._failing = self._failing or cause, ""
        decision = decide_restart(
            restart=self.spec.restart,
            exit_code=code,
            failures=self.failures,
            max_restarts=self.spec.max_restarts,
            backoff=self.spec.backoff,
            cause=cause,
        )
        reason = cause or decision.reason
        restarts = self.restarts
        if decision.trigger is T.EXIT_RETRY:
            restarts += 1
            self.next_start_at = time.monotonic() + decision.delay
            self._later(decision.delay, self._retry)
            reason = f"{reason}; restart in {decision.delay:.1f}s"
        elif decision.trigger is T.EXIT_FATAL and cause:
            reason = f"{cause}; gave up after {self.spec.max_restarts} restarts in a row"
        self._commit(decision.trigger, reason=reason, restarts=restarts)

    def _retry(self) -> None:
        """The backoff delay is over: the scheduler spawns (after recording, see supervisor)."""
        if self.state is S.BACKOFF and self.wanted is Wanted.UP:
            self.pending_start = True
            self.sup.request_schedule()

    # --- stopping ----------------------------------------------------------------------------

    async def stop(self, *, keep_wanted: bool = False) -> None:
        """Wanted down; returns when no process of this service is left.

        ``keep_wanted`` (daemon shutdown, an unrecordable spawn): stop the process but keep
        what the operator wanted, so the next daemon (or the retry) starts it again; a service
        with no process is then left exactly as it is (fatal stays fatal).
        """
        wanted = self.wanted if keep_wanted else Wanted.DOWN
        if not keep_wanted:
            self.pending_start = False
        if self._stop_task is not None and not self._stop_task.done():
            if wanted is not self.wanted:
                self._commit(wanted=wanted)
            await asyncio.shield(self._stop_task)
            return
        if self.state in ALIVE and self.handle is not None:
            self._cancel_timers()
            self._commit(T.STOP, reason="stopping", wanted=wanted)
            self._stop_task = asyncio.get_running_loop().create_task(self._stop(self.handle))
            await asyncio.shield(self._stop_task)
            return
        if keep_wanted:
            return
        self._cancel_timers()
        self.next_start_at = None
        if self.state in (S.BACKOFF, S.EXITED, S.FATAL):
            self._commit(T.STOP, reason="stopped", wanted=Wanted.DOWN)
        elif self.wanted is not Wanted.DOWN or self._unannounced:
            self._commit(wanted=Wanted.DOWN, reason=self.blocked)

    async def _stop(self, handle: ProcessHandle) -> None:
        result = await stop_process(
            handle, stop_signal=self.spec.stop_signal, stop_timeout=self.spec.stop_timeout
        )
        self.sup.containment.release(handle)
        if self._watch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        else:
            await self.io.detach(self.spec)
        self.handle = None
        self.started_at = None
        self._failing = ""
        self.last_exit = result.exit_code
        self.last_exit_at = time.time()
        how = "killed after stop_timeout" if result.killed else "stopped"
        if result.survivors:
            how += f"; survivors {result.survivors}"
        if self.wanted is Wanted.UP:
            self.pending_start = True  # a start arrived during the stop: honour it now
        self._commit(T.STOPPED, reason=self.blocked or how)

    # --- limits (daemon/limit_watch.py samples what no cgroup controller applies) ------------

    def limits_to_sample(self) -> tuple[Limits, frozenset[str]]:
        """The limits, and which of them no cgroup controller applies (the watch samples those)."""
        return self.spec.limits, self.limit_state.sampled(self.spec.limits)

    def limited_pids(self) -> tuple[int, int] | None:
        """(pid, pgid) to measure: running, and not already being killed for a limit."""
        ok = self.state in (S.STARTING, S.RUNNING) and not self.limit_state.killing
        return (self.handle.pid, self.handle.pgid) if ok and self.handle else None

    def exceed_limit(self, reason: str) -> None:
        """Over a limit: kill the tree; the restart policy then takes ``reason`` as the cause."""
        if self.limited_pids() is None or self.handle is None:
            return
        self.limit_state.kill(self.handle, reason)
        self.sup.log.warning("%s: %s; killing it", self.name, reason)
        self._commit(reason=f"{reason}; killing it")

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
        if self._watch is not None:
            self._watch.cancel()
        if self._ending is not None:
            self._ending.cancel()
        await self.io.close()
