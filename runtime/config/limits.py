"""Resource limits of a service: ``memory_max``, ``cpu_max``, ``tasks_max``, ``nofile``, ``core``.

The settings arrive as TOML wrote them (``Supervision``: an int, or a string for a size or a
percentage); `parse_limits` turns the merged settings into one `Limits` value in plain units
(bytes, CPUs, counts), checked against `RANGES`. How each is enforced is the daemon's business
(daemon/limit_watch.py, daemon/cgroup_limits.py, daemon/process.py); this module only says what
was asked, so the runtime package stays importable alone.

    memory_max  bytes: 67108864, "64MiB", "1G", "512M"       cgroup memory.max, else sampled RSS
    cpu_max     CPUs: 0.5, 1.5, or a percentage "50%"        cgroup cpu.max only (never faked)
    tasks_max   processes + threads                          cgroup pids.max, else sampled
    nofile      open files (soft = hard)                     setrlimit in the child
    core        core file bytes: 0, "1G" or "unlimited"      setrlimit in the child
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from runyard.runtime.core.errors import SupervisionError

from .supervision import range_problem

__all__ = ["LIMIT_KEYS", "UNLIMITED", "Limits", "format_size", "parse_limits", "parse_size"]

#: The settings this module parses, in the order they are documented.
LIMIT_KEYS = ("memory_max", "cpu_max", "tasks_max", "nofile", "core")
#: ``core = "unlimited"`` (RLIM_INFINITY in the child).
UNLIMITED = -1

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class Limits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a service may use; None: no limit. Part of ServiceSpec, so of its digest."""

    memory_max: int | None = None  # bytes
    cpu_max: float | None = None  # CPUs: 0.5 is half of one CPU
    tasks_max: int | None = None  # processes and threads together (as pids.max counts)
    nofile: int | None = None
    core: int | None = None  # bytes, or UNLIMITED

    @property
    def any(self) -> bool:
        return any(getattr(self, k) is not None for k in LIMIT_KEYS)


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"64M"``, ``"1G"``, ``"4096"`` -> bytes (binary units); ValueError otherwise."""
    m = _SIZE_RE.match(text)
    if m is None:
        raise ValueError(f'{text!r} is not a size (e.g. 67108864, "64MiB", "1G")')
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: int) -> str:
    """A size in the largest binary unit it reaches, whole: ``64 MiB``, ``1 GiB``, ``512 B``."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.0f} {unit}"
    return f"{n} B"


def _checked(key: str, value: int | float) -> Any:
    problem = range_problem(key, value)
    if problem is not None:
        raise SupervisionError(f"{key}: {problem}")
    return value


def _bytes(key: str, value: int | str) -> int:
    if isinstance(value, int):
        return _checked(key, value)
    try:
        return _checked(key, parse_size(value))
    except ValueError as exc:
        if isinstance(exc, SupervisionError):
            raise
        raise SupervisionError(f"{key}: {exc}") from None


def _cpus(value: float | str) -> float:
    if isinstance(value, str):
        m = _PERCENT_RE.match(value)
        if m is None:
            raise SupervisionError(
                f'cpu_max: {value!r} is not a share of CPUs (e.g. "50%", "150%" or 0.5)'
            )
        value = float(m.group(1)) / 100
    return _checked("cpu_max", float(value))


def _core(value: int | str) -> int:
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "infinity"):
        return UNLIMITED
    return _bytes("core", value)


def parse_limits(settings: Mapping[str, Any]) -> Limits:
    """The limits of merged supervision settings; SupervisionError ``key: problem`` otherwise."""
    got = {k: settings.get(k) for k in LIMIT_KEYS}
    return Limits(
        memory_max=None if got["memory_max"] is None else _bytes("memory_max", got["memory_max"]),
        cpu_max=None if got["cpu_max"] is None else _cpus(got["cpu_max"]),
        tasks_max=got["tasks_max"],
        nofile=got["nofile"],
        core=None if got["core"] is None else _core(got["core"]),
    )
