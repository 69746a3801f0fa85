"""Readiness: whether a running service is able to serve, as reported by a probe.

"Spawned" and "ready" are different facts (s6). The FSM knows a process is ``running``; this
module owns the second fact: the ``[services.NAME.readiness]`` table, four probes and the
monitor that runs one of them for one spawned process.

    [services.web.readiness]
    kind = "http"          # tcp | http | exec | log
    port = "http"          # a defaultPorts name of the service, or a number
    path = "/healthz"
    interval = 1.0         # seconds between probe starts
    threshold = 2          # consecutive successes to become ready
    failure_threshold = 3  # consecutive failures, once ready, to become not ready

A probe never raises for a failure of what it probes: it answers ``(ok, detail)`` and the detail
is one line saying what it saw. A ``log`` probe runs no loop; the daemon feeds it captured lines
and the first match makes the service ready for the rest of that process's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import re
import shlex
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from runyard.runtime.config.supervision import SupervisionError, range_problem
from runyard.runtime.core.manifest import decode_error_message

__all__ = [
    "LogMatcher",
    "Readiness",
    "ReadinessMonitor",
    "parse_readiness",
    "probe_exec",
    "probe_http",
    "probe_tcp",
    "resolve_port",
    "validate_readiness",
]

log = logging.getLogger("runyard.readiness")

#: Longest matched log line quoted in a detail.
MATCH_DETAIL_CHARS = 200


class Readiness(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The ``readiness`` table of a service's supervision settings."""

    kind: Literal["tcp", "http", "exec", "log"]
    #: tcp/http: a ``defaultPorts`` name of the service, or a port number.
    port: str | int | None = None
    host: str = "127.0.0.1"
    #: http: the request target.
    path: str = "/"
    #: http: the status that means ready.
    status: int = 200
    #: exec: argv run with the service's env and cwd; exit 0 = ready.
    command: list[str] = []
    #: log: a regex searched in each captured output line; once matched, stays ready.
    pattern: str = ""
    interval: float = 1.0
    timeout: float = 1.0
    threshold: int = 1
    failure_threshold: int = 3
    initial_delay: float = 0.0


# --- configuration ------------------------------------------------------------------------------


def parse_readiness(table: Mapping[str, Any], ports: Mapping[str, int], where: str) -> Readiness:
    """A TOML table -> a checked `Readiness`; SupervisionError (a ValueError) is one line."""
    for key, value in table.items():  # every number in its range; NaN and infinity never
        problem = range_problem(key, value)
        if problem:
            raise SupervisionError(f"{where}.{key}: {problem}")
    try:
        spec = msgspec.convert(dict(table), Readiness)
    except msgspec.ValidationError as exc:
        raise SupervisionError(f"{where}.{decode_error_message(exc)}") from None
    validate_readiness(spec, ports, where)
    return spec


def resolve_port(r: Readiness, ports: Mapping[str, int]) -> int | None:
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


def validate_readiness(r: Readiness, ports: Mapping[str, int], where: str) -> None:
    """Check what types cannot; SupervisionError (a ValueError) names ``where`` and the field."""

    def fail(field: str, problem: str) -> SupervisionError:
        return SupervisionError(f"{where}.{field}: {problem}")

    for field in ("interval", "timeout"):
        value = getattr(r, field)
        if not (math.isfinite(value) and value > 0):
            raise fail(field, f"expected a number of seconds > 0, got {value!r}")
    if not (math.isfinite(r.initial_delay) and r.initial_delay >= 0):
        raise fail("initial_delay", f"expected a number of seconds >= 0, got {r.initial_delay!r}")
    for field in ("threshold", "failure_threshold"):
        if getattr(r, field) < 1:
            raise fail(field, f"expected a count >= 1, got {getattr(r, field)}")

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
    elif r.kind == "exec":
        if not r.command or not r.command[0]:
            raise fail("command", "kind 'exec' needs a non-empty command (argv list)")
    elif r.kind == "log":
        if not r.pattern:
            raise fail("pattern", "kind 'log' needs a non-empty regex")
        try:
            re.compile(r.pattern)
        except re.error as exc:
            raise fail("pattern", f"not a valid regex: {exc}") from None


# --- probes -------------------------------------------------------------------------------------


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


class LogMatcher:
    """Searches captured output lines for a regex; once one matched, it stays matched."""

    def __init__(self, pattern: str) -> None:
        self._regex = re.compile(pattern)
        #: The first line that matched (without its line ending), or None.
        self.matched_line: str | None = None

    @property
    def matched(self) -> bool:
        return self.matched_line is not None

    def feed(self, lines: Iterable[str]) -> bool:
        """True once any line fed so far matched."""
        if self.matched_line is not None:
            return True
        for line in lines:
            line = line.rstrip("\r\n")
            if self._regex.search(line):
                self.matched_line = line
                return True
        return False


# --- the monitor --------------------------------------------------------------------------------


class MonitorPhase(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class ReadinessMonitor:
    """Runs one readiness probe for one spawned process and reports transitions.

    ``on_change(ready, detail)`` is called only when ``ready`` flips; it starts False. One
    monitor per process: a respawned process gets a new monitor (and starts not ready).
    """

    def __init__(
        self,
        spec: Readiness,
        *,
        port: int | None,
        env: Mapping[str, str] | None,
        cwd: str | None,
        on_change: Callable[[bool, str], None],
    ) -> None:
        if spec.kind in ("tcp", "http") and port is None:
            raise ValueError(f"readiness kind {spec.kind!r} needs a resolved port")
        self.spec = spec
        self.port = port
        self._env = env
        self._cwd = cwd
        self._on_change = on_change
        self._matcher = LogMatcher(spec.pattern) if spec.kind == "log" else None
        self._ready = False
        self._successes = 0
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self.phase = MonitorPhase.NEW
        #: What the latest probe (or log match) said; "" before the first one.
        self.last_detail = ""

    @property
    def ready(self) -> bool:
        return self._ready

    def start(self) -> None:
        """Start probing (needs a running event loop); a log monitor only waits for lines."""
        if self.phase is not MonitorPhase.NEW:
            raise RuntimeError(f"readiness monitor already {self.phase.value}")
        self.phase = MonitorPhase.RUNNING
        if self._matcher is None:
            self._task = asyncio.get_running_loop().create_task(
                self._probe_loop(), name=f"readiness-{self.spec.kind}"
            )

    def feed_log(self, lines: Sequence[str]) -> None:
        """Captured output lines of the process; only a ``log`` monitor looks at them."""
        if self._matcher is None or self._ready or self.phase is MonitorPhase.STOPPED:
            return
        if self._matcher.feed(lines):
            line = self._matcher.matched_line or ""
            self.last_detail = f"matched: {line[:MATCH_DETAIL_CHARS]}"
            self._set_ready(True)

    async def stop(self) -> None:
        """Cancel the probe loop and wait for it (a running exec probe is killed and reaped)."""
        self.phase = MonitorPhase.STOPPED
        task, self._task = self._task, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just our task

    async def probe_once(self) -> tuple[bool, str]:
        """One probe of the configured kind; never raises for what it probes."""
        s = self.spec
        if s.kind == "tcp":
            assert self.port is not None
            return await probe_tcp(s.host, self.port, s.timeout)
        if s.kind == "http":
            assert self.port is not None
            return await probe_http(s.host, self.port, s.path, s.status, s.timeout)
        if s.kind == "exec":
            return await probe_exec(s.command, self._env, self._cwd, s.timeout)
        return (self._matcher is not None and self._matcher.matched), self.last_detail

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.spec.initial_delay)
        next_start = loop.time()
        while True:
            try:
                ok, detail = await self.probe_once()
            except Exception as exc:  # a bug, not a probe failure: log it, count it, go on
                log.exception("readiness probe crashed")
                ok, detail = False, f"probe error: {exc!r}"
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel that raced with the probe's completion: honour it.
                raise asyncio.CancelledError
            self._record(ok, detail)
            # Fixed rate, but a probe slower than the interval delays the next instead of
            # bunching them up.
            next_start = max(next_start + self.spec.interval, loop.time())
            await asyncio.sleep(next_start - loop.time())

    def _record(self, ok: bool, detail: str) -> None:
        self.last_detail = detail
        if ok:
            self._successes += 1
            self._failures = 0
            if not self._ready and self._successes >= self.spec.threshold:
                self._set_ready(True)
        else:
            self._failures += 1
            self._successes = 0
            if self._ready and self._failures >= self.spec.failure_threshold:
                self._set_ready(False)

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        try:
            self._on_change(ready, self.last_detail)
        except Exception:  # the caller's bug must not stop the probing
            log.exception("readiness on_change callback failed")
