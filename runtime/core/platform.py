"""The os/arch names Runyard uses in catalogs and bin dirs (`linux-amd64`)."""

from __future__ import annotations

import platform as _platform
import sys

__all__ = ["ARCHES", "OSES", "current_arch", "current_os", "normalize_arch", "normalize_os"]

OSES = ("linux", "darwin", "windows")
ARCHES = ("amd64", "arm64")

_ARCH_ALIASES = {
    "amd64": "amd64",
    "x86_64": "amd64",
    "x64": "amd64",
    "arm64": "arm64",
    "aarch64": "arm64",
    "armv8": "arm64",
}
_OS_ALIASES = {
    "linux": "linux",
    "darwin": "darwin",
    "macos": "darwin",
    "windows": "windows",
    "win32": "windows",
}


def normalize_arch(name: str) -> str | None:
    """`x86_64` -> `amd64`, `aarch64` -> `arm64`; None for an arch we do not know."""
    return _ARCH_ALIASES.get(name.strip().lower())


def normalize_os(name: str) -> str | None:
    """`Linux` -> `linux`, `macos` -> `darwin`; None for an os we do not know."""
    return _OS_ALIASES.get(name.strip().lower())


def current_os() -> str:
    found = normalize_os(sys.platform if sys.platform != "linux" else "linux")
    return found or sys.platform


def current_arch() -> str:
    machine = _platform.machine()
    return normalize_arch(machine) or machine.lower()
