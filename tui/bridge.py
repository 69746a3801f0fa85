"""The one worker that talks to the daemon: it owns the AsyncClient and turns what the daemon says
into Textual messages posted to the app.

    daemon --events/status--> Bridge.run() --Connected / ServiceChanged / StatusRefreshed /
                                               LogLines / DiskUpdated / RunChanged /
                                               Disconnected--> App

The loop connects, takes the stream's snapshot (``Connected``), then forwards events. A status
request every ``REFRESH`` seconds refreshes CPU/RSS/uptime and doubles as the liveness check: a
SUB socket never notices a dead publisher, a request does. Any failure closes the client, posts
``Disconnected`` and retries after ``RETRY`` seconds; a reconnect starts again from a snapshot.
The topics change (a logs screen opens or closes) by reopening the stream.

Logs: one service's (topic ``log.<svc>``) or every service's (``ALL_LOGS``: the prefix ``log.``,
which the daemon's XPUB matches like any other prefix), with the last line seen per service so a
reconnect asks only for what is missing. Whatever log events are already waiting on the socket
are drained and posted as one ``LogLines``: a flood of events becomes one message per loop turn,
so key presses are never queued behind thousands of log messages.

Disk usage comes from ``du`` events (the daemon watches the tree; the TUI never walks the disk);
they have no backfill, so each connection asks for one ``du`` report first. Runs come from the
``runs.*`` / ``verify`` / ``replay`` requests; ``run.<id>`` events only say "something changed".
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Protocol

from textual.message import Message

from runyard.protocol.client import AsyncClient, AsyncEventStream, ClientError, NotFound
from runyard.protocol.messages import (
    ActionReply,
    DaemonEvent,
    DuEvent,
    Event,
    LogEvent,
    LogLine,
    RunEvent,
    RunShowReply,
    ServiceStatus,
    StateEvent,
    StatusReply,
)
from runyard.protocol.payloads import Binary, DiskReport, ReplayReport, RunSummary, VerifyReport

__all__ = ["ACTIONS", "ALL_LOGS", "Bridge", "BridgeTarget"]

log = logging.getLogger(__name__)

#: Seconds between status refreshes (CPU, RSS, uptime; the liveness check too).
REFRESH = 2.0
#: Seconds between connection attempts while the daemon is unreachable.
RETRY = 1.0
#: Seconds a request may take before the daemon counts as unreachable.
TIMEOUT = 2.0
#: Lines asked for when a logs screen opens.
TAIL_LINES = 1000
#: Seconds the one ``du`` request of a connection may take (it may scan the tree).
DU_TIMEOUT = 15.0
#: Seconds a verify may take; a replay re-executes the engine and may take longer.
VERIFY_TIMEOUT = 120.0
REPLAY_TIMEOUT = 600.0
#: Seconds an ensure may take (it may download and extract an archive).
ENSURE_TIMEOUT = 300.0
#: The actions the app may ask for, by client method name.
ACTIONS = ("start", "stop", "restart", "reload")
#: The log "service" standing for every service's log, interleaved (no service has this name).
ALL_LOGS = "*"
#: The stderr lines a service's details show, found among its last STDERR_SCAN lines.
STDERR_LINES = 20
STDERR_SCAN = 1000
#: The most events drained into one LogLines message before it is posted.
DRAIN_EVENTS = 200


class BridgeTarget(Protocol):
    def post_message(self, message: Message) -> bool: ...


class Bridge:
    """Owns the AsyncClient for the app's whole life; ``run()`` is the worker's coroutine."""

    class Connected(Message):
        """A (re)connection: the full state, to replace whatever the app showed."""

        def __init__(self, snapshot: StatusReply) -> None:
            super().__init__()
            self.snapshot = snapshot

    class Disconnected(Message):
        def __init__(self, reason: str) -> None:
            super().__init__()
            self.reason = reason

    class ServiceChanged(Message):
        def __init__(self, service: ServiceStatus) -> None:
            super().__init__()
            self.service = service

    class StatusRefreshed(Message):
        def __init__(self, services: list[ServiceStatus]) -> None:
            super().__init__()
            self.services = services

    class LogLines(Message):
        """Lines for the logs view of ``service`` (a name, or ALL_LOGS), oldest first.

        ``sources`` names the service of each line (None: all are ``service``'s); ``reset``:
        drop what was shown before."""

        def __init__(
            self,
            service: str,
            lines: list[LogLine],
            reset: bool = False,
            sources: list[str] | None = None,
        ) -> None:
            super().__init__()
            self.service = service
            self.lines = lines
            self.reset = reset
            self.sources = sources

    class DiskUpdated(Message):
        """The daemon's disk report (services, other, total)."""

        def __init__(self, report: DiskReport) -> None:
            super().__init__()
            self.report = report

    class RunChanged(Message):
        """A step of a run (started, sealed, rejected, replay_started, replayed)."""

        def __init__(self, run_id: str, engine: str, kind: str) -> None:
            super().__init__()
            self.run_id = run_id
            self.engine = engine
            self.kind = kind

    class DaemonNotice(Message):
        def __init__(self, kind: str, message: str) -> None:
            super().__init__()
            self.kind = kind
            self.message = message

    def __init__(self, root: Path, target: BridgeTarget) -> None:
        self.root = root
        self.target = target
        self.client: AsyncClient | None = None
        self._log_service: str | None = None
        #: The last log line seq seen per service, for the logs being followed, numbered by the
        #: daemon of ``_log_epoch``; ``_log_shown``: the open view has had its first lines.
        self._log_seqs: dict[str, int] = {}
        self._log_epoch = 0.0
        self._log_shown = False
        #: Log lines (and, for ALL_LOGS, their services) drained but not yet posted.
        self._batch_lines: list[LogLine] = []
        self._batch_sources: list[str] = []
        self._retopic = asyncio.Event()
        self._stopping = False

    # --- what the app asks for -----------------------------------------------------------------

    def follow_logs(self, service: str | None) -> None:
        """Subscribe to ``service``'s log (ALL_LOGS: every service's; None: no log); the stream
        reopens with it."""
        if service != self._log_service:
            self._log_service = service
            self._log_seqs = {}
            self._log_shown = False
            self._batch_lines, self._batch_sources = [], []
            self._retopic.set()

    async def action(self, name: str, services: list[str]) -> ActionReply:
        """Run ``name`` (one of ACTIONS) on ``services``; raises ClientError when it cannot."""
        if name not in ACTIONS:
            raise ValueError(f"unknown action {name!r}")
        client = self.client
        if client is None:
            raise ClientError("daemon unreachable")
        if name == "reload":
            return await client.reload()
        method = getattr(client, name)
        return await method(services)

    def _client(self) -> AsyncClient:
        client = self.client
        if client is None:
            raise ClientError("daemon unreachable")
        return client

    async def runs_list(self) -> list[RunSummary]:
        """Sealed and rejected runs of every engine, oldest first."""
        return list((await self._client().runs_list(include_rejected=True)).runs)

    async def runs_show(self, run_id: str) -> RunShowReply:
        """One run (summary and documents) and its run directory's ARTIFACT_INDEX entries ([] from an
        older daemon)."""
        return await self._client().runs_show(run_id)

    async def verify(self, run_id: str) -> VerifyReport:
        reply = await self._client().verify(run_id, timeout=VERIFY_TIMEOUT)
        return reply.report

    async def replay(self, run_id: str) -> ReplayReport:
        reply = await self._client().replay(
            run_id, run_timeout=REPLAY_TIMEOUT, timeout=REPLAY_TIMEOUT + 30
        )
        return reply.report

    async def ensure(
        self, name: str, version_spec: str = "latest", catalog: str | None = None
    ) -> Binary:
        """Install ``name`` at ``version_spec`` unless the tree has it (``installed`` False:
        it was already installed); ``catalog`` None: the one the tree used last."""
        reply = await self._client().ensure(
            name, version_spec, catalog=catalog, timeout=ENSURE_TIMEOUT
        )
        return reply.binary

    async def stderr_tail(self, service: str, n: int = STDERR_LINES) -> list[LogLine]:
        """The last ``n`` stderr lines of ``service`` among its last STDERR_SCAN lines."""
        reply = await self._client().logs_tail(service, n=STDERR_SCAN)
        return [line for line in reply.lines if line.stream in ("err", "stderr")][-n:]

    def stop(self) -> None:
        self._stopping = True
        self._retopic.set()

    # --- the worker ----------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ClientError as exc:
                self.target.post_message(self.Disconnected(str(exc)))
            except Exception as exc:  # never let the TUI die with the connection
                log.exception("bridge session failed")
                self.target.post_message(self.Disconnected(f"{type(exc).__name__}: {exc}"))
            if not self._stopping:
                await asyncio.sleep(RETRY)

    async def _session(self) -> None:
        client = AsyncClient(self.root, timeout=TIMEOUT, client_name="runyard-tui")
        try:
            self.client = client
            first = True
            while not self._stopping:
                self._retopic.clear()
                topics = ["state.", "daemon", "du", "run."]
                service = self._log_service
                if service is not None:
                    topics.append("log." if service == ALL_LOGS else f"log.{service}")
                stream = await client.events(topics)
                try:
                    if first:
                        self.target.post_message(self.Connected(stream.snapshot))
                        first = False
                        await self._disk_now(client)
                    epoch = stream.snapshot.epoch
                    if epoch and epoch != self._log_epoch:
                        # Another daemon numbers lines from 1 again: ask for its whole tail,
                        # which comes from the log files too, and show it instead (not twice).
                        self._log_seqs = {}
                        self._log_shown = self._log_shown and not self._log_epoch
                        self._log_epoch = epoch
                    if service == ALL_LOGS:
                        names = [s.name for s in stream.snapshot.services]
                        await self._catch_up_all(client, names)
                    elif service is not None:
                        await self._catch_up(client, service)
                    await self._pump(client, stream)
                finally:
                    stream.close()
        finally:
            self.client = None
            await client.close()

    async def _disk_now(self, client: AsyncClient) -> None:
        """One report on connect: du events have no backfill and the daemon's first one is
        long gone. A failure here is no reason to drop the session: the events will come."""
        try:
            reply = await client.du(timeout=DU_TIMEOUT)
        except ClientError as exc:
            log.warning("du request failed: %s", exc)
            return
        self.target.post_message(self.DiskUpdated(reply.report))

    async def _tail(self, client: AsyncClient, service: str) -> list[LogLine]:
        """The lines of ``service`` not seen yet; NotFound passes on."""
        last = self._log_seqs.get(service)
        reply = await client.logs_tail(service, n=TAIL_LINES, after_seq=last)
        if last is not None and reply.last_seq < last:  # renumbered (a daemon with no epoch)
            reply = await client.logs_tail(service, n=TAIL_LINES)
        self._log_seqs[service] = reply.last_seq
        return list(reply.lines)

    async def _catch_up(self, client: AsyncClient, service: str) -> None:
        """Lines the screen has not seen: a tail when it opens, the rest after a reconnect."""
        try:
            lines = await self._tail(client, service)
        except NotFound:  # gone after a reload: show nothing rather than fail the session
            lines = []
        self.target.post_message(self.LogLines(service, lines, reset=not self._log_shown))
        self._log_shown = True

    async def _catch_up_all(self, client: AsyncClient, services: list[str]) -> None:
        """Every service's unseen lines, merged by time: one batch for the interleaved view."""
        merged: list[tuple[float, int, str, LogLine]] = []
        order = 0
        for service in services:
            try:
                lines = await self._tail(client, service)
            except NotFound:  # gone between the snapshot and now
                continue
            for line in lines:
                merged.append((line.ts, order, service, line))
                order += 1
        merged.sort(key=lambda item: (item[0], item[1]))
        self.target.post_message(
            self.LogLines(
                ALL_LOGS,
                [item[3] for item in merged],
                reset=not self._log_shown,
                sources=[item[2] for item in merged],
            )
        )
        self._log_shown = True

    async def _pump(self, client: AsyncClient, stream: AsyncEventStream) -> None:
        next_refresh = time.monotonic() + REFRESH
        while not self._stopping and not self._retopic.is_set():
            wait = max(0.0, min(next_refresh - time.monotonic(), 0.25))
            event = await stream.get(timeout=wait)
            drained = 0
            while event is not None:
                self._forward(event)
                drained += 1
                # Take what is already waiting (no wait) into the same LogLines batch.
                event = await stream.get(timeout=0) if drained < DRAIN_EVENTS else None
            self._post_log_batch()
            if time.monotonic() >= next_refresh:
                reply = await client.status()
                self.target.post_message(self.StatusRefreshed(list(reply.services)))
                next_refresh = time.monotonic() + REFRESH

    def _forward(self, event: Event) -> None:
        """Post what ``event`` means to the app; log lines wait in a batch (_post_log_batch)."""
        match event:
            case StateEvent(service=service):
                self.target.post_message(self.ServiceChanged(service))
            case LogEvent(service=service, lines=lines) if self._log_service in (
                service,
                ALL_LOGS,
            ):
                last = self._log_seqs.get(service, 0)
                fresh = (
                    lines if lines and lines[0].seq > last else [x for x in lines if x.seq > last]
                )
                if fresh:
                    self._log_seqs[service] = fresh[-1].seq
                    self._batch_lines.extend(fresh)
                    if self._log_service == ALL_LOGS:
                        self._batch_sources.extend([service] * len(fresh))
            case DaemonEvent(kind=kind, message=message):
                self.target.post_message(self.DaemonNotice(kind, message))
            case DuEvent(report=report):
                self.target.post_message(self.DiskUpdated(report))
            case RunEvent(run_id=run_id, engine=engine, kind=kind):
                self.target.post_message(self.RunChanged(run_id, engine, kind))
            case _:
                pass

    def _post_log_batch(self) -> None:
        view = self._log_service
        if not self._batch_lines or view is None:
            self._batch_lines, self._batch_sources = [], []
            return
        lines, self._batch_lines = self._batch_lines, []
        sources, self._batch_sources = self._batch_sources, []
        self.target.post_message(
            self.LogLines(view, lines, sources=sources if view == ALL_LOGS else None)
        )
