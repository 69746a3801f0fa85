"""All services of one tree: loading, dependency order, start/stop/restart, reload, adoption.

Starts follow ``depends_on``: a service wanted up waits (reason ``waiting for db (ready)``)
until each dependency satisfies its condition; asking to start a service asks for its
dependencies too. Stopping everything goes in reverse: dependents first, level by level, each
level concurrently. Reload compares definition digests and touches only what changed.

The supervisor never assigns a runner's attributes: it asks the runner (daemon/service.py), which
commits and announces each transition once; ``on_commit`` publishes the event and has
temp/state.json written. start, stop, restart, reload, ensure and shutdown pass through one
`OperationOrder` (daemon/order.py): concurrent requests take effect in the order they came.

Nothing is spawned that cannot be recorded: before a scheduling pass spawns, state.json must
take a write, and it is written again right after, with the new pids. While it cannot be
written (disk full, I/O error) the services to start are blocked with the reason ``blocked:
cannot record state: no space left on device``; a process spawned whose pid could not be
recorded is stopped again. The write is retried every second, and once it works the blocked
starts go ahead. A new daemon after a ``kill -9`` thus never starts a duplicate.

A license's ``max_services`` (community: no cap) caps how many services run: ``LicenseCap``
(daemon/license_cap.py) decides which and why, the supervisor blocks and unblocks its runners
accordingly. A process of such a service found alive at boot is stopped, as one of a service no
longer configured is. Reload reads the license again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from runyard.protocol.messages import LogEvent, LogLine, ServiceStatus, StateEvent
from runyard.runtime.config.project import Project, load_project
from runyard.runtime.core.errors import OverLimit, UnknownService
from runyard.runtime.core.locking import install_hold
from runyard.runtime.core.manifest import RuntimeManifest
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.license import LicenseStatus

from .containment import Containment
from .events import EventBus
from .fd_room import make_room
from .fsm import ALIVE, ServiceState
from .license_cap import LicenseCap
from .limit_watch import watch_limits
from .logs.spool_home import remove_if_empty, spool_home, sweep_orphans
from .order import OperationOrder
from .restore import restore_recorded
from .service import STARTABLE, ServiceRunner
from .spec import (
    ServiceSpec,
    dependency_levels,
    load_specs,
    start_order,
    with_dependencies,
)
from .start_batch import StartBatch
from .state import DaemonState, ServiceRecord, StateRecorder, load_state
from .stats import SampleRings, StatsSampler

__all__ = ["OverLimit", "Supervisor", "UnknownService"]

S = ServiceState
T = TypeVar("T")
#: Lines per log event at most; a client that needs more backfills with logs.tail.
MAX_LINES_PER_EVENT = 500
#: How soon a start held back by an install or a removal of its version is tried again.
INSTALL_RETRY_SECS = 0.05


class Supervisor:
    def __init__(
        self,
        tree: RuntimeTree,
        project_file: Path | None,
        bus: EventBus,
        log: logging.Logger,
        license: LicenseStatus | None = None,
        license_loader: Callable[[], LicenseStatus] | None = None,
    ) -> None:
        self.tree = tree
        self.project_file = project_file
        self.bus = bus
        self.log = log
        #: The license's max_services: ``cap.blocked`` are the services it leaves out.
        self.cap = LicenseCap(license, license_loader, log)
        self.fifo_dir = tree.temp_dir / "fifo"
        #: The log spools: on tmpfs when it is usable (set at boot), else in fifo_dir.
        self.spool_dir = self.fifo_dir
        self.runners: dict[str, ServiceRunner] = {}
        #: The last minutes of CPU/RSS samples per service (the ``stats`` request).
        self.samples = SampleRings()
        self.order: list[str] = []
        #: The one order of every operation that changes what runs.
        self.operations = OperationOrder()
        self.recorder = StateRecorder(tree, self._snapshot, log, self._recorded_again)
        #: Services blocked because state.json could not be written.
        self._unrecorded: set[str] = set()
        #: The shutdown operation runs: nothing more is spawned.
        self._stopping_all = False
        self.started_at = time.time()
        self._schedule_pending = False
        self._held_retry: asyncio.TimerHandle | None = None  # one for all held-back starts
        #: CPU/RSS of each service, sampled while status requests come (see stats.py).
        self.stats = StatsSampler(lambda: self.runners.values(), self.samples)
        #: Where each service's processes are kept (a cgroup, or the subreaper).
        self.containment = Containment(tree.root, log)
        self._limits_task: asyncio.Task[None] | None = None
        self._limits_wake = asyncio.Event()  # set when a service with a sampled limit commits

    @property
    def shutting_down(self) -> bool:
        """Shutdown was asked for: operations that come now are refused."""
        return self.operations.closing

    # --- loading and booting -----------------------------------------------------------------

    def _load_specs(
        self, project: Project | None = None, manifest: RuntimeManifest | None = None
    ) -> dict[str, ServiceSpec]:
        """The services of runyard.toml and the manifest, each read now unless given."""
        if project is None:
            project = load_project(self.project_file)
        specs, warnings = load_specs(self.tree, project, manifest)
        for w in warnings:
            self.log.warning("%s", w)
        return specs

    # --- the license's max_services ---------------------------------------------------------

    def _admit(self, keep: Iterable[str] = ()) -> list[str]:
        """Block what the license leaves out, unblock what it admits again; returns the services
        newly over the limit."""
        deps = {n: tuple(r.spec.depends_on) for n, r in self.runners.items()}
        before = self.cap.admit(self.order, deps, keep)
        for name, runner in self.runners.items():
            reason = self.cap.blocked.get(name)
            if reason is not None:
                runner.block(reason)
            elif name in before:
                runner.unblock()
        return [n for n in self.cap.blocked if n not in before]

    def refuse_over_limit(self, names: Iterable[str]) -> None:
        """Raise OverLimit naming the first service of ``names`` (or of their dependencies)
        beyond the limit."""
        self.cap.refuse(self._with_dependencies(names))

    async def boot(
        self, project: Project | None = None, manifest: RuntimeManifest | None = None
    ) -> None:
        """Load the services, take back live processes from state.json, start what is wanted.
        ``project`` and ``manifest``: as the daemon loaded and checked them moments before (one
        read and validation each per boot, not three: issue 16, cold start)."""
        self.fifo_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.fifo_dir, 0o700)
        self.spool_dir, why = spool_home(self.tree.root, self.fifo_dir)
        if why:
            self.log.warning("log spools kept on disk in %s: %s", self.fifo_dir, why)
        sweep_orphans()  # after: a moved tree's spools are ours by now, not an orphan's
        specs = self._load_specs(project, manifest)
        self.order = start_order(specs)
        self.runners = {name: ServiceRunner(specs[name], self) for name in self.order}
        self._admit()
        recorded, warning = load_state(self.tree)
        if warning:
            self.log.warning("%s", warning)
        await restore_recorded(recorded, self.runners, self.cap.blocked, self.containment, self.log)
        for name in self.order:
            runner = self.runners[name]
            if (
                name not in recorded.services
                and runner.spec.autostart
                and name not in self.cap.blocked
            ):
                runner.want_up()
        if not self._schedule() or self.recorder.pending:
            # What restore changed, unless the pass's write after its spawns took it all (one
            # fsync less on the way to the first status answer).
            self.recorder.write()
        self._limits_task = asyncio.get_running_loop().create_task(
            watch_limits(lambda: self.runners.values(), self._limits_wake)
        )

    # --- change notification -----------------------------------------------------------------

    def on_commit(self, runner: ServiceRunner) -> None:
        """A runner committed a transition: one state event, and state.json written soon."""
        if runner.limit_state.sampled(runner.spec.limits):
            self._limits_wake.set()  # a service the limit watch samples may run now
        status = runner.status()
        topic = f"state.{runner.name}"
        self.bus.publish(
            topic, lambda seq, ts: StateEvent(topic=topic, seq=seq, ts=ts, service=status)
        )
        self.recorder.request()
        self.request_schedule()

    def on_log(self, runner: ServiceRunner, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        topic = f"log.{runner.name}"
        # The lines (a LazyLines: decoded on first use) are read only when a client follows.
        self.bus.publish_lines(
            topic,
            lines[-1].seq,
            lambda seq, ts: LogEvent(
                topic=topic,
                seq=seq,
                ts=ts,
                service=runner.name,
                lines=list(lines[-MAX_LINES_PER_EVENT:]),
            ),
        )

    def request_schedule(self) -> None:
        if not self._schedule_pending:
            self._schedule_pending = True
            asyncio.get_running_loop().call_soon(self._schedule)

    def _schedule(self) -> bool:
        """Start what is wanted up with its dependencies met, while state.json can record it;
        True when state.json was written after the pass (it started something)."""
        self._schedule_pending = False
        with StartBatch() as batch:  # one thread hop for the pass's spawns
            for name in [] if self._stopping_all else self.order:
                runner = self.runners[name]
                if not runner.pending_start or runner.blocked or runner.state not in STARTABLE:
                    continue
                if batch.waits_for(runner):
                    batch.flush()  # its dependency spawned in this pass: judged once started
                unmet = [
                    f"{dep} ({cond})"
                    for dep, cond in sorted(runner.spec.depends_on.items())
                    if not self.runners[dep].satisfies(cond)
                ]
                if unmet:
                    runner.hold("waiting for " + ", ".join(unmet))
                    continue
                # Never between runtime remove's check and its removal, nor into a half install;
                # tried before the state write below, which a retry every 50 ms must not repeat.
                hold = install_hold(self.tree, name, runner.spec.version, runner.spec.platform)
                if hold is None:
                    runner.hold(f"waiting: {runner.spec.version} is being installed or removed")
                    self._retry_held()
                    continue
                if not batch.started and self.recorder.error is None:
                    self.recorder.write()  # the disk must take a write before anything is spawned
                if self.recorder.error is not None:
                    hold.release()
                    self._unrecorded.add(name)
                    runner.block(f"blocked: cannot record state: {self.recorder.error}")
                    continue
                batch.add(runner, hold.release)  # held until its spawn is done
        if batch.started and self.recorder.write() is not None:
            for runner in batch.started:
                if runner.handle is not None:
                    self._unrecorded.add(runner.name)
                    runner.abandon(f"blocked: cannot record state: {self.recorder.error}")
        for runner in self.runners.values():
            runner.flush()
        return bool(batch.started)

    def _retry_held(self) -> None:
        """One timer for the starts an install lock holds back: one per pass that met them
        would each go on making the next, a retry loop more for every pass during the hold."""
        loop = asyncio.get_running_loop()
        if self._held_retry is None or self._held_retry.when() <= loop.time():
            self._held_retry = loop.call_later(INSTALL_RETRY_SECS, self.request_schedule)

    def _recorded_again(self) -> None:
        """state.json can be written again: what was blocked for it may start."""
        names, self._unrecorded = self._unrecorded, set()
        for name in names:
            runner = self.runners.get(name)
            if runner is not None and name not in self.cap.blocked:
                runner.unblock()
        self.request_schedule()

    def _snapshot(self) -> DaemonState:
        state = DaemonState(daemon_pid=os.getpid())
        for name, r in self.runners.items():
            fatal = r.state is S.FATAL
            state.services[name] = ServiceRecord(
                wanted=r.wanted,
                pid=r.handle.pid if r.handle else None,
                pgid=r.handle.pgid if r.handle else None,
                create_time=r.handle.create_time if r.handle else None,
                cgroup=r.handle.cgroup if r.handle else None,
                version=r.spec.version,
                digest=r.spec.digest,
                restarts=r.restarts,
                fatal=fatal,
                reason=r.reason if fatal else "",
                last_exit=r.last_exit,
            )
        return state

    # --- operations --------------------------------------------------------------------------

    def resolve(self, names: Sequence[str], all_: bool) -> list[str]:
        if all_ or not names:
            return list(self.order) if all_ else []
        unknown = [n for n in names if n not in self.runners]
        if unknown:
            known = ", ".join(self.order) or "none"
            raise UnknownService(f"no service {unknown[0]!r} (services: {known})")
        return list(dict.fromkeys(names))

    def _with_dependencies(self, names: Iterable[str]) -> list[str]:
        return with_dependencies(self._deps(), self.order, names)

    def _deps(self) -> dict[str, Mapping[str, str]]:
        return {n: r.spec.depends_on for n, r in self.runners.items()}

    # Each operation runs in the one order; its body (the _name) may call the others' bodies.

    async def start(self, names: Sequence[str]) -> list[ServiceStatus]:
        """Want ``names`` and their dependencies up; those over the limit are left out (the
        handlers refuse a start naming one, with ``refuse_over_limit``)."""
        return await self.operations.run("start", lambda: self._start(names))

    async def _start(self, names: Sequence[str]) -> list[ServiceStatus]:
        names = self.resolve(names, all_=False)  # a reload before this may have removed one
        for name in self._with_dependencies(names):
            if name not in self.cap.blocked:
                self.runners[name].want_up()
        self._schedule()
        return self.status(names)

    async def stop(self, names: Sequence[str], ordered: bool = False) -> list[ServiceStatus]:
        return await self.operations.run("stop", lambda: self._stop(names, ordered))

    async def _stop(
        self, names: Sequence[str], ordered: bool = False, keep_wanted: bool = False
    ) -> list[ServiceStatus]:
        names = self.resolve(names, all_=False)
        levels = dependency_levels(self._deps(), self.order, names) if ordered else [names]
        for level in levels:
            await asyncio.gather(*(self.runners[n].stop(keep_wanted=keep_wanted) for n in level))
        return self.status(names)

    async def restart(self, names: Sequence[str]) -> list[ServiceStatus]:
        async def restart() -> list[ServiceStatus]:
            await self._stop(names, ordered=True)
            return await self._start(names)

        return await self.operations.run("restart", restart)

    async def ensure(self, acquire: Callable[[], T]) -> T:
        """Acquire a binary (off the loop) in the order: a reload never sees it half done."""
        return await self.operations.run("ensure", lambda: asyncio.to_thread(acquire))

    def status(self, names: Sequence[str] = ()) -> list[ServiceStatus]:
        chosen = names or self.order
        return [self.runners[n].status() for n in chosen if n in self.runners]

    async def reload(self) -> str:
        """Re-read manifest and config; start added, stop removed, restart changed services."""
        return await self.operations.run("reload", self._reload)

    async def _reload(self) -> str:
        specs = self._load_specs()
        # Services added: the table grows once (one RCU wait), not by halves (fd_room).
        make_room(len(specs), self.log)
        order = start_order(specs)
        self.cap.reload()
        admitted_before = [n for n in self.order if n not in self.cap.blocked]
        blocked_before = set(self.cap.blocked)
        removed = [n for n in self.order if n not in specs]
        added = [n for n in order if n not in self.runners]
        changed = [
            n for n in order if n in self.runners and self.runners[n].spec.digest != specs[n].digest
        ]
        if removed:
            await self._stop(removed, ordered=True)
            for name in removed:
                await self.runners.pop(name).close()
        restart = [
            n for n in changed if self.runners[n].state in ALIVE or self.runners[n].pending_start
        ]
        if restart:
            await self._stop(restart, ordered=True)
        for name in changed:
            self.runners[name].reconfigure(specs[name])
        for name in added:
            self.runners[name] = ServiceRunner(specs[name], self)
        self.order = order
        self.runners = {n: self.runners[n] for n in order}
        newly_blocked = self._admit(keep=admitted_before)  # blocks them, with the reason
        going = [
            n
            for n in newly_blocked
            if n not in added and (self.runners[n].state in ALIVE or self.runners[n].pending_start)
        ]
        if going:  # the limit went down (a license expired or was replaced)
            await self._stop(going, ordered=True)
        for name in restart:
            if name not in self.cap.blocked:
                self.runners[name].want_up()
        for name in order:  # the limit went up: what it now admits starts as at boot
            if name in blocked_before and name not in self.cap.blocked and specs[name].autostart:
                self.runners[name].want_up()
        for name in added:
            if specs[name].autostart and name not in self.cap.blocked:
                self.runners[name].want_up()
            else:
                self.on_commit(self.runners[name])  # a new service, shown as it is
        self._schedule()
        self.recorder.write()
        summary = (
            f"added {len(added)}, removed {len(removed)}, restarted {len(restart)}, "
            f"updated {len(changed) - len(restart)}, unchanged {len(order) - len(added) - len(changed)}"
        )
        self.log.info("reload: %s", summary)
        return summary

    async def shutdown(self) -> list[ServiceStatus]:
        """Stop everything, dependents first, as the last operation (asking twice waits for
        the same one). What the operator wanted is kept in state.json (with no pids), so the
        next daemon starts what was up, leaves down what an operator stopped and fatal what
        gave up; services it has no record of start as autostart says."""
        return await self.operations.run_last("shutdown", self._shutdown)

    async def _shutdown(self) -> list[ServiceStatus]:
        self._stopping_all = True
        statuses = await self._stop(list(self.order), ordered=True, keep_wanted=True)
        self.recorder.write()
        return statuses

    async def close(self) -> None:
        """Release everything without stopping live processes (they are adopted next time)."""
        self.stats.close()
        if self._limits_task is not None:
            self._limits_task.cancel()
        self.recorder.write()
        self.recorder.close()
        for runner in self.runners.values():
            await runner.close()
        remove_if_empty(self.spool_dir, self.fifo_dir)
        await self.containment.close()
