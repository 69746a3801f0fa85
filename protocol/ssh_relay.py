"""``runyard --host [USER@]BOX[:ROOT]``: the laptop's end of the link to a daemon on another box.

    Client / AsyncClient --ipc--> SshRelay (a private 0700 dir here) --ssh -T BOX runyard bridge-->

The relay runs the operator's own ``ssh -T BOX runyard bridge [--root ROOT]`` (their config,
keys, agent, ProxyJump and known_hosts: it passes no option of its own) and serves a private
directory laid out like a tree's socket directory, so the unchanged client library, every
command and the TUI connect to it as to a local daemon. Each connection becomes a stream over
ssh's stdin/stdout (``relay_frames``); no TCP port is opened on either side.

The local sockets exist only while the box's daemon has its socket (the bridge's DAEMON frames)
and the link is up, so "no daemon" and "link down" read as they do on the box: no socket file,
and the client library's own reconnection does the rest. The relay keeps the link: a link that
ends, or that answers no PING within LINK_TIMEOUT, is dropped (every local connection with it,
which the TUI shows as "unreachable, retrying") and ssh is started again with a backoff.

The relay runs its own asyncio loop in a daemon thread, so a synchronous command and the
Textual app (with its own loop) use it alike.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runyard.runtime.core.errors import DaemonUnreachable, ProtocolError, UsageError

from .endpoints import RELAY_MARK, Endpoints, endpoints_for, prepare_socket_dir
from .relay_frames import (
    BRIDGE_VERSION,
    CHANNEL_CONTROL,
    CHANNEL_EVENTS,
    MAX_PAYLOAD,
    FrameReader,
    Kind,
    frame,
)

__all__ = ["SshRelay", "SshTarget", "ssh_argv"]

#: Seconds between the relay's keepalive PINGs, and the silence after which the link is dropped.
PING_EVERY = 2.0
LINK_TIMEOUT = 8.0
#: Backoff between ssh attempts after a link was lost (doubling from the first to the last).
BACKOFF = (0.5, 5.0)
#: A link up this long counts as healthy: the next loss starts the backoff afresh.
HEALTHY_AFTER = 10.0
#: Seconds ssh gets to end by itself once its stdin is closed (then SIGTERM, then SIGKILL).
END_GRACE = 2.0
#: Bytes queued towards one local client before its stream is dropped.
MAX_QUEUED = 8 * 1024 * 1024


@dataclass(frozen=True)
class SshTarget:
    """``[USER@]BOX[:ROOT]``: an ssh destination (a host or a Host alias of the ssh config) and
    the tree on it (None: the box's own default, as ``runyard`` there would find it)."""

    destination: str
    root: str | None = None

    @classmethod
    def parse(cls, text: str) -> SshTarget:
        destination, sep, root = text.partition(":")
        user_at, bracket, inside = text.partition("[")
        user_ok = user_at == "" or (user_at.endswith("@") and ":" not in user_at)
        if bracket and "]" in inside and user_ok:
            host, _, rest = inside.partition("]")  # [USER@][v6::addr][:ROOT]
            destination, root, sep = user_at + host, rest.removeprefix(":"), ":" if rest else ""
        user, _, host = destination.rpartition("@")
        if not host or (user == "" and "@" in destination):
            raise UsageError(f"--host {text!r}: give [USER@]BOX[:ROOT]")
        if destination.startswith("-") or any(c.isspace() or ord(c) < 32 for c in destination):
            raise UsageError(f"--host {text!r}: not a host name (no leading '-', no spaces)")
        if sep and not root:
            raise UsageError(f"--host {text!r}: ROOT after ':' is empty")
        return cls(destination, root or None)

    @property
    def label(self) -> str:
        return f"{self.destination}:{self.root}" if self.root else self.destination


def ssh_argv(target: SshTarget, ssh_command: str | None, remote: list[str]) -> list[str]:
    """``SSH -T DESTINATION 'runyard [--root ROOT] REMOTE...'``: the operator's ssh (``ssh``, or
    ``--ssh-command`` / RUNYARD_SSH, split like a shell), and the box's runyard (``runyard`` on
    its PATH, or RUNYARD_REMOTE). The remote command is one shell-quoted string: ssh hands it to
    the box's shell, which would otherwise split a ROOT with spaces."""
    source = "--ssh-command" if ssh_command else "RUNYARD_SSH"
    ssh = _split(source, ssh_command or os.environ.get("RUNYARD_SSH") or "ssh")
    if not ssh:
        raise UsageError("--ssh-command is empty")
    runyard = _split("RUNYARD_REMOTE", os.environ.get("RUNYARD_REMOTE") or "runyard")
    root = ["--root", target.root] if target.root else []
    return [*ssh, "-T", "--", target.destination, shlex.join([*runyard, *root, *remote])]


def _split(what: str, text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"{what} {text!r}: {exc}") from None


class SshRelay:
    """The local end of one ssh link; ``start()`` returns once the link is up (or raises
    DaemonUnreachable saying why ssh failed), ``close()`` ends it and removes the directory."""

    def __init__(self, target: SshTarget, ssh_command: str | None = None) -> None:
        self.target = target
        self.argv = ssh_argv(target, ssh_command, ["bridge"])
        self.root = Path(tempfile.mkdtemp(prefix="runyard-ssh-"))  # 0700: only we connect
        self.endpoints: Endpoints = endpoints_for(self.root)
        prepare_socket_dir(self.endpoints)
        (self.endpoints.directory / RELAY_MARK).touch(mode=0o600)  # transport.heartbeats_for
        #: What the box's bridge said in its HELLO.
        self.remote: dict[str, object] = {}
        self.sessions = 0
        self._up = threading.Event()
        self._failure = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="ssh-relay", daemon=True)

    def start(self, timeout: float = 60.0) -> SshRelay:
        self._thread.start()
        try:
            if not self._up.wait(timeout):
                raise DaemonUnreachable(
                    f"ssh to {self.target.destination}: no link within {timeout:g}s"
                )
            if self._failure:
                raise DaemonUnreachable(self._failure)
        except BaseException:  # Ctrl-C while ssh logs in, too: no ssh, no directory left
            self.close()
            raise
        return self

    def close(self) -> None:
        """End the link (ssh is terminated) and remove the local directory. Idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.endpoints.directory != self.root / "temp":  # the short fallback directory
            shutil.rmtree(self.endpoints.directory, ignore_errors=True)
            with contextlib.suppress(OSError):  # and its runyard-UID parent, if it was the last
                self.endpoints.directory.parent.rmdir()

    def __enter__(self) -> SshRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def explain(self, message: str) -> str:
        """A client error about the local relay's sockets, said about the box instead."""
        for endpoint in (self.endpoints.control, self.endpoints.events):
            message = message.replace(endpoint, self.target.label)
        return message.replace("(runyard up)", f"(runyard --host {self.target.label} up)")

    # --- the relay's own thread ---------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # a bug: start() reports it rather than a link that is not there
            self._failure = f"the ssh relay to {self.target.destination} failed: {exc!r}"
        finally:
            self._up.set()  # never leave start() waiting on a thread that is gone

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        delay = BACKOFF[0]
        while not self._stop.is_set():
            began = time.monotonic()
            session = _Session(self)
            reason = await session.run()
            if not self._up.is_set():  # the first link never came up: start() says why
                self._failure = reason
                return
            if time.monotonic() - began > HEALTHY_AFTER:
                delay = BACKOFF[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, BACKOFF[1])


class _Session:
    """One ssh process and the streams it carries; ``run()`` returns why it ended."""

    def __init__(self, relay: SshRelay) -> None:
        self.relay = relay
        self.servers: list[asyncio.Server] = []
        self.conns: dict[int, asyncio.StreamWriter] = {}
        self.ids = itertools.count(1)
        self.to_ssh: asyncio.StreamWriter | None = None
        self.stderr: collections.deque[str] = collections.deque(maxlen=4)
        self.last_heard = time.monotonic()
        self.hello = False

    def send(self, kind: Kind, stream: int = 0, payload: bytes = b"") -> None:
        if self.to_ssh is not None and not self.to_ssh.is_closing():
            self.to_ssh.write(frame(kind, stream, payload))

    async def run(self) -> str:
        relay = self.relay
        relay.sessions += 1
        try:
            proc = subprocess.Popen(
                relay.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            return f"cannot run {relay.argv[0]!r}: {exc.strerror or exc}"
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        loop = asyncio.get_running_loop()
        out = asyncio.StreamReader(limit=MAX_PAYLOAD * 2)
        err = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(out), proc.stdout)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(err), proc.stderr)
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, proc.stdin
        )
        self.to_ssh = asyncio.StreamWriter(transport, protocol, None, loop)
        tasks = [
            asyncio.create_task(self._read(out)),
            asyncio.create_task(self._keepalive()),
            asyncio.create_task(_wait(relay._stop)),
        ]
        collect = asyncio.create_task(self._collect(err))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason = next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            await self._unbind()
            transport.close()
            code = await _end(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect, 2)
        return self._why(reason, code)

    def _why(self, reason: str, code: int) -> str:
        said = " ".join(self.stderr).strip()
        dest = self.relay.target.destination
        if reason:
            return f"ssh to {dest}: {reason}" + (f" ({said})" if said else "")
        return f"ssh to {dest} ended (exit {code})" + (f": {said}" if said else "")

    async def _collect(self, err: asyncio.StreamReader) -> None:
        while line := await err.readline():
            text = line.decode("utf-8", "replace").strip()
            if text:
                self.stderr.append(text)

    async def _keepalive(self) -> str:
        while True:
            await asyncio.sleep(PING_EVERY)
            if time.monotonic() - self.last_heard > LINK_TIMEOUT:
                return f"no answer over the link for {LINK_TIMEOUT:g}s"
            self.send(Kind.PING)

    async def _read(self, out: asyncio.StreamReader) -> str:
        frames = FrameReader(greeting=True)
        while data := await out.read(MAX_PAYLOAD):
            self.last_heard = time.monotonic()
            try:
                for kind, stream, payload in frames.feed(data):
                    if problem := await self._dispatch(kind, stream, payload):
                        return problem
            except ProtocolError as exc:
                return str(exc)
        if not self.hello and frames.skipped_text:
            return f"no bridge on the box; it said: {frames.skipped_text!r}"
        return ""

    async def _dispatch(self, kind: Kind, stream: int, payload: bytes) -> str:
        if kind == Kind.HELLO:
            return self._on_hello(payload)
        if kind == Kind.DAEMON:
            await (self._bind() if payload == b"1" else self._unbind())
            self.relay._up.set()
        elif kind == Kind.DATA and (w := self.conns.get(stream)) is not None:
            w.write(payload)
            if w.transport.get_write_buffer_size() > MAX_QUEUED:
                self.conns.pop(stream).transport.abort()
                self.send(Kind.CLOSE, stream)
        elif kind == Kind.CLOSE and (w := self.conns.pop(stream, None)) is not None:
            w.close()
        return ""

    def _on_hello(self, payload: bytes) -> str:
        try:
            hello = json.loads(payload)
        except ValueError:
            return "the bridge's HELLO is not JSON"
        if not isinstance(hello, dict) or hello.get("bridge") != BRIDGE_VERSION:
            theirs = hello.get("bridge") if isinstance(hello, dict) else None
            return (
                f"the box's runyard speaks bridge version {theirs}, this one {BRIDGE_VERSION}: "
                "install the same runyard on both"
            )
        self.relay.remote = hello
        self.hello = True
        return ""

    async def _bind(self) -> None:
        if self.servers:
            return
        eps = self.relay.endpoints
        for channel, endpoint in ((CHANNEL_CONTROL, eps.control), (CHANNEL_EVENTS, eps.events)):
            path = endpoint.removeprefix("ipc://")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

            async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter, c=channel) -> None:
                await self._carry(c, r, w)

            self.servers.append(await asyncio.start_unix_server(accept, path=path))

    async def _unbind(self) -> None:
        """No local socket (the box has no daemon, or the link is gone): clients see what they
        see on the box with no daemon, and reconnect when the sockets come back."""
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        eps = self.relay.endpoints
        for endpoint in (eps.control, eps.events):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(endpoint.removeprefix("ipc://"))
        conns, self.conns = self.conns, {}
        for w in conns.values():
            w.transport.abort()

    async def _carry(
        self, channel: bytes, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        """One local client connection: OPEN a stream, then its bytes as DATA until it ends."""
        stream = next(self.ids)
        self.conns[stream] = w
        self.send(Kind.OPEN, stream, channel)
        with contextlib.suppress(OSError):
            while data := await r.read(MAX_PAYLOAD):
                if stream not in self.conns:
                    return
                self.send(Kind.DATA, stream, data)
                if self.to_ssh is not None:
                    await self.to_ssh.drain()
        if self.conns.pop(stream, None) is not None:
            self.send(Kind.CLOSE, stream)
            w.close()


async def _wait(event: asyncio.Event | None) -> str:
    assert event is not None
    await event.wait()
    return "closed"


async def _end(proc: subprocess.Popen[bytes]) -> int:
    """Reap ssh, its exit status. Its stdin is closed already, which ends the bridge and with
    it ssh; one that is still there after END_GRACE is terminated, then killed."""
    loop = asyncio.get_running_loop()
    for step in (None, proc.terminate, proc.kill):
        if step is not None:
            with contextlib.suppress(ProcessLookupError):
                step()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, proc.wait), END_GRACE)
        except TimeoutError:
            continue
    return await loop.run_in_executor(None, proc.wait)
