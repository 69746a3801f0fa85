"""The daemon process: one per tree (flock in temp/), the control server, the supervisor.

Signals: SIGTERM / SIGINT stop every service and exit; SIGHUP reloads. ``kill -9`` leaves the
services running on purpose: their pid, pgid and start time are in temp/state.json, their
output waits in FIFOs whose read ends the children themselves keep open, and the next daemon
adopts them (see docs/ARCHITECTURE.md, "Surviving a daemon crash").
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from protocol.endpoints import endpoints_for
from protocol.messages import DaemonEvent
from runtime.errors import RunyardError
from runtime.project import load_project
from runtime.tree import RuntimeTree

from .diskwatch import DiskWatch
from .events import EventBus
from .handlers import Context
from .health import HealthServer
from .logs import daemon_logger
from .server import ControlServer, tcp_listener
from .supervisor import Supervisor

__all__ = ["DaemonRunning", "run_daemon", "runyard_version"]


class DaemonRunning(RunyardError):
    """Another daemon already owns this tree."""


def runyard_version() -> str:
    try:
        return version("runyard")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _take_lock(tree: RuntimeTree) -> int:
    path = tree.temp_dir / "daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise DaemonRunning(f"a daemon (pid {holder}) is already running for {tree.root}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) we are ready; a no-op without NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


async def _serve(tree: RuntimeTree, project_file: Path | None, log: logging.Logger) -> None:
    loop = asyncio.get_running_loop()
    project = load_project(project_file)
    # Before anything binds: a bad [daemon] tcp / curve setting stops the daemon here.
    tcp = tcp_listener(project.daemon, project.path)
    bus = EventBus()
    sup = Supervisor(tree, project_file, bus, log)
    endpoints = endpoints_for(tree.root)
    ctx = Context(
        tree=tree,
        supervisor=sup,
        events_endpoint=endpoints.events,
        version=runyard_version(),
        started_at=time.time(),
    )
    server = ControlServer(endpoints, ctx, log, tcp)
    server.bind()
    server.start()
    health = None
    diskwatch = DiskWatch(tree, bus, log)
    try:
        await sup.boot()
        diskwatch.start()
        if project.daemon.health_port:
            health = HealthServer(sup, project.daemon.health_port)
            await health.start()
        bus.publish(
            "daemon", lambda seq, ts: DaemonEvent(topic="daemon", seq=seq, ts=ts, kind="started")
        )
        log.info("daemon %d serving %s on %s", os.getpid(), tree.root, endpoints.control)
        _sd_notify("READY=1")

        stopping = asyncio.Event()

        def on_term(signame: str) -> None:
            log.info("%s: stopping every service, then the daemon", signame)
            stopping.set()

        def on_hup() -> None:
            log.info("SIGHUP: reloading")
            task = loop.create_task(sup.reload())
            task.add_done_callback(
                lambda t: (
                    t.cancelled()
                    or (t.exception() and log.error("reload failed: %s", t.exception()))
                )
            )

        loop.add_signal_handler(signal.SIGTERM, on_term, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, on_term, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, on_hup)

        waiters = [
            loop.create_task(stopping.wait()),
            loop.create_task(ctx.shutdown_requested.wait()),
        ]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        _sd_notify("STOPPING=1")
        if not ctx.shutdown_requested.is_set():
            await sup.shutdown()
        bus.publish(
            "daemon", lambda seq, ts: DaemonEvent(topic="daemon", seq=seq, ts=ts, kind="stopping")
        )
        # Let the shutdown reply leave before the sockets close.
        await asyncio.sleep(0.05)
    finally:
        await diskwatch.close()
        if health is not None:
            await health.close()
        await sup.close()
        await server.close()
        log.info("daemon %d exits", os.getpid())


def run_daemon(root: Path, project_file: Path | None = None) -> int:
    """Run the daemon for the tree at ``root`` in the foreground until it is told to stop."""
    tree = RuntimeTree(root).require()
    tree.init()  # idempotent: makes sure temp/ (0700) and friends exist
    lock_fd = _take_lock(tree)
    log = daemon_logger(tree.logs_dir)
    try:
        asyncio.run(_serve(tree, project_file, log))
    except RunyardError as exc:
        log.error("%s", exc)
        raise
    except Exception:
        log.exception("daemon crashed")
        raise
    finally:
        os.close(lock_fd)
        for handler in log.handlers:
            handler.flush()
    return 0
