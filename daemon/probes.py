"""Probes: one look at whether a service answers, shared by readiness and liveness.

A probe never raises for a failure of what it probes: it answers ``(ok, detail)`` and the detail
is one line saying what it saw. ``run_probe`` runs the probe a settings table describes (any
Struct with the `ProbeTarget` fields: ``Readiness``, ``Liveness``), and `check_target` checks
such a table's target fields, so readiness and liveness share one copy of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import quote

from runyard.runtime.core.nofile import restore_in_child

__all__ = [
    "ProbeTarget",
    "check_target",
    "end_task",
    "probe_exec",
    "probe_http",
    "probe_tcp",
    "resolve_port",
    "run_probe",
]


class ProbeTarget(Protocol):
    """What a probe needs from a settings table (``Readiness``, ``Liveness``)."""

    kind: str
    port: str | int | None
    host: str
    path: str
    status: int
    command: list[str]
    timeout: float


def resolve_port(r: ProbeTarget, ports: Mapping[str, int]) -> int | None:
    """The port number ``r.port`` stands for, or None (unset, or an unknown name)."""
    port = r.port
    if isinstance(port, bool) or port is None:
        return None
    if isinstance(port, int):
        return port
    if port in ports:
        return ports[port]
    # "8080" written as a string is a number, unless the service names a port "8080".
    return int(port) if port.isascii() and port.isdigit() else None


def check_target(
    r: ProbeTarget, ports: Mapping[str, int], fail: Callable[[str, str], Exception]
) -> None:
    """Check the fields of a tcp, http or exec probe; ``fail(field, problem)`` makes the error."""
    if r.kind in ("tcp", "http"):
        if not r.host:
            raise fail("host", "must not be empty")
        if r.port is None:
            raise fail("port", f"kind {r.kind!r} needs a port (a defaultPorts name or a number)")
        port = resolve_port(r, ports)
        if port is None:
            known = ", ".join(sorted(ports)) or "none: the service declares no defaultPorts"
            raise fail("port", f"unknown port name {r.port!r} (known: {known})")
        if not 0 < port < 65536:
            raise fail("port", f"expected 1-65535, got {port}")
    if r.kind == "http":
        if not r.path.startswith("/"):
            raise fail("path", f"must start with '/', got {r.path!r}")
        if not 100 <= r.status <= 599:
            raise fail("status", f"expected an HTTP status 100-599, got {r.status}")
    elif r.kind == "exec" and (not r.command or not r.command[0]):
        raise fail("command", "kind 'exec' needs a non-empty command (argv list)")


async def run_probe(
    r: ProbeTarget, port: int | None, env: Mapping[str, str] | None, cwd: str | None
) -> tuple[bool, str]:
    """One probe of kind tcp, http or exec as ``r`` describes it; ``port`` already resolved."""
    if r.kind == "tcp":
        assert port is not None
        return await probe_tcp(r.host, port, r.timeout)
    if r.kind == "http":
        assert port is not None
        return await probe_http(r.host, port, r.path, r.status, r.timeout)
    if r.kind == "exec":
        return await probe_exec(r.command, env, cwd, r.timeout)
    raise ValueError(f"no probe of kind {r.kind!r}")


def _os_reason(exc: OSError) -> str:
    # asyncio's connect errors carry "Connect call failed (...)" as strerror; the errno says more.
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def probe_tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Ready when a TCP connection opens within ``timeout``; it is closed at once."""
    target = f"tcp {_netloc(host, port)}"

    async def connect() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that lands
        # as the inner call completes, and the monitor's stop() then waits forever.
        async with asyncio.timeout(timeout):
            await connect()
    except TimeoutError:
        return False, f"{target}: timeout after {timeout:g}s"
    except OSError as exc:
        return False, f"{target}: {_os_reason(exc)}"
    return True, f"{target}: connected"


async def probe_http(
    host: str, port: int, path: str, status: int, timeout: float
) -> tuple[bool, str]:
    """Ready when ``GET path`` answers ``status``; only the status line is read."""
    netloc = _netloc(host, port)
    # Percent-encode anything that could break the request line (spaces, CR/LF, non-ASCII).
    target = quote(path, safe="!#$%&'()*+,/:;=?@[]~")
    where = f"http GET http://{netloc}{target}"
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\nUser-Agent: runyard-readiness\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("ascii")

    async def status_line() -> bytes:
        reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024)
        try:
            writer.write(request)
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()

    try:
        async with asyncio.timeout(timeout):
            line = await status_line()
    except TimeoutError:
        return False, f"{where}: timeout after {timeout:g}s"
    except OSError as exc:
        return False, f"{where}: {_os_reason(exc)}"
    except ValueError:  # the StreamReader's line limit
        return False, f"{where}: status line too long"
    if not line:
        return False, f"{where}: connection closed before a response"
    text = line.decode("latin-1").rstrip("\r\n")
    parts = text.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not re.fullmatch(r"\d{3}", parts[1]):
        return False, f"{where}: malformed status line {text[:80]!r}"
    got = int(parts[1])
    answer = " ".join(parts[1:])
    if got != status:
        return False, f"{where}: {answer} (expected {status})"
    return True, f"{where}: {answer}"


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def probe_exec(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None, timeout: float
) -> tuple[bool, str]:
    """Ready when ``argv`` exits 0 within ``timeout``.

    The command runs in a session of its own; whatever it leaves in its process group (on
    timeout, on cancellation, or stragglers after it exits) is killed, and the command reaped.
    ``env`` None inherits the daemon's environment.
    """
    if not argv:
        return False, "exec: empty command"
    shown = shlex.join(argv)
    where = f"exec {shown[:77] + '...' if len(shown) > 80 else shown}"
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=restore_in_child(),  # the soft RLIMIT_NOFILE the daemon raised, given back
        )
    except OSError as exc:
        return False, f"{where}: cannot start: {exc}"
    try:
        async with asyncio.timeout(timeout):
            code = await proc.wait()
    except TimeoutError:
        return False, f"{where}: timeout after {timeout:g}s (killed)"
    finally:
        # Runs on timeout and on cancellation too: nothing the probe started outlives it.
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()
    if code == 0:
        return True, f"{where}: exit 0"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return False, f"{where}: killed by {name}"
    return False, f"{where}: exit {code}"


async def end_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a monitor's probe loop and wait for it (a running exec probe is killed and reaped)."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves, not just our task
