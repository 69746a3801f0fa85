"""``temp/state.json``: what a daemon must know to take over from the one before it.

Per service: the pid, pgid and process start time of its live process (so a reused pid is
never adopted), the *wanted* state (what the operator asked: an operator's ``stop`` is kept
by the next daemon), whether it was ``fatal`` (with its reason and last exit: a new daemon
does not retry what the previous one gave up on), the restart count, and the definition's
version and digest. Written atomically (temp + fsync + rename, runtime/core/atomic.py) after every
committed change, and kept by a clean shutdown (with no pids), so a new daemon knows what the
operator wanted. Files written by older daemons (no ``fatal``) still decode: new fields have
defaults. Unknown fields are tolerated, not refused as in other files we own: a daemon that is
rolled back must still find and adopt the processes a newer one recorded, or it would start
duplicates.

A write that fails (disk full, I/O error) is never ignored: `StateRecorder` remembers the
error, retries every second, and the supervisor spawns nothing while it cannot record what it
spawned (see supervisor.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.tree import RuntimeTree

from .fsm import Wanted

__all__ = [
    "RETRY_SECS",
    "DaemonState",
    "ServiceRecord",
    "StateRecorder",
    "load_state",
    "save_state",
    "state_path",
]

#: How often a failed state write is tried again.
RETRY_SECS = 1.0


class ServiceRecord(msgspec.Struct, kw_only=True):
    wanted: Wanted = Wanted.DOWN
    pid: int | None = None
    pgid: int | None = None
    create_time: float | None = None
    version: str = ""
    digest: str = ""
    restarts: int = 0
    #: The service was ``fatal`` (gave up restarting): a new daemon leaves it so.
    fatal: bool = False
    #: Why, when fatal; and the last exit status seen.
    reason: str = ""
    last_exit: int | None = None
    #: The cgroup directory of the live process, when contained by one: found again on adoption.
    cgroup: str | None = None


class DaemonState(msgspec.Struct, kw_only=True):
    version: int = 1
    daemon_pid: int = 0
    services: dict[str, ServiceRecord] = {}


_encoder = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(DaemonState)


def state_path(tree: RuntimeTree) -> Path:
    return tree.temp_dir / "state.json"


def load_state(tree: RuntimeTree) -> tuple[DaemonState, str | None]:
    """The recorded state, and a warning when the file was unreadable (then: empty state)."""
    path = state_path(tree)
    try:
        return _decoder.decode(read_capped(path, SMALL_FILE)), None
    except FileNotFoundError:
        return DaemonState(), None
    except (OSError, FileRefused, msgspec.DecodeError) as exc:
        return DaemonState(), f"{path}: unreadable ({exc}); starting without adoption"


def save_state(tree: RuntimeTree, state: DaemonState) -> None:
    atomic_write_bytes(state_path(tree), _encoder.encode(state), mode=0o600)


def describe_os_error(exc: OSError) -> str:
    """``no space left on device``: the cause alone, as a status reason reads it."""
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class StateRecorder:
    """Writes temp/state.json from a snapshot function; knows whether the last write worked.

    ``write()`` returns None or the cause of the failure (``no space left on device``). After a
    failure it tries again every RETRY_SECS until a write works, then calls ``on_recovered``.
    """

    def __init__(
        self,
        tree: RuntimeTree,
        snapshot: Callable[[], DaemonState],
        log: logging.Logger,
        on_recovered: Callable[[], None],
    ) -> None:
        self.tree = tree
        self._snapshot = snapshot
        self._log = log
        self._on_recovered = on_recovered
        #: The cause of the last failed write; None while writes work.
        self.error: str | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._pending = False

    def request(self) -> None:
        """Write soon (once per loop turn, however many changes were committed in it; not at
        all when a ``write()`` meanwhile took them, as the scheduler's after a pass does)."""
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._requested)

    def _requested(self) -> None:
        if self._pending:
            self.write()

    @property
    def pending(self) -> bool:
        """A write was requested and none took it since."""
        return self._pending

    def write(self) -> str | None:
        self._pending = False
        try:
            save_state(self.tree, self._snapshot())
        except OSError as exc:
            cause = describe_os_error(exc)
            if self.error != cause:  # once per cause, not once a second
                self._log.error(
                    "cannot write %s: %s; nothing is spawned until it can be written "
                    "(retrying every %gs)",
                    state_path(self.tree),
                    cause,
                    RETRY_SECS,
                )
            self.error = cause
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(RETRY_SECS, self._again)
            return cause
        if self.error is not None:
            self._log.info("%s written again", state_path(self.tree))
            self.error = None
            self._on_recovered()
        return None

    def _again(self) -> None:
        self._retry = None
        self.write()

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
