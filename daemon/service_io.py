"""``ServiceIO``: what runs beside one service's process: its captured output and its probe.

The runner (daemon/service.py) decides; this carries. A service's FIFOs and log (``LogPipes``,
``ServiceLog``) live as long as its runner, across processes: a line written before a restart
stays in the file, the ring and the spool. A reader and, if the spec has one, a readiness probe
live as long as one process: started by ``attach``, ended by ``detach``, which first drains what
the process wrote, so its last lines are kept before its exit is reported.

Readiness (``ready``, ``ready_detail``) is a fact about the current process, not a transition:
it is set here and the runner is told (``on_ready``), which announces it with its one commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from runyard.protocol.messages import LogLine

from .logs import LogPipes, LogReader, ServiceLog
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
        on_lines: Callable[[list[LogLine]], None],
        on_ready: Callable[[], None],
    ) -> None:
        self.pipes = LogPipes(fifo_dir, spec.name)
        self.log = ServiceLog(
            spec.name,
            logs_dir,
            max_bytes=spec.log_max_bytes,
            backups=spec.log_backups,
            mode=spec.log_mode,
            spool_dir=fifo_dir,
            owner=_owner(spec),
        )
        self.ready: bool | None = None
        self.ready_detail = ""
        self._on_lines = on_lines
        self._on_ready = on_ready
        self._reader: LogReader | None = None
        self._monitor: ReadinessMonitor | None = None

    def attach(self, spec: ServiceSpec) -> None:
        """A process runs (spawned, or adopted): read its output, probe it if the spec says so."""
        self._reader = LogReader()
        self._reader.attach(asyncio.get_running_loop(), self.pipes, self.log, self._lines)
        if spec.readiness is not None:
            self.ready = False
            self.ready_detail = "waiting for the first probe"
            self._monitor = self._new_monitor(spec)

    async def detach(self, spec: ServiceSpec) -> None:
        """The process exited: keep what it wrote, stop probing it."""
        if self._reader is not None:
            # The last lines a process wrote are kept: drain before reporting the exit.
            await self._reader.drain(timeout=DRAIN_TIMEOUT)
            self._reader.detach()
            self._reader = None
            self.log.flush()
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
        self.ready = None if spec.readiness is None else False

    def reconfigure(self, old: ServiceSpec, new: ServiceSpec) -> None:
        """A reload's new definition: the log file's limits at once, the readiness probe now if
        one runs and it changed (else with the next process)."""
        self.log.set_limits(max_bytes=new.log_max_bytes, backups=new.log_backups, mode=new.log_mode)
        if _owner(new) != _owner(old):
            self.log.file.set_owner(_owner(new))
        if self._monitor is not None and new.readiness != old.readiness:
            asyncio.get_running_loop().create_task(self._replace_monitor(new))

    async def close(self) -> None:
        """Release everything without touching a live process (daemon exit)."""
        if self._reader is not None:
            self._reader.detach()
            self._reader = None
        if self._monitor is not None:
            await self._monitor.stop()
            self._monitor = None
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
        self._on_ready()

    def _lines(self, lines: list[LogLine]) -> None:
        if self._monitor is not None and lines:
            self._monitor.feed_log([line.line for line in lines])
        self._on_lines(lines)


def _owner(spec: ServiceSpec) -> tuple[int, int] | None:
    """Who the service's log files belong to: the user and group it runs as."""
    return None if spec.run_as is None else (spec.run_as.uid, spec.run_as.gid)
