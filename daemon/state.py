"""``temp/state.json``: what the daemon must know to take its children back after a crash.

For every service with a process: pid, pgid and the process start time (so a reused pid is
never adopted), plus the wanted state and the definition digest. Written atomically (temp +
fsync + rename) each time one of those changes; read once at start.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from runtime.atomic import atomic_write_bytes
from runtime.capped import SMALL_FILE, read_capped
from runtime.errors import FileRefused
from runtime.tree import RuntimeTree

__all__ = ["DaemonState", "ServiceRecord", "load_state", "save_state", "state_path"]


class ServiceRecord(msgspec.Struct, kw_only=True):
    wanted: str = "down"
    pid: int | None = None
    pgid: int | None = None
    create_time: float | None = None
    version: str = ""
    digest: str = ""
    restarts: int = 0


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
