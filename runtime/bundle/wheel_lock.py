"""Which wheels a runtime bundle holds: the pins of ``requirements.lock`` and the target box.

``parse_lock`` reads the lock ``scripts/lock`` writes: hash-pinned runtime requirements, the
build backend on ``# build:`` comment lines, and the ``# targets:`` line (CPython tag and
machines) the dependency wheels are for. ``this_target`` is this interpreter and box as wheel
tags see them, refused when the lock is for another. Used by ``wheels.py``.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from runyard.runtime.core.capped import SMALL_FILE, read_capped, read_toml_capped
from runyard.runtime.core.errors import WheelhouseError

__all__ = [
    "LOCK_FILE",
    "Lock",
    "Pin",
    "Target",
    "WheelhouseError",
    "load_lock",
    "normalize_name",
    "parse_lock",
    "this_target",
]

LOCK_FILE = "requirements.lock"


# -- the lock ------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: frozenset[str]

    def requirement(self) -> str:
        """The pip requirement line, hash-pinned."""
        return " ".join(
            [f"{self.name}=={self.version}"] + [f"--hash=sha256:{h}" for h in sorted(self.hashes)]
        )

    def matches(self, wheel: Path) -> bool:
        """Whether a wheel file name is of this name and version."""
        parts = wheel.name.split("-")
        return (
            len(parts) >= 5 and normalize_name(parts[0]) == self.name and parts[1] == self.version
        )


@dataclass(frozen=True)
class Lock:
    runtime: tuple[Pin, ...]
    build: tuple[Pin, ...]
    python: str  # "cp311"
    machines: tuple[str, ...]  # ("x86_64", "aarch64")


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)((?:\s+--hash=sha256:[0-9a-f]{64})+)")


def _parse_pin(text: str, where: str) -> Pin:
    m = _PIN.fullmatch(text.strip())
    if not m:
        raise WheelhouseError(f"{where}: not a hash-pinned requirement: {text.strip()[:80]}")
    hashes = frozenset(h.split(":", 1)[1] for h in m.group(3).split())
    return Pin(normalize_name(m.group(1)), m.group(2), hashes)


def parse_lock(text: str, origin: str = LOCK_FILE) -> Lock:
    """The pins of a requirements.lock (runtime lines, then ``# build:`` comment lines)."""
    runtime: list[Pin] = []
    build: list[Pin] = []
    python, machines = "", ()
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        logical.append((start, pending + raw))
        pending = ""
    for number, line in logical:
        where = f"{origin} line {number}"
        stripped = line.strip()
        if stripped.startswith("# targets:"):
            words = stripped.split(":", 1)[1].split()
            python, machines = (words[0], tuple(words[2:])) if len(words) > 2 else ("", ())
        elif stripped.startswith("# build:"):
            build.append(_parse_pin(stripped.split(":", 1)[1], where))
        elif stripped and not stripped.startswith("#"):
            runtime.append(_parse_pin(stripped, where))
    if not python or not runtime:
        raise WheelhouseError(f"{origin}: no '# targets:' line or no pins: run scripts/lock")
    return Lock(tuple(runtime), tuple(build), python, machines)


def _project(root: Path) -> dict:
    return read_toml_capped(root / "pyproject.toml")["project"]


def load_lock(root: Path) -> Lock:
    path = root / LOCK_FILE
    try:
        text = read_capped(path, SMALL_FILE).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WheelhouseError(
            f"cannot read {path}: {exc.strerror or exc}: run scripts/lock"
        ) from None
    lock = parse_lock(text, str(path))
    pinned = {p.name for p in lock.runtime}
    names = (
        re.match(r"[A-Za-z0-9._-]+", d).group(0) for d in _project(root).get("dependencies", [])
    )
    missing = sorted({normalize_name(n) for n in names} - pinned)
    if missing:
        raise WheelhouseError(f"{path} does not pin {', '.join(missing)}: run scripts/lock")
    return lock


# -- the target ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """This interpreter and box, as wheel tags see them."""

    python: str  # "cp311"
    version: tuple[int, int]
    machine: str  # "x86_64"
    glibc: tuple[int, int]

    @property
    def key(self) -> str:
        return f"{self.python}-manylinux_{self.glibc[0]}_{self.glibc[1]}_{self.machine}"

    def pip_args(self) -> list[str]:
        """pip's target options, manylinux platforms oldest first (pip prefers them in order)."""
        legacy = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}
        platforms: list[str] = []
        for minor in range(5, self.glibc[1] + 1):
            if minor in legacy:
                platforms.append(f"{legacy[minor]}_{self.machine}")
            platforms.append(f"manylinux_2_{minor}_{self.machine}")
        args = ["--only-binary=:all:", "--implementation", "cp", "--abi", self.python]
        args += ["--python-version", f"{self.version[0]}.{self.version[1]}"]
        for p in platforms:
            args += ["--platform", p]
        return args


def this_target(lock: Lock | None = None) -> Target:
    """The target of this box; a WheelhouseError when no manylinux wheel fits it."""
    impl = sys.implementation.name
    version = sys.version_info[:2]
    python = f"cp{version[0]}{version[1]}"
    machine = platform.machine()
    libc, libc_version = platform.libc_ver()
    if impl != "cpython" or not sys.platform.startswith("linux") or libc != "glibc":
        raise WheelhouseError(
            f"bundle wheels are manylinux wheels for CPython on glibc Linux; this is {impl} "
            f"on {sys.platform} ({libc or 'no glibc'})"
        )
    if lock is not None and (python != lock.python or machine not in lock.machines):
        raise WheelhouseError(
            f"{LOCK_FILE} is for {lock.python} on {', '.join(lock.machines)}, this is {python} on "
            f"{machine}: regenerate it with scripts/lock for this target"
        )
    major, minor = (int(x) for x in libc_version.split(".")[:2])
    return Target(python, version, machine, (major, minor))
