"""A tree's unit handed to systemd: the one module that runs ``systemctl``.

- **Is systemd the init system?** sd_booted(3)'s test: ``/run/systemd/system`` exists, a
  directory systemd makes at boot and nothing else does. Having ``systemctl`` installed says
  nothing (Debian containers have it without systemd running); PID 1's name is only reported.
- **Never half-installed.** The unit file is written atomically (runtime/core/atomic.py), then
  ``daemon-reload`` and ``enable [--now]`` (or ``start``). When one of them fails, what was done is
  undone: ``disable`` if it was asked, the previous unit file put back (or ours removed), a last
  ``daemon-reload``; the error says that nothing stayed installed.
- **Uninstall** is the reverse: ``disable --now`` (stop and disable), the file removed,
  ``daemon-reload``. A unit systemd does not know is not an error: the file is what we own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from runyard.runtime.core.atomic import atomic_write_text, fsync_dir
from runyard.runtime.core.errors import SystemdError

from .systemd_unit import UNIT_HEADER

__all__ = [
    "SHOWN_PROPERTIES",
    "SYSTEMD_RUN_DIR",
    "install_unit",
    "pid1_name",
    "refuse_foreign",
    "require_systemd",
    "systemd_booted",
    "systemd_version",
    "uninstall_unit",
    "unit_file_differs",
    "unit_properties",
    "write_unit",
]

SYSTEMD_RUN_DIR = Path("/run/systemd/system")
#: ``enable --now`` of a Type=notify unit waits for READY=1 (TimeoutStartSec=, 90 s by default).
SYSTEMCTL_TIMEOUT = 300.0
#: What ``service status`` asks ``systemctl show`` for.
SHOWN_PROPERTIES = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "NRestarts",
    "Result",
    "ActiveEnterTimestamp",
    "FragmentPath",
)


def systemd_booted(run_dir: Path = SYSTEMD_RUN_DIR) -> bool:
    return run_dir.is_dir()


def pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def require_systemd(root: Path, run_dir: Path = SYSTEMD_RUN_DIR) -> None:
    """SystemdError, one line with what to do instead, unless systemd is PID 1."""
    if systemd_booted(run_dir):
        return
    raise SystemdError(
        f"systemd is not the init system here (PID 1 is {pid1_name()}, no {run_dir}): "
        f"start `runyard daemon --root {root}` from this box's init instead, or take the unit "
        f"from `runyard service install --root {root} --print` to a box that runs systemd"
    )


def systemd_version() -> int | None:
    """The major version of the box's systemd (``systemctl --version``), None when unknown."""
    try:
        first = _systemctl(["--version"], user=False).partition("\n")[0]
    except SystemdError:
        return None
    m = re.match(r"systemd (\d+)\b", first)
    return int(m.group(1)) if m else None


def _systemctl(args: Sequence[str], *, user: bool) -> str:
    exe = shutil.which("systemctl")
    if exe is None:
        raise SystemdError("systemctl is not on PATH")
    argv = [exe, *(["--user"] if user else []), *args]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=SYSTEMCTL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise SystemdError(
            f"`{' '.join(argv[1:])}` did not answer within {SYSTEMCTL_TIMEOUT:.0f} s"
        ) from None
    if out.returncode != 0:
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise SystemdError(
            f"`systemctl {' '.join(argv[1:])}` failed ({out.returncode}): "
            f"{said[0] if said else 'no message'}"
        )
    return out.stdout


def refuse_foreign(path: Path) -> None:
    """SystemdError when ``path`` is a unit file we did not write (``--name nginx`` must never
    replace or remove nginx's unit)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().rstrip("\n")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SystemdError(f"cannot read {path}: {exc.strerror or exc}") from None
    if first != UNIT_HEADER:
        raise SystemdError(
            f"{path} was not written by `runyard service install`: left as it is "
            "(choose another --name, or remove it yourself)"
        )


def write_unit(path: Path, text: str) -> None:
    """The unit file, atomically (0644: systemd and `systemctl cat` read it as any user);
    never over a unit file someone else wrote (``refuse_foreign``)."""
    refuse_foreign(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text, mode=0o644)


def _restore(path: Path, previous: str | None) -> None:
    if previous is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            fsync_dir(path.parent)
    else:
        atomic_write_text(path, previous, mode=0o644)


def install_unit(path: Path, text: str, *, user: bool, enable: bool, start: bool) -> bool:
    """Write the unit, reload systemd, enable and/or start it; all or nothing (SystemdError).

    True when it replaced a unit file that said something else: a daemon already running keeps
    what the old one said until the unit is restarted (which its services survive)."""
    previous = path.read_text() if path.is_file() else None
    write_unit(path, text)
    enabled = False
    try:
        _systemctl(["daemon-reload"], user=user)
        if enable:
            enabled = True  # from here a failure may leave it enabled: disable on the way out
            _systemctl(["enable", *(["--now"] if start else []), path.name], user=user)
        elif start:
            _systemctl(["start", path.name], user=user)
    except SystemdError as exc:
        undo = [f"{'put back the previous' if previous is not None else 'removed the'} {path}"]
        if enabled:
            with contextlib.suppress(SystemdError):
                _systemctl(["disable", "--now", path.name], user=user)
            undo.insert(0, "disabled it")
        _restore(path, previous)
        with contextlib.suppress(SystemdError):
            _systemctl(["daemon-reload"], user=user)
        raise SystemdError(f"{exc}; nothing installed ({', '.join(undo)})") from None
    return previous is not None and previous != text


def uninstall_unit(path: Path, *, user: bool) -> bool:
    """Stop and disable the unit, remove its file, reload; False when there was no file."""
    if not path.is_file():
        return False
    refuse_foreign(path)
    props = unit_properties(path.name, user=user)
    if props.get("LoadState") == "loaded":
        _systemctl(["disable", "--now", path.name], user=user)
    _restore(path, None)
    _systemctl(["daemon-reload"], user=user)
    return True


def unit_properties(name: str, *, user: bool) -> dict[str, str]:
    """``systemctl show`` of the unit (LoadState=not-found when systemd does not know it)."""
    out = _systemctl(["show", name, "--property=" + ",".join(SHOWN_PROPERTIES)], user=user)
    props: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def unit_file_differs(path: Path, text: str) -> bool | None:
    """Whether the unit file on disk says something else than ``text``; None if it is absent."""
    try:
        return path.read_text() != text
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SystemdError(f"cannot read {path}: {os.strerror(exc.errno or 0)}") from None
