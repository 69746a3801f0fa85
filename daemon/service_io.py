"""``ServiceIO``: what runs beside one service's process: its captured output and its probe.

The runner (daemon/service.py) decides; this carries. A service's FIFOs and log (``LogPipes``,
``ServiceLog``) live as long as its runner, across processes: a line written before a restart
stays in the file, the ring and the spool. A reader and, if the spec has one, a readiness probe
live as long as one process: started by ``attach``, ended by ``detach``, which first drains what
the process wrote, so its last lines are kept before its exit is reported.

Readiness (``ready``, ``ready_detail``) is a fact about the current process, not a transition:
it is set here and the runner is told (``on_ready``), which announces it with its one commit.

Liveness (``live``, ``live_detail``) is carried the same way: a monitor per process, started by
``attach`` and stopped by ``detach`` (so no probe outlives its process); each result is only
shown (``on_live``), and the one verdict that matters, ``on_dead(reason)``, goes to the runner,
which ends the process through its own path. The last result stays shown after the process.

A ``notify`` service also has its sd_notify socket here (daemon/notify.py): bound for good
before its first spawn, read while a process is attached; READY=1 sets ``ready`` when no probe
is configured, STATUS= sets ``notify_status``, a watchdog that expires calls ``on_dead`` (the runner's ``fail``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from runyard.protocol.messages import LogLine

from .liveness import LivenessMonitor
from .logs import LogPipes, LogReader, ServiceLog
from .notify import NotifyChannel, NotifyMonitor, watchdog_argv
from .process import ProcessHandle, SpawnError
from .readiness import ReadinessMonitor, resolve_port
from .spec import ServiceSpec

__all__ = ["ServiceIO"]

#: How long ``detach`` reads what an exited process left in its pipes (a grandchild may write on).
DRAIN_TIMEOUT = 2.0


class ServiceIO:
    """One service's log capture and readiness probe; ``spec`` is read at each call, so a
    reload's new definition applies from the next ``attach`` (or ``reconfigure``)."""

    def __init__(
        self,
        spec: ServiceSpec,
        logs_dir: Path,
        fifo_dir: Path,
        on_lines: Callable[[Sequence[LogLine]], None],
        on_ready: Callable[[], None],
        on_live: Callable[[], None] = lambda: None,
        on_dead: Callable[[str], None] = lambda reason: None,
        *,
        notify_address: str = "",
        spool_dir: Path | None = None,
    ) -> None:
        self.pipes = LogPipes(fifo_dir, spec.name)
        self.log = ServiceLog(
            spec.name,
            logs_dir,
            max_bytes=spec.log_max_bytes,
            backups=spec.log_backups,
            mode=spec.log_mode,
            spool_dir=spool_dir or fifo_dir,
            owner=_owner(spec),
            old_spool_dir=fifo_dir,
        )
        self.ready: bool | None = None
        self.ready_detail = ""
        self._on_lines = on_lines
        self._on_ready = on_ready
        self._reader: LogReader | None = None
        self._monitor: ReadinessMonitor | None = None
        self.live: bool | None = None
        self.live_detail = ""
        self._on_live = on_live
        self._on_dead = on_dead
        self._liveness: LivenessMonitor | None = None
        self._attached_at = 0.0  # monotonic start of the current process
        #: sd_notify: the socket (for good), what the current process said, its STATUS= text.
        self.notify = NotifyChannel(notify_address) if notify_address else None
        self.notify_status = ""
        self._notified: NotifyMonitor | None = None

    def launch(self, spec: ServiceSpec) -> tuple[list[str], dict[str, str]]:
        """argv and env of the next spawn: with NOTIFY_SOCKET (bound now, so a program that
        speaks at once is heard) and the WATCHDOG_* variables when the spec asks for them."""
        argv, env = list(spec.argv), dict(spec.env)
        if not spec.notify or self.notify is None:
            return argv, env
        try:
            self.notify.bind()
        except OSError as exc:
            raise SpawnError(
                f"cannot bind the notify socket {self.notify.address}: {exc}"
            ) from None
        env["NOTIFY_SOCKET"] = self.notify.address
        if spec.watchdog_sec > 0:
            env["WATCHDOG_USEC"] = str(round(spec.watchdog_sec * 1e6))
            argv = watchdog_argv(argv)
        return argv, env

    def attach(
        self, spec: ServiceSpec, age: float = 0.0, handle: ProcessHandle | None = None
    ) -> None:
        """A process runs (spawned, or adopted ``age`` seconds after its start): read its
        output, probe it if the spec says so."""
        self._attached_at = time.monotonic() - max(0.0, age)
        if spec.liveness is not None:
            self._liveness = self._new_liveness(spec)
        else:
            self.live, self.live_detail = None, ""
        self._reader = LogReader()
        self._reader.attach(asyncio.get_running_loop(), self.pipes, self.log, self._lines)
        if spec.readiness is not None:
            self.ready = False
            self.ready_detail = "waiting for the first probe"
            self._monitor = self._new_monitor(spec)
        if spec.notify and self.notify is not None and handle is not None:
            self._attach_notify(spec, handle)

    def _attach_notify(self, spec: ServiceSpec, handle: ProcessHandle) -> None:
        # A re-adopted process sent READY=1 to the previous daemon (if ever): trusted to have.
        adopted = not handle.own_child
        self.notify_status = ""
        if spec.notify_ready:
            self.ready = adopted
            self.ready_detail = "adopted; READY=1 assumed" if adopted else "waiting for READY=1"
        self._notified = NotifyMonitor(
            self.notify,
            handle,
            watchdog_sec=spec.watchdog_sec,
            assume_ready=adopted,
            on_change=self._probed if spec.notify_ready else lambda ready, detail: None,
            on_status=self._status_said,
            on_fail=self._on_dead,
        )
        self._notified.start()

    async def detach(self, spec: ServiceSpec) -> None:
        """The process exited: keep what it wrote, stop probing it."""
        reader = self._reader
        if reader is not None:
            # The last lines a process wrote are kept: drain before reporting the exit.
            await reader.drain(timeout=DRAIN_TIMEOUT)
            reader.detach()
            if self._reader is reader:  # else close() (daemon exit) ran in the drain's await
                self._reader = None
                self.log.flush()
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
        if self._notified is not None:
            self._notified.stop()
            self._notified = None
        await self._stop_liveness()
        self.ready = None if not spec.has_readiness else False

    def reconfigure(self, old: ServiceSpec, new: ServiceSpec) -> None:
        """A reload's new definition: the log file's limits at once, the readiness probe now if
        one runs and it changed (else with the next process)."""
        self.log.set_limits(max_bytes=new.log_max_bytes, backups=new.log_backups, mode=new.log_mode)
        if _owner(new) != _owner(old):
            self.log.file.set_owner(_owner(new))
        if self._monitor is not None and new.readiness != old.readiness:
            asyncio.get_running_loop().create_task(self._replace_monitor(new))
        if self._reader is not None and new.liveness != old.liveness:
            asyncio.get_running_loop().create_task(self._replace_liveness(new))

    async def close(self) -> None:
        """Release everything without touching a live process (daemon exit)."""
        if self._reader is not None:
            self._reader.detach()
            self._reader = None
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
        if self._notified is not None:
            self._notified.stop()
            self._notified = None
        if self.notify is not None:
            self.notify.close()
        await self._stop_liveness()
        self.log.close()
        self.pipes.close()

    def _new_monitor(self, spec: ServiceSpec) -> ReadinessMonitor:
        assert spec.readiness is not None
        monitor = ReadinessMonitor(
            spec.readiness,
            port=resolve_port(spec.readiness, spec.port_map),
            env=spec.env,
            cwd=spec.cwd,
            on_change=self._probed,
        )
        monitor.start()
        return monitor

    async def _replace_monitor(self, spec: ServiceSpec) -> None:
        old, self._monitor = self._monitor, None
        if old is not None:
            await old.stop()
        if self._reader is not None and spec.readiness is not None:
            self.ready, self.ready_detail = False, "waiting for the first probe"
            self._monitor = self._new_monitor(spec)
        else:
            self.ready, self.ready_detail = None, ""
        self._on_ready()

    def _probed(self, ready: bool, detail: str) -> None:
        self.ready = ready
        self.ready_detail = detail
        if ready and self._liveness is not None:
            self._liveness.arm()  # shown to be up: liveness failures count from now
        self._on_ready()

    def _status_said(self) -> None:
        if self._notified is not None:
            self.notify_status = self._notified.status
        self._on_ready()

    # --- liveness ---

    def _new_liveness(self, spec: ServiceSpec) -> LivenessMonitor:
        assert spec.liveness is not None
        self.live, self.live_detail = None, "not probed yet"
        age = time.monotonic() - self._attached_at
        monitor = LivenessMonitor(
            spec.liveness,
            port=resolve_port(spec.liveness, spec.port_map),
            env=spec.env,
            cwd=spec.cwd,
            grace=spec.liveness.start_period - age,
            on_result=self._live_result,
            on_dead=self._on_dead,
        )
        monitor.start()
        return monitor

    async def _stop_liveness(self) -> None:
        monitor, self._liveness = self._liveness, None
        if monitor is not None:
            await monitor.stop()

    async def _replace_liveness(self, spec: ServiceSpec) -> None:
        await self._stop_liveness()
        if self._reader is not None and spec.liveness is not None:
            self._liveness = self._new_liveness(spec)
        elif spec.liveness is None:
            self.live, self.live_detail = None, ""
        self._on_live()

    def _live_result(self, ok: bool, detail: str) -> None:
        self.live, self.live_detail = ok, detail
        self._on_live()

    def _lines(self, lines: Sequence[LogLine]) -> None:
        if self._monitor is not None and lines:
            self._monitor.feed_log([line.line for line in lines])
        self._on_lines(lines)


def _owner(spec: ServiceSpec) -> tuple[int, int] | None:
    """Who the service's log files belong to: the user and group it runs as."""
    return None if spec.run_as is None else (spec.run_as.uid, spec.run_as.gid)
