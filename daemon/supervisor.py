"""All services of one tree: loading, dependency order, start/stop/restart, reload, adoption.

Starts follow ``depends_on``: a service wanted up waits (reason ``waiting for db (ready)``)
until each dependency satisfies its condition; asking to start a service asks for its
dependencies too. Stopping everything goes in reverse: dependents first, level by level, each
level concurrently. Reload compares definition digests and touches only what changed.

A license's ``max_services`` (community: no cap) caps how many services run: those beyond it
(``spec.admit``: start order, a service only with its dependencies, at reload the admitted ones
keep their place) are never started, their status reason says why, and a ``start`` naming one
is refused (``OverLimit``). A process of such a service found alive at boot is stopped, as one
of a service no longer configured is. Reload reads the license again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import psutil

from protocol.messages import LogEvent, LogLine, ServiceStatus, StateEvent
from runtime.errors import RunyardError
from runtime.license import COMMUNITY_LIMITS, LicenseStatus
from runtime.project import load_project
from runtime.tree import RuntimeTree

from .events import EventBus
from .fsm import ALIVE, ServiceState
from .process import adopt, stop_process
from .service import ServiceRunner
from .spec import ServiceSpec, admit, load_specs, start_order
from .state import DaemonState, ServiceRecord, load_state, save_state, state_path

__all__ = ["NotFound", "OverLimit", "Supervisor"]

S = ServiceState
#: Lines per log event at most; a client that needs more backfills with logs.tail.
MAX_LINES_PER_EVENT = 500
STATS_INTERVAL = 2.0


class NotFound(KeyError):
    """A service name the daemon does not run."""

    def __str__(self) -> str:
        return str(self.args[0])


class OverLimit(RunyardError):
    """A start asks for a service beyond the license's max_services."""


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
        #: The license in force (None: community limits); reload asks license_loader again.
        self.license = license
        self.license_loader = license_loader
        #: Services over max_services -> why they are not started.
        self.blocked: dict[str, str] = {}
        self.fifo_dir = tree.temp_dir / "fifo"
        self.runners: dict[str, ServiceRunner] = {}
        self.order: list[str] = []
        self.shutting_down = False
        self.started_at = time.time()
        self._save_pending = False
        self._schedule_pending = False
        self._clean_exit = False
        self._stats_task: asyncio.Task[None] | None = None

    # --- loading and booting -----------------------------------------------------------------

    def _load_specs(self) -> dict[str, ServiceSpec]:
        project = load_project(self.project_file)
        specs, warnings = load_specs(self.tree, project)
        for w in warnings:
            self.log.warning("%s", w)
        return specs

    # --- the license's max_services ---------------------------------------------------------

    @property
    def max_services(self) -> int | None:
        if self.license is not None:
            return self.license.max_services
        return COMMUNITY_LIMITS.get("max_services")

    @property
    def tier(self) -> str:
        return self.license.tier if self.license is not None else "community"

    def _admit(self, keep: Iterable[str] = ()) -> list[str]:
        """Decide which services may run; returns the ones newly over the limit."""
        limit = self.max_services
        deps = {n: tuple(r.spec.depends_on) for n, r in self.runners.items()}
        admitted = set(admit(self.order, deps, limit, frozenset(keep)))
        before = self.blocked
        self.blocked = {}
        for position, name in enumerate(self.order, start=1):
            if name in admitted:
                continue
            self.blocked[name] = (
                f"not started: over the {self.tier} tier's limit of {limit} services "
                f"(max_services); this is service {position} of {len(self.order)} in start order"
            )
        for name, runner in self.runners.items():
            reason = self.blocked.get(name)
            if reason is not None and runner.reason != reason:
                runner.reason = reason
                runner.invalidate()
            elif reason is None and name in before and runner.reason == before[name]:
                runner.reason = ""
                runner.invalidate()
        if self.blocked:
            first = next(iter(self.blocked))
            self.log.warning(
                "%d service(s) over the %s tier's limit of %s (max_services) are not started: %s%s",
                len(self.blocked),
                self.tier,
                limit,
                first,
                f" and {len(self.blocked) - 1} more" if len(self.blocked) > 1 else "",
            )
        return [n for n in self.blocked if n not in before]

    def over_limit(self, names: Iterable[str]) -> list[str]:
        """The services among ``names`` (dependencies included) that may not start."""
        return [n for n in self._with_dependencies(names) if n in self.blocked]

    def refuse_over_limit(self, names: Iterable[str]) -> None:
        """Raise OverLimit naming the first service of ``names`` beyond the limit."""
        over = self.over_limit(names)
        if over:
            more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
            raise OverLimit(f"{over[0]}: {self.blocked[over[0]]}{more}")

    async def boot(self) -> None:
        """Load the services, take back live processes from state.json, start what is wanted."""
        self.fifo_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.fifo_dir, 0o700)
        specs = self._load_specs()
        self.order = start_order(specs)
        self.runners = {name: ServiceRunner(specs[name], self) for name in self.order}
        self._admit()
        recorded, warning = load_state(self.tree)
        if warning:
            self.log.warning("%s", warning)
        for name, record in recorded.services.items():
            handle = None
            if record.pid and record.create_time is not None:
                handle = adopt(record.pid, record.create_time, record.pgid or record.pid)
            runner = self.runners.get(name)
            if handle is not None and (runner is None or name in self.blocked):
                # Alive but no longer configured (or over the limit): never leave an unmanaged
                # child behind.
                why = "no longer configured" if runner is None else "over the service limit"
                self.log.warning("%s: recorded pid %d is %s; stopping it", name, handle.pid, why)
                await stop_process(handle, stop_timeout=10.0)
                continue
            if runner is None or name in self.blocked:
                continue
            runner.restarts = record.restarts
            if handle is not None:
                self.log.info("%s: adopted pid %d", name, handle.pid)
                runner.adopt(handle)
            elif record.wanted == "up":
                runner.request_start()
        for name in self.order:
            runner = self.runners[name]
            if name not in recorded.services and runner.spec.autostart and name not in self.blocked:
                runner.request_start()
        self._schedule()
        self._save_now()
        self._stats_task = asyncio.get_running_loop().create_task(self._sample_stats())

    # --- change notification -----------------------------------------------------------------

    def on_change(self, runner: ServiceRunner) -> None:
        runner.invalidate()
        status = runner.status()
        self.bus.publish(
            f"state.{runner.name}",
            lambda seq, ts: StateEvent(
                topic=f"state.{runner.name}", seq=seq, ts=ts, service=status
            ),
        )
        self._request_save()
        self._request_schedule()

    def on_log(self, runner: ServiceRunner, lines: list[LogLine]) -> None:
        if not lines:
            return
        topic = f"log.{runner.name}"
        sent = lines[-MAX_LINES_PER_EVENT:]
        self.bus.publish_lines(
            topic,
            lines[-1].seq,
            lambda seq, ts: LogEvent(topic=topic, seq=seq, ts=ts, service=runner.name, lines=sent),
        )

    def _request_schedule(self) -> None:
        if not self._schedule_pending:
            self._schedule_pending = True
            asyncio.get_running_loop().call_soon(self._schedule)

    def _schedule(self) -> None:
        """Start every service that is wanted up and whose dependencies are satisfied."""
        self._schedule_pending = False
        if self.shutting_down:
            return
        for name in self.order:
            runner = self.runners.get(name)
            if runner is None or not runner.pending_start or runner.wanted != "up":
                continue
            unmet = [
                f"{dep} ({cond})"
                for dep, cond in sorted(runner.spec.depends_on.items())
                if not self.runners[dep].satisfies(cond)
            ]
            if unmet:
                reason = "waiting for " + ", ".join(unmet)
                if runner.reason != reason:
                    runner.reason = reason
                    self.on_change(runner)
                continue
            runner.start_now()

    def _request_save(self) -> None:
        if not self._save_pending:
            self._save_pending = True
            asyncio.get_running_loop().call_soon(self._save_now)

    def _save_now(self) -> None:
        self._save_pending = False
        if self._clean_exit:
            return
        state = DaemonState(daemon_pid=os.getpid())
        for name, r in self.runners.items():
            state.services[name] = ServiceRecord(
                wanted=r.wanted,
                pid=r.handle.pid if r.handle else None,
                pgid=r.handle.pgid if r.handle else None,
                create_time=r.handle.create_time if r.handle else None,
                version=r.spec.version,
                digest=r.spec.digest,
                restarts=r.restarts,
            )
        try:
            save_state(self.tree, state)
        except OSError as exc:
            self.log.error("cannot write state.json: %s", exc)

    # --- operations --------------------------------------------------------------------------

    def resolve(self, names: Sequence[str], all_: bool) -> list[str]:
        if all_ or not names:
            return list(self.order) if all_ else []
        unknown = [n for n in names if n not in self.runners]
        if unknown:
            known = ", ".join(self.order) or "none"
            raise NotFound(f"no service {unknown[0]!r} (services: {known})")
        return list(dict.fromkeys(names))

    def _with_dependencies(self, names: Iterable[str]) -> list[str]:
        wanted: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name in wanted:
                continue
            wanted.add(name)
            stack.extend(self.runners[name].spec.depends_on)
        return [n for n in self.order if n in wanted]

    def start(self, names: Sequence[str]) -> list[ServiceStatus]:
        """Want ``names`` and their dependencies up; those over the limit are left out (the
        handlers refuse a start naming one, with ``refuse_over_limit``)."""
        for name in self._with_dependencies(names):
            if name not in self.blocked:
                self.runners[name].request_start()
        self._schedule()
        return self.status(names)

    def _levels(self, names: Iterable[str]) -> list[list[str]]:
        """``names`` grouped by dependency depth, deepest (most dependent) first."""
        depth: dict[str, int] = {}
        for name in self.order:  # dependencies come first in order
            if name not in self.runners:
                continue
            deps = self.runners[name].spec.depends_on
            depth[name] = 1 + max((depth[d] for d in deps if d in depth), default=-1)
        chosen = set(names)
        levels: dict[int, list[str]] = {}
        for name in depth:
            if name in chosen:
                levels.setdefault(depth[name], []).append(name)
        return [levels[d] for d in sorted(levels, reverse=True)]

    async def stop(self, names: Sequence[str], ordered: bool = False) -> list[ServiceStatus]:
        if ordered:
            for level in self._levels(names):
                await asyncio.gather(*(self.runners[n].stop() for n in level))
        else:
            await asyncio.gather(*(self.runners[n].stop() for n in names))
        return self.status(names)

    async def restart(self, names: Sequence[str]) -> list[ServiceStatus]:
        await self.stop(names, ordered=True)
        return self.start(names)

    def status(self, names: Sequence[str] = ()) -> list[ServiceStatus]:
        chosen = names or self.order
        return [self.runners[n].status() for n in chosen if n in self.runners]

    def _reload_license(self) -> None:
        if self.license_loader is None:
            return
        try:
            new = self.license_loader()
        except Exception as exc:  # a license problem never breaks a reload
            self.log.error("license: cannot read it again: %s; keeping the current one", exc)
            return
        old = self.license
        if old is None or (new.status, new.tier, dict(new.limits)) != (
            old.status,
            old.tier,
            dict(old.limits),
        ):
            log = self.log.info if new.ok else self.log.warning
            log("%s", new.summary())
        self.license = new

    async def reload(self) -> str:
        """Re-read manifest and config; start added, stop removed, restart changed services."""
        specs = self._load_specs()
        order = start_order(specs)
        self._reload_license()
        admitted_before = [n for n in self.order if n not in self.blocked]
        blocked_before = set(self.blocked)
        removed = [n for n in self.order if n not in specs]
        added = [n for n in order if n not in self.runners]
        changed = [
            n for n in order if n in self.runners and self.runners[n].spec.digest != specs[n].digest
        ]
        if removed:
            await self.stop(removed, ordered=True)
            for name in removed:
                await self.runners.pop(name).close()
        restart = [
            n for n in changed if self.runners[n].state in ALIVE or self.runners[n].pending_start
        ]
        if restart:
            await self.stop(restart, ordered=True)
        for name in changed:
            self.runners[name].spec = specs[name]
            self.on_change(self.runners[name])
        for name in added:
            self.runners[name] = ServiceRunner(specs[name], self)
        self.order = order
        self.runners = {n: self.runners[n] for n in order}
        newly_blocked = self._admit(keep=admitted_before)
        going = [
            n
            for n in newly_blocked
            if n not in added and (self.runners[n].state in ALIVE or self.runners[n].pending_start)
        ]
        if going:  # the limit went down (a license expired or was replaced)
            await self.stop(going, ordered=True)
            for name in going:
                self.runners[name].reason = self.blocked[name]
                self.on_change(self.runners[name])
        for name in restart:
            if name not in self.blocked:
                self.runners[name].request_start()
        for name in order:  # the limit went up: what it now admits starts as at boot
            if name in blocked_before and name not in self.blocked and specs[name].autostart:
                self.runners[name].request_start()
        for name in added:
            if specs[name].autostart and name not in self.blocked:
                self.runners[name].request_start()
            else:
                self.on_change(self.runners[name])
        self._schedule()
        self._save_now()
        summary = (
            f"added {len(added)}, removed {len(removed)}, restarted {len(restart)}, "
            f"updated {len(changed) - len(restart)}, unchanged {len(order) - len(added) - len(changed)}"
        )
        self.log.info("reload: %s", summary)
        return summary

    async def shutdown(self) -> list[ServiceStatus]:
        """Stop everything, dependents first. The state file goes: after a clean shutdown the
        next daemon starts fresh (autostart), as it would after a reboot."""
        self.shutting_down = True
        statuses = await self.stop(list(self.order), ordered=True)
        self._clean_exit = True
        state_path(self.tree).unlink(missing_ok=True)
        return statuses

    async def close(self) -> None:
        """Release everything without stopping live processes (they are adopted next time)."""
        if self._stats_task is not None:
            self._stats_task.cancel()
        self._save_now()
        for runner in self.runners.values():
            await runner.close()

    # --- background sampling -----------------------------------------------------------------

    async def _sample_stats(self) -> None:
        """CPU% and RSS per service, sampled here so a status request never waits on psutil."""
        procs: dict[int, psutil.Process] = {}
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            live = set()
            for runner in self.runners.values():
                handle = runner.handle
                if handle is None:
                    if runner.cpu_percent is not None or runner.rss is not None:
                        runner.cpu_percent = runner.rss = None
                        runner.invalidate()
                    continue
                live.add(handle.pid)
                try:
                    proc = procs.get(handle.pid)
                    if proc is None:
                        proc = procs[handle.pid] = psutil.Process(handle.pid)
                        proc.cpu_percent(None)  # the first call only primes the counter
                        continue
                    with proc.oneshot():
                        runner.cpu_percent = proc.cpu_percent(None)
                        runner.rss = proc.memory_info().rss
                    runner.invalidate()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    procs.pop(handle.pid, None)
            for pid in [p for p in procs if p not in live]:
                procs.pop(pid)
