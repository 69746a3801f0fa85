"""How a service is supervised: the settings of ``[services.NAME]`` in runyard.toml and of the
template ``config/{service}/service.toml``, as data.

Every field is optional here (None = not set) so the two sources merge field by field: the
template gives the service's defaults, the project file overrides them, and what neither sets
takes the built-in default of `effective`. The daemon turns the result into a running policy;
this module only describes and checks it, so the runtime package stays importable alone.

Every number has a range (`RANGES`), enforced by the Struct itself (``msgspec.Meta`` ge/le): a
float bounded on both sides also refuses NaN and infinity, which TOML can spell (``nan``,
``inf``). `range_problem` words a refusal as one line naming the allowed range.
"""

from __future__ import annotations

import math
import signal
from typing import Annotated, Any, Literal

import msgspec

from runyard.runtime.core.errors import SupervisionError

__all__ = [
    "DEFAULTS",
    "RANGES",
    "Backoff",
    "DependsOn",
    "Supervision",
    "SupervisionError",
    "merge",
    "parse_log_mode",
    "parse_signal",
    "parse_umask",
    "range_problem",
]

DependsOn = Literal["started", "ready", "completed"]
RestartPolicy = Literal["always", "on-failure", "never"]
#: auto: a cgroup of its own when the daemon can make one, else the subreaper; cgroup: a cgroup or
#: no start (the reason says why none can be made); subreaper: never a cgroup
#: (docs/ARCHITECTURE.md, "Containment").
ContainmentMode = Literal["auto", "cgroup", "subreaper"]


#: The allowed range of every number of the supervision settings (and of ``[daemon]``), inclusive.
RANGES: dict[str, tuple[float, float]] = {
    "initial": (0.0, 3600.0),
    "max": (0.0, 86400.0),
    "multiplier": (1.0, 100.0),
    "jitter": (0.0, 1.0),
    "stable_secs": (0.0, 86400.0),
    "start_secs": (0.0, 3600.0),
    "max_restarts": (0, 10_000),
    "stop_timeout": (0.0, 3600.0),
    "log_max_bytes": (1, 1 << 40),
    "log_backups": (0, 1000),
    "health_port": (1, 65535),
    # the readiness table (daemon/readiness.py)
    "interval": (0.01, 3600.0),
    "timeout": (0.01, 3600.0),
    "initial_delay": (0.0, 3600.0),
    "threshold": (1, 1000),
    "failure_threshold": (1, 1000),
    # the liveness table (daemon/liveness.py): interval, timeout, failure_threshold as above
    "start_period": (0.0, 3600.0),
    # resource limits (runtime/config/limits.py): a size string or percentage is parsed, then
    # held to the same range
    "memory_max": (1 << 20, 1 << 50),
    "cpu_max": (0.01, 1024.0),
    "tasks_max": (1, 4_194_304),
    "nofile": (16, 1 << 20),
    "core": (0, 1 << 50),
    # who the service runs as: (uid_t)-1 means "unchanged", never an id; umask up to 0o777
    "user": (0, 2**32 - 2),
    "group": (0, 2**32 - 2),
    "umask": (0, 0o777),
    # sd_notify (daemon/notify.py)
    "watchdog_sec": (0.0, 86400.0),
}


def _float(name: str) -> Any:
    lo, hi = RANGES[name]
    return Annotated[float, msgspec.Meta(ge=lo, le=hi)]


def _int(name: str) -> Any:
    lo, hi = RANGES[name]
    return Annotated[int, msgspec.Meta(ge=int(lo), le=int(hi))]


def range_problem(name: str, value: object) -> str | None:
    """``expected a number from 0 to 3600, got nan`` when ``value`` is outside ``name``'s range."""
    if name not in RANGES or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    lo, hi = RANGES[name]
    if (isinstance(value, float) and not math.isfinite(value)) or not lo <= value <= hi:
        if isinstance(lo, int):  # written out whole: a byte count in e-notation helps nobody
            return f"expected an integer from {lo} to {hi}, got {value!r}"
        return f"expected a number from {lo:g} to {hi:g}, got {value!r}"
    return None


class Backoff(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Delay before restart number n (1-based): min(max, initial * multiplier**(n-1)), +-jitter."""

    initial: _float("initial") | None = None
    max: _float("max") | None = None
    multiplier: _float("multiplier") | None = None
    #: A fraction: 0.1 spreads each delay uniformly over +-10%.
    jitter: _float("jitter") | None = None


class Supervision(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    autostart: bool | None = None
    restart: RestartPolicy | None = None
    backoff: Backoff | None = None
    #: Up this long without exiting: the failure count and the backoff start over.
    stable_secs: _float("stable_secs") | None = None
    #: Up this long after spawn: the start counts as successful (``starting`` -> ``running``).
    start_secs: _float("start_secs") | None = None
    #: Consecutive failed runs before the service is left ``fatal``.
    max_restarts: _int("max_restarts") | None = None
    stop_signal: str | None = None
    stop_timeout: _float("stop_timeout") | None = None
    depends_on: dict[str, DependsOn] | None = None
    #: A readiness probe table; the daemon checks it against its probe types.
    readiness: dict[str, Any] | None = None
    #: Working directory, relative to the tree root; default ``data/{service}``.
    cwd: str | None = None
    #: Replaces the manifest's default args.
    args: list[str] | None = None
    log_max_bytes: _int("log_max_bytes") | None = None
    log_backups: _int("log_backups") | None = None
    #: Mode of the service's log files: an octal int (``0o640``) or string (``"0640"``).
    log_mode: int | str | None = None
    #: A liveness probe table (daemon/liveness.py): a service that stops answering is restarted.
    liveness: dict[str, Any] | None = None
    # --- containment (issue 12) ---
    containment: ContainmentMode | None = None
    # --- resource limits: a size ("64MiB") or share ("50%") string is parsed by
    # runtime/config/limits.py, which documents each ---
    memory_max: _int("memory_max") | str | None = None
    cpu_max: _float("cpu_max") | str | None = None
    tasks_max: _int("tasks_max") | None = None
    nofile: _int("nofile") | None = None
    #: Core file size: bytes, a size string, or "unlimited".
    core: _int("core") | str | None = None
    # --- who the service runs as (runtime/config/identity.py) ---
    #: A user name or number; default: the daemon's own user (only root may choose another).
    user: str | _int("user") | None = None
    #: A group name or number; default: the user's primary group.
    group: str | _int("group") | None = None
    #: prctl(PR_SET_NO_NEW_PRIVS) in the child: no setuid bit or file capability raises it.
    no_new_privileges: bool | None = None
    #: The child's umask: an octal int (``0o027``) or string (``"027"``); default: the daemon's.
    umask: _int("umask") | str | None = None
    # --- sd_notify (daemon/notify.py) ---
    #: The service gets NOTIFY_SOCKET; READY=1 is its readiness unless a probe is configured.
    notify: bool | None = None
    #: With notify: restart the service when no WATCHDOG=1 arrives for this long (0: off).
    watchdog_sec: _float("watchdog_sec") | None = None


#: What a service gets for every setting that neither its template nor the project sets.
DEFAULTS: dict[str, Any] = {
    "autostart": True,
    "restart": "on-failure",
    "backoff": {"initial": 0.5, "max": 30.0, "multiplier": 2.0, "jitter": 0.1},
    "stable_secs": 10.0,
    "start_secs": 1.0,
    "max_restarts": 5,
    "stop_signal": "TERM",
    "stop_timeout": 10.0,
    "depends_on": {},
    "readiness": None,
    "cwd": None,
    "args": None,
    "log_max_bytes": 10 * 1024 * 1024,
    "log_backups": 5,
    "log_mode": 0o640,
    "liveness": None,
    # --- containment (issue 12) ---
    "containment": "auto",
    # resource limits: none unless set
    "memory_max": None,
    "cpu_max": None,
    "tasks_max": None,
    "nofile": None,
    "core": None,
    "user": None,
    "group": None,
    "no_new_privileges": True,
    "umask": None,
    # sd_notify
    "notify": False,
    "watchdog_sec": 0.0,
}


def merge(*layers: Supervision | None) -> dict[str, Any]:
    """Later layers win, field by field (``backoff`` merges its own fields too)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for layer in layers:
        if layer is None:
            continue
        for field in layer.__struct_fields__:
            value = getattr(layer, field)
            if value is None:
                continue
            if field == "backoff":
                for k in value.__struct_fields__:
                    if getattr(value, k) is not None:
                        out["backoff"][k] = getattr(value, k)
            else:
                out[field] = value
    return out


def parse_signal(name: str) -> signal.Signals:
    """``TERM``, ``SIGTERM``, ``term`` or ``15`` -> signal.SIGTERM."""
    text = name.strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            raise SupervisionError(f"{name!r} is not a signal number") from None
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise SupervisionError(f"{name!r} is not a signal name (e.g. TERM, INT, QUIT)") from None


def parse_log_mode(value: int | str) -> int:
    """``0o640``, ``"0640"``, ``"640"`` or ``"0o640"`` -> 0o640; the owner must keep read and
    write (the daemon appends as the owner), and nothing above 0o777 (no setuid, sticky)."""
    if isinstance(value, bool):
        raise SupervisionError(f"{value!r} is not a file mode")
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise SupervisionError(f'{value!r} is not an octal file mode (e.g. "0640")') from None
    else:
        mode = value
    if not 0o600 <= mode <= 0o777 or mode & 0o600 != 0o600:
        raise SupervisionError(
            f"{value!r} is not a file mode from 0o600 to 0o777 with owner read and write "
            '(write it in octal: 0o640 or "0640")'
        )
    return mode


def parse_umask(value: int | str) -> int:
    """``0o027``, ``"027"``, ``"0027"`` or ``"0o027"`` -> 0o027, from 0 to 0o777."""
    if isinstance(value, bool):
        raise SupervisionError(f"{value!r} is not a umask")
    if isinstance(value, str):
        try:
            mask = int(value.strip().lower().removeprefix("0o"), 8)
        except ValueError:
            raise SupervisionError(f'{value!r} is not an octal umask (e.g. "027")') from None
    else:
        mask = value
    if not 0 <= mask <= 0o777:
        raise SupervisionError(f'{value!r} is not a umask from 0 to 0o777 (e.g. 0o027 or "027")')
    return mask
