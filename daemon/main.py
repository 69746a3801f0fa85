"""The daemon process: one per tree (flock in temp/), the control server, the supervisor.

Signals: SIGTERM / SIGINT stop every service and exit; SIGHUP reloads. Both go through the
supervisor's one order of operations, like the requests that do the same. ``kill -9`` leaves the
services running on purpose: their pid, pgid and start time are in temp/state.json, their
output waits in FIFOs whose read ends the children themselves keep open, and the next daemon
adopts them (see docs/ARCHITECTURE.md, "Surviving a daemon crash").

Before anything else the daemon runs the startup checks of ``runyard doctor``
(runtime/ops/doctor.py): a fatal one (manifest invalid, a checksum mismatch, data/ or logs/ not
writable, temp/ not ours) stops it with one line naming the check; the others are logged.
The license is checked there too: an expired, forged or malformed one is one log line and
community limits. Start, stop, signals and every audited request go to the audit trail.

The process calls itself ``runyard daemon ROOT`` (``setproctitle``), so ps and top say what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import setproctitle

from runyard.protocol.endpoints import endpoints_for
from runyard.protocol.messages import DaemonEvent
from runyard.runtime.config.project import Project, load_project
from runyard.runtime.core.errors import DaemonRunning, InvariantBroken, RunyardError
from runyard.runtime.core.locking import FileLock, LockBusy
from runyard.runtime.core.manifest import RuntimeManifest, init_tree
from runyard.runtime.core.own_version import runyard_version
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.doctor import DoctorReport, StartupCheckFailed, run_checks
from runyard.runtime.ops.license import LicenseStatus, tree_license

from .events import EventBus
from .fd_room import make_room, out_of_files
from .handlers import Context
from .handlers.audited import AuditWriter
from .health import HealthServer
from .logs import daemon_logger
from .logs.heap import keep_read_buffers
from .server import ControlServer, tcp_listener
from .state import load_state
from .supervisor import Supervisor

if TYPE_CHECKING:
    from .diskwatch import DiskWatch

__all__ = ["DaemonRunning", "run_daemon"]


def _take_lock(tree: RuntimeTree) -> FileLock:
    """The tree's daemon lock, held for the daemon's life (our pid in it); DaemonRunning when
    another daemon holds it."""
    lock = FileLock(tree.temp_dir / "daemon.lock", timeout=0, record_holder=True)
    try:
        return lock.acquire()
    except LockBusy as exc:
        holder = exc.holder or "?"
        raise DaemonRunning(f"a daemon (pid {holder}) is already running for {tree.root}") from None


class _DiskWatchOnDemand:
    """The disk watch (daemon/diskwatch.py: watchfiles and its thread, the du walker), started
    when a client first subscribes to topic ``du``: a daemon nobody watches the disk of
    imports, scans and wakes for none of it. Once started it stays."""

    def __init__(self, tree: RuntimeTree, bus: EventBus, log: logging.Logger) -> None:
        self.tree, self.bus, self.log = tree, bus, log
        self.watch: DiskWatch | None = None

    def subscribed(self, prefix: bytes) -> None:
        if self.watch is None and b"du".startswith(prefix):
            from .diskwatch import DiskWatch

            self.watch = DiskWatch(self.tree, self.bus, self.log)
            self.watch.start()

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()


def _log_refusal(tree: RuntimeTree, exc: StartupCheckFailed) -> None:
    """Leave the refusal in the daemon log too, when logs/ can take it."""
    with contextlib.suppress(OSError):
        daemon_logger(tree.logs_dir).error("refusing to start: %s", exc)


#: systemd's NOTIFY_SOCKET, kept by `_claim_notify_socket` when the daemon starts.
_notify_socket: str | None = None


def _claim_notify_socket() -> None:
    """Keep systemd's NOTIFY_SOCKET for the daemon alone and take it out of os.environ, as
    sd_notify(3)'s ``unset_environment`` does. Services are spawned with a copy of the daemon's
    environment: one that speaks sd_notify by itself (redis' ``supervised auto``) would tell
    systemd about the daemon's unit (dropped by NotifyAccess=main, a warning per datagram)
    instead of telling us. WATCHDOG_USEC/_PID are the daemon's too: they go with it, and so does
    RUNYARD_SERVICE (a daemon run as another Runyard's service would pass it to its probes,
    whose exits its orphan reaper would then take for its own)."""
    global _notify_socket
    _notify_socket = os.environ.pop("NOTIFY_SOCKET", None) or None
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "RUNYARD_SERVICE"):
        os.environ.pop(name, None)


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) we are ready; a no-op without NOTIFY_SOCKET."""
    address = _notify_socket
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def startup_checks(
    tree: RuntimeTree,
    license_file: Path | None = None,
    project_file: Path | None = None,
    project: Project | None = None,
) -> DoctorReport:
    """The doctor's checks, before the tree is touched; StartupCheckFailed on a fatal one.
    ``project``: ``project_file`` as the caller parsed it (else it is read here).

    The default ports of services recorded with a pid in temp/state.json are not checked:
    after a crash their processes still hold them, and this daemon adopts them.
    """
    recorded, _ = load_state(tree)
    adopted = [name for name, r in recorded.services.items() if r.pid]
    if project is None:
        project = _project_or_none(project_file)
    report = run_checks(tree, license_file=license_file, skip_ports_of=adopted, project=project)
    fatal = report.fatal
    if fatal:
        more = f" (and {len(fatal) - 1} more fatal check(s))" if len(fatal) > 1 else ""
        raise StartupCheckFailed(
            f"startup check {fatal[0].name} failed: {fatal[0].detail}{more}; "
            f"run `runyard doctor --root {tree.root}`"
        )
    return report


def _project_or_none(project_file: Path | None) -> Project | None:
    """The project file parsed, or None when it does not parse: refused on its own line when
    ``_serve`` reads it again."""
    try:
        return load_project(project_file)
    except RunyardError:
        return None


def _log_checks(report: DoctorReport, log: logging.Logger, seconds: float) -> None:
    problems = sum(c.status in ("warn", "fail") for c in report.checks if c.name != "license")
    log.info("startup checks: %d problem(s), %.0f ms", problems, seconds * 1000)
    for check in report.checks:
        if check.name == "license":
            continue  # one line of its own below
        if check.status == "fail":
            log.error("startup check %s failed (not fatal): %s", check.name, check.detail)
        elif check.status == "warn":
            log.warning("startup check %s: %s", check.name, check.detail)
    lic = report.license
    if lic is not None:
        (log.info if lic.ok else log.warning)("%s", lic.summary())


def _actor(client: str = "daemon") -> dict[str, object]:
    """Who the audit trail says acted: the daemon itself, or the signal that moved it."""
    return {"uid": os.getuid(), "client": client}


class _StopRequest:
    """Why and when the daemon stops: TERM or INT (``stop``), or a shutdown request (seen by
    ``wait``). The reason goes to the audit trail; "crashed" until one comes."""

    def __init__(self) -> None:
        self.reason = "crashed"
        self._signalled = asyncio.Event()

    def stop(self, reason: str) -> None:
        self.reason = reason
        self._signalled.set()

    async def wait(self, ctx: Context) -> None:
        waiters = [
            asyncio.create_task(self._signalled.wait()),
            asyncio.create_task(ctx.shutdown_requested.wait()),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if ctx.shutdown_requested.is_set() and self.reason == "crashed":
            self.reason = "shutdown request"


def _handle_signals(
    sup: Supervisor, audit: AuditWriter, log: logging.Logger, stop: _StopRequest
) -> None:
    """TERM and INT stop every service, then the daemon; HUP reloads (audited as a reload)."""
    loop = asyncio.get_running_loop()

    def on_term(signame: str) -> None:
        log.info("%s: stopping every service, then the daemon", signame)
        audit.submit("shutdown", target="daemon", actor=_actor(signame))
        stop.stop(signame)

    def reloaded(t: asyncio.Task[str]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("reload failed: %s", exc)
        result, detail = ("failed", {"error": str(exc)[:300]}) if exc else ("ok", {})
        if exc is None:
            detail = {"summary": t.result()}
        audit.submit(
            "reload",
            target="daemon",
            result=result,
            detail=detail,
            actor=_actor("SIGHUP"),
        )

    def on_hup() -> None:
        log.info("SIGHUP: reloading")
        loop.create_task(sup.reload()).add_done_callback(reloaded)

    loop.add_signal_handler(signal.SIGTERM, on_term, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_term, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_hup)


def _audit_start(audit: AuditWriter, ctx: Context, license: LicenseStatus | None) -> None:
    sup = ctx.supervisor
    audit.submit(
        "daemon.start",
        target=str(ctx.tree.root),
        detail={
            "pid": os.getpid(),
            "version": ctx.version,
            "tier": sup.cap.tier,
            "license": license.status if license is not None else "missing",
            "services": len(sup.order),
            "over_limit": len(sup.cap.blocked),
        },
        actor=_actor(),
    )


async def _audit_exit(audit: AuditWriter, tree: RuntimeTree, reason: str) -> None:
    """The last audit entry, then the trail closed (its writes done, off the loop)."""
    audit.submit("daemon.exit", target=str(tree.root), detail={"reason": reason}, actor=_actor())
    await asyncio.to_thread(audit.close)


def gc_after_boot() -> None:
    """The cyclic GC, off since the launch (``__main__``, ``run_daemon``), on again once the
    boot is done. Off during the boot, ~75 young collections of objects that nearly all live
    as long as the daemon are not made before the first status answer (issue 16, cold start).
    Turned on as it was, its first young collection would walk all ~30,000 of them on the first
    request; ``freeze`` then ``unfreeze`` moves them into the oldest generation unscanned, where
    the next full collection frees what the boot left in garbage cycles (~750 objects with 50
    services; a collection now took 40 ms, the first answer's whole margin). Frozen for good
    they would be leaked when they die in a cycle later (a runner a reload removes)."""
    gc.freeze()
    gc.unfreeze()  # into the oldest generation (CPython's gc_unfreeze), not back into gen 0
    gc.enable()


def _publish(bus: EventBus, kind: str) -> None:
    bus.publish("daemon", lambda seq, ts: DaemonEvent(topic="daemon", seq=seq, ts=ts, kind=kind))


def _announce_ready(bus: EventBus, log: logging.Logger, tree: RuntimeTree, endpoint: str) -> None:
    """Serving: the daemon event for clients, a log line, READY=1 for systemd (Type=notify)."""
    _publish(bus, "started")
    log.info("daemon %d serving %s on %s", os.getpid(), tree.root, endpoint)
    _sd_notify("READY=1")


def _service_count(project: Project, manifest: RuntimeManifest | None) -> int:
    """How many services the boot may run: those of runyard.toml and the manifest."""
    names = set(project.services)
    if manifest is not None:
        names.update(entry.name for entry in manifest.services)
    return len(names)


async def _serve(
    tree: RuntimeTree,
    project_file: Path | None,
    log: logging.Logger,
    license: LicenseStatus | None = None,
    license_file: Path | None = None,
    manifest: RuntimeManifest | None = None,
    project: Project | None = None,
) -> None:
    if project is None:  # else as run_daemon's caller or the startup checks parsed it
        project = load_project(project_file)
    # Before the bind starts ZeroMQ's threads: the table grows once, with no RCU wait (fd_room).
    make_room(_service_count(project, manifest), log)
    # Before anything binds: a bad [daemon] tcp / curve setting stops the daemon here.
    tcp = tcp_listener(project.daemon, project.path)
    endpoints = endpoints_for(tree.root)
    bus = EventBus()
    sup = Supervisor(
        tree, project_file, bus, log, license, lambda: tree_license(tree, license_file)
    )
    audit = AuditWriter(tree.logs_dir, log)
    ctx = Context(
        tree=tree,
        supervisor=sup,
        events_endpoint=endpoints.events,
        version=runyard_version(),
        started_at=time.time(),
        audit=audit,
    )
    server = ControlServer(endpoints, ctx, log, tcp)
    diskwatch = _DiskWatchOnDemand(tree, bus, log)
    server.on_subscribe = diskwatch.subscribed
    server.bind()
    server.start()
    health = HealthServer(sup, project.daemon.health_port) if project.daemon.health_port else None
    stop = _StopRequest()
    try:
        await sup.boot(project, manifest)  # the manifest the startup checks validated
        gc_after_boot()
        _audit_start(audit, ctx, license)
        if health is not None:
            await health.start()
        _announce_ready(bus, log, tree, endpoints.control)
        _handle_signals(sup, audit, log, stop)
        await stop.wait(ctx)
        _sd_notify("STOPPING=1")
        # The same shutdown as a request's (the one order's last operation; asking again waits
        # for it), after whatever operation was under way or queued before it.
        await sup.shutdown()
        _publish(bus, "stopping")
        # Let the shutdown reply leave before the sockets close.
        await asyncio.sleep(0.05)
    finally:
        await diskwatch.close()
        if health is not None:
            await health.close()
        await sup.close()
        await server.close()
        await _audit_exit(audit, tree, stop.reason)
        log.info("daemon %d exits", os.getpid())


def run_daemon(
    root: Path,
    project_file: Path | None = None,
    license_file: Path | None = None,
    *,
    project: Project | None = None,
) -> int:
    """Run the daemon for the tree at ``root`` in the foreground until it is told to stop.

    ``license_file`` replaces the tree's config/runyard/license.json. ``project``:
    ``project_file`` as the caller parsed it (the command line's one read), else read here.
    """
    gc.disable()  # until the boot is done (``gc_after_boot``), also when not run by __main__
    _claim_notify_socket()
    tree = RuntimeTree(root).require()
    # ps and top show what this is, not "python3 -m runyard.daemon daemon --root ...".
    setproctitle.setproctitle(f"runyard daemon {tree.root}")
    began = time.monotonic()
    if project is None:
        project = _project_or_none(project_file)
    try:
        report = startup_checks(tree, license_file, project_file, project)
    except StartupCheckFailed as exc:
        _log_refusal(tree, exc)
        raise
    init_tree(tree)  # idempotent: makes sure temp/ (0700) and friends exist
    lock = _take_lock(tree)
    log = daemon_logger(tree.logs_dir)
    _log_checks(report, log, time.monotonic() - began)
    keep_read_buffers()
    try:
        asyncio.run(
            _serve(tree, project_file, log, report.license, license_file, report.manifest, project)
        )
    except Exception as exc:
        short = out_of_files(exc) if isinstance(exc, OSError) else None
        if short is not None:  # the limit, named in one line: not a crash
            log.error("%s", short)
            raise short from exc
        if isinstance(exc, RunyardError) and not isinstance(exc, InvariantBroken):
            log.error("%s", exc)
        else:
            log.exception("daemon crashed")
        raise
    finally:
        gc.enable()  # also when the boot failed (a caller of run_daemon in its own process)
        lock.release()
        for handler in log.handlers:
            handler.flush()
    return 0
