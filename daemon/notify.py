"""The sd_notify protocol: a service that says itself when it is ready, what it is doing, and
that it is still alive (``notify = true``, ``watchdog_sec``).

Each such service gets its own AF_UNIX datagram socket, named to it in ``NOTIFY_SOCKET`` as
systemd does (sd_notify(3)): newline-separated ``KEY=VALUE`` assignments, one datagram each.

- Where: ``temp/notify/NAME.sock``, inside the tree's 0700 ``temp/``, so only the daemon's user
  (and root) can reach it. A sockaddr_un path holds 107 bytes; a tree deep enough to overflow
  it gets an abstract socket (``@runyard-notify-<hash>``, the hash of the path it would have
  had). An abstract socket has no file permissions (anyone in the network namespace may send),
  which is why every datagram is checked by its sender anyway, and why it is only the fallback.
  The name is a function of the tree and the service, so a daemon that re-adopts a running
  service binds the very address that service was given.
- Who: the socket is read with SO_PASSCRED, so the kernel stamps each datagram with the sender's
  pid (a forged pid needs CAP_SYS_ADMIN). A datagram counts only if that pid is in the service's
  cgroup, or is the service's process, a descendant of it, or in its process group
  (``belongs``); anything else is dropped and logged once per sender.
- A service that runs as another user (``user =``) cannot pass the 0700 ``temp/``: it gets the
  abstract socket, and the sender check is what keeps others out.
- ``BARRIER=1`` (systemd-notify waits on it by default since systemd 246): the sender passes a
  pipe's end and waits for it to be closed once everything it sent before was read. Every
  descriptor received is closed after its datagram is handled, which is what honours it.
- ``MAINPID=`` is ignored: the process the daemon spawned stays *the* process (its pid and start
  time are what state.json records and what re-adoption checks); a forking daemon whose main
  process moves should run in the foreground instead.

Facts, not transitions: `NotifyMonitor` keeps what the current process said (ready, status,
stopping, its last watchdog ping) and tells the runner through callbacks, as the readiness
monitor does.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from runyard.runtime.core.digest import sha256

from .cgroup import cgroup2_mount, cgroup_of
from .process import ProcessHandle
from .proctable import read_stat

__all__ = [
    "NotifyChannel",
    "NotifyMessage",
    "NotifyMonitor",
    "belongs",
    "notify_address",
    "parse_message",
    "watchdog_argv",
]

log = logging.getLogger("runyard.notify")

#: sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
SUN_PATH_MAX = 107
#: systemd reads at most this much of a notification (NOTIFY_BUFFER_MAX is PIPE_BUF).
DATAGRAM_MAX = 4096
#: Descriptors accepted with one datagram (each closed at once: only BARRIER=1 sends one).
FDS_MAX = 16
#: Longest STATUS= text kept (a status line, not a log).
STATUS_MAX = 512
#: How far up the parent chain a sender is looked for.
ANCESTRY_MAX = 64
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid


# --- the protocol, pure ---------------------------------------------------------------------------


class NotifyMessage(NamedTuple):
    """What one datagram says; None where it says nothing."""

    ready: bool | None = None
    status: str | None = None
    stopping: bool = False
    #: "1" (a ping) or "trigger" (the service declares itself failed).
    watchdog: str | None = None
    #: WATCHDOG_USEC=: the service changes its own watchdog timeout (seconds).
    watchdog_sec: float | None = None


def parse_message(data: bytes) -> NotifyMessage:
    """``READY=1\\nSTATUS=serving`` -> NotifyMessage; unknown or malformed lines are ignored
    (sd_notify(3): the manager ignores assignments it does not understand)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value  # a later assignment of the same key wins
    watchdog_sec = None
    usec = fields.get("WATCHDOG_USEC", "")
    if usec.isdigit() and int(usec) > 0:
        watchdog_sec = int(usec) / 1e6
    watchdog = fields.get("WATCHDOG")
    return NotifyMessage(
        ready=True if fields.get("READY") == "1" else None,
        status=fields["STATUS"][:STATUS_MAX] if "STATUS" in fields else None,
        stopping=fields.get("STOPPING") == "1",
        watchdog=watchdog if watchdog in ("1", "trigger") else None,
        watchdog_sec=watchdog_sec,
    )


def notify_address(temp_dir: Path, name: str, *, other_user: bool = False) -> str:
    """The NOTIFY_SOCKET value for service ``name``: a path, or ``@...`` (abstract) when the
    path would not fit in sun_path or the service runs as another user (who cannot pass the
    daemon's 0700 temp/ to reach a path)."""
    path = os.path.join(temp_dir, "notify", f"{name}.sock")  # name: a checked service name
    if len(os.fsencode(path)) <= SUN_PATH_MAX and not other_user:
        return path
    return "@runyard-notify-" + sha256(os.fsencode(path)).hexdigest()[:32]


def _sockaddr(address: str) -> str:
    return "\0" + address[1:] if address.startswith("@") else address


def belongs(pid: int, handle: ProcessHandle) -> bool:
    """Whether ``pid`` is in the service's cgroup, or is its process, a descendant, or in its
    process group."""
    if handle.cgroup is not None and _in_cgroup(pid, handle.cgroup):
        return True
    for _ in range(ANCESTRY_MAX):
        if pid == handle.pid:
            return True
        stat = read_stat(pid)
        if stat is None:
            return False
        if stat.pgid == handle.pgid:
            return True
        if stat.ppid <= 1:
            return False
        pid = stat.ppid
    return False


def _in_cgroup(pid: int, cgroup: str) -> bool:
    """``cgroup`` is the directory; /proc/PID/cgroup names it from the mount. The whole path
    must be that directory: a cgroup whose path is only its tail (``/web``) is another one."""
    where = cgroup_of(pid)
    mount = _cgroup2_mount()
    if where is None or where == "/" or mount is None:
        return False
    return os.path.normpath(cgroup) == os.path.join(mount, where.lstrip("/"))


@functools.cache
def _cgroup2_mount() -> str | None:
    """Where cgroup v2 is mounted (read once: it does not move under a running daemon)."""
    mount = cgroup2_mount()
    return None if mount is None else str(mount)


def watchdog_argv(argv: list[str]) -> list[str]:
    """``argv`` run through ``sh`` so the program finds its own pid in WATCHDOG_PID.

    systemd sets WATCHDOG_PID in the forked child; Popen builds the environment before the fork,
    so the pid is not known yet. ``sh`` exports ``$$`` and execs the program in place: same pid,
    same process group. A program that cannot be executed is spawned as is, so the spawn error
    stays the daemon's one-line SpawnError rather than a shell's exit 127.
    """
    if not (argv and os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)):
        return argv
    return ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"', *argv]


# --- the socket ----------------------------------------------------------------------------------


class NotifyChannel:
    """One service's notify socket: bound before the first spawn (so a program that speaks at
    once is heard), read while a process is attached, closed with the runner."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._reading = False

    def bind(self) -> None:
        """Bind if not bound yet (a stale file from a previous daemon is replaced)."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            if not self.address.startswith("@"):
                Path(self.address).parent.mkdir(mode=0o700, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.address)
            sock.bind(_sockaddr(self.address))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock

    def read(self, on_datagram: Callable[[int, bytes], None]) -> None:
        """Call ``on_datagram(sender_pid, data)`` for each datagram, from now on."""
        self.bind()
        assert self._sock is not None
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._drain, on_datagram)
        self._reading = True

    def pause(self) -> None:
        if self._sock is not None and self._reading:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._reading = False

    def close(self) -> None:
        if self._sock is None:
            return
        if self._reading:
            with contextlib.suppress(RuntimeError):  # the loop may be closing already
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._reading = False
        self._sock.close()
        self._sock = None
        if not self.address.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)

    def _drain(self, on_datagram: Callable[[int, bytes], None]) -> None:
        assert self._sock is not None
        anc_size = socket.CMSG_SPACE(_CREDS.size) + socket.CMSG_SPACE(FDS_MAX * 4)
        while True:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(DATAGRAM_MAX, anc_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("notify socket %s: %s", self.address, exc)
                return
            pid = 0
            fds = array.array("i")
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CREDS.unpack_from(payload)[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            try:
                on_datagram(pid, data)
            finally:
                for fd in fds:  # BARRIER=1: closing is the answer
                    with contextlib.suppress(OSError):
                        os.close(fd)


# --- one process's notifications -------------------------------------------------------------------


class NotifyMonitor:
    """What one process said over its channel, and its watchdog.

    ``on_change(ready, detail)`` when READY=1 arrives or STOPPING=1 withdraws it (only if
    ``gates_ready``: the service has no other readiness), ``on_status()`` when STATUS= changes,
    ``on_fail(reason)`` when the watchdog expires or the service triggers it.
    """

    def __init__(
        self,
        channel: NotifyChannel,
        handle: ProcessHandle,
        *,
        watchdog_sec: float,
        assume_ready: bool = False,
        on_change: Callable[[bool, str], None],
        on_status: Callable[[], None],
        on_fail: Callable[[str], None],
    ) -> None:
        self.channel = channel
        self.handle = handle
        #: A re-adopted process said READY=1 to the previous daemon, if ever: it is trusted to have.
        self.ready = assume_ready
        self.status = ""
        self.stopping = False
        self.watchdog_sec = watchdog_sec
        self._on_change = on_change
        self._on_status = on_status
        self._on_fail = on_fail
        self._timer: asyncio.TimerHandle | None = None
        self._refused: set[int] = set()

    def start(self) -> None:
        self.channel.read(self._datagram)
        self._arm()

    def stop(self) -> None:
        self.channel.pause()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        """(Re)start the watchdog: from the spawn (or adoption), then from each ping."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.watchdog_sec > 0 and not self.stopping:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.watchdog_sec, self._fail, "watchdog timeout")

    def _fail(self, reason: str) -> None:
        self.stop()
        self._on_fail(reason)

    def _datagram(self, pid: int, data: bytes) -> None:
        if not (pid > 0 and belongs(pid, self.handle)):
            if pid not in self._refused:
                self._refused.add(pid)
                log.warning(
                    "notify socket %s: ignored a datagram from pid %d, not of the service (pid %d)",
                    self.channel.address,
                    pid,
                    self.handle.pid,
                )
            return
        self.apply(parse_message(data))

    def apply(self, msg: NotifyMessage) -> None:
        if msg.status is not None and msg.status != self.status:
            self.status = msg.status
            self._on_status()
        if msg.watchdog_sec is not None:
            self.watchdog_sec = msg.watchdog_sec
        if msg.stopping and not self.stopping:
            self.stopping = True
            self._arm()  # disarmed: a service on its way out is not hung
            if self.ready:
                self.ready = False
                self._on_change(False, "the service said STOPPING=1")
        if msg.watchdog == "trigger":
            self._fail("watchdog triggered by the service (WATCHDOG=trigger)")
            return
        if msg.watchdog == "1" or msg.watchdog_sec is not None:
            self._arm()
        if msg.ready and not self.ready and not self.stopping:
            self.ready = True
            self._on_change(True, "the service said READY=1")
