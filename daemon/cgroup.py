"""Containment by cgroup v2: one cgroup per service, so nothing a service forks can leave it.

This module owns the cgroup directories. ``process`` puts a child in its cgroup and ends a stop
with ``kill``; the runner asks for a service's cgroup before a spawn and removes it after.

Why it is built this way:

- **The mount is found, never assumed.** cgroup v2 lives at /sys/fs/cgroup on a unified host,
  at /sys/fs/cgroup/unified beside v1 controllers on a hybrid one, or nowhere: the first
  ``cgroup2`` line of /proc/self/mountinfo says which.
- **Our subtree hangs under the daemon's own cgroup**, ``<mount><own>/runyard-<hash>/<service>``
  (the hash names the runtime tree, so two daemons on one box never share a cgroup): that is
  where a systemd delegation (``Delegate=yes``) lets us write, and as root anywhere will do.
  systemd names its units ``name.service`` in a slice; a plain ``<service>`` under a per-tree
  directory is the same idea without a unit namespace we do not have.
- **Membership is the kernel's.** ``cgroup.procs`` lists every process of the service, however
  it double-forked, and a stop ends with ``cgroup.kill`` (SIGKILL to all, atomically, new forks
  included) then waits for ``cgroup.events`` to say ``populated 0``.
- **Nothing is left behind**: an empty cgroup is removed (rmdir) after each stop or exit.
- **A delegated unit's leaf is used, never made.** cgroup v2 lets a cgroup enable controllers for
  its children only while it holds no process, and a systemd unit puts the daemon in the unit's
  cgroup. With ``DelegateSubgroup=supervisor`` (systemd 254+) systemd starts the daemon in the
  leaf ``<unit>/supervisor`` instead; the daemon then takes the unit's cgroup as its base
  (``own_base``): the tree's directory is the leaf's sibling, and the controllers are enabled on
  the base. Only when the base is ours: marked delegated by systemd (the ``user.delegate`` or
  ``trusted.delegate`` xattr, systemd 251+), holding no process, writable; else the tree's
  directory stays under the daemon's own cgroup and the log says why. The daemon never moves
  itself there: with ``KillMode=process`` its services outlive it, so the unit's cgroup would keep
  its controllers enabled, and systemd could not put the next daemon in it (EBUSY), while with
  ``DelegateSubgroup=`` every daemon it starts goes to the leaf.

Where no cgroup can be made (no cgroup2 mount, not writable, or ``containment = "subreaper"``)
the daemon is a child subreaper instead (``subreaper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from runyard.runtime.core.digest import sha256

__all__ = [
    "CgroupTree",
    "cgroup2_mount",
    "cgroup_of",
    "enable_controllers",
    "join",
    "kill",
    "members",
    "own_base",
    "populated",
    "remove",
    "subtree_controllers",
    "wait_empty",
]

_FIRST_POLL = 0.002
_MAX_POLL = 0.05


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where cgroup v2 is mounted, or None. (Fields: ... mount point (5th) ... - fstype ...)"""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4].replace("\\040", " "))
    return None


def cgroup_of(pid: int | str = "self") -> str | None:
    """The v2 cgroup path of ``pid`` (``/`` for the root), from its ``0::`` line; None if gone."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n").removesuffix(" (deleted)")
    except OSError:
        return None
    return None


#: The leaf a unit with ``DelegateSubgroup=supervisor`` starts the daemon in.
SUPERVISOR_LEAF = "supervisor"
#: The xattrs systemd sets on a cgroup it delegates (``trusted.`` as root, ``user.`` for all).
_DELEGATE_MARKS = ("user.delegate", "trusted.delegate")


def own_base(mount: Path | None = None, own: str | None = None) -> tuple[Path | None, str]:
    """The cgroup the tree's directory goes under: the daemon's own, or the delegated cgroup
    whose ``supervisor`` leaf the daemon runs in. Returns it (None without cgroup v2) and, when
    a leaf was found but its parent is not ours, why the daemon's own is used."""
    mount = mount or cgroup2_mount()
    own = own if own is not None else cgroup_of()
    if mount is None or own is None:
        return None, ""
    here = mount / own.lstrip("/")
    if here.name != SUPERVISOR_LEAF or here == mount:
        return here, ""
    why = _not_ours(here.parent)
    if why:
        return here, f"{here.parent} is not a cgroup delegated to this daemon ({why})"
    return here.parent, ""


def _not_ours(base: Path) -> str:
    """Why ``base`` may not hold the tree's directory beside the daemon's leaf ("" if it may)."""
    marks = []
    for name in _DELEGATE_MARKS:
        with contextlib.suppress(OSError):
            marks.append(os.getxattr(base, name))
    if b"1" not in marks:
        return "no user.delegate or trusted.delegate mark: systemd's Delegate=yes sets one"
    inside = members(base)
    if inside:
        return f"it holds processes: {', '.join(map(str, inside[:5]))}"
    if not all(os.access(p, os.W_OK) for p in (base, base / "cgroup.subtree_control")):
        return "not writable by this daemon"
    return ""


def _dir_name(root: Path) -> str:
    """``runyard-<hash>``: the tree's directory, named after the tree (one per tree per box)."""
    digest = sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:12]
    return f"runyard-{digest}"


class CgroupTree:
    """The daemon's cgroup directory for one runtime tree; a service's cgroup is a child."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def path_for(root: Path) -> Path | None:
        """Where the tree's cgroup directory is (made or not); None without cgroup v2."""
        base, _ = own_base()
        return None if base is None else base / _dir_name(root)

    @classmethod
    def create(cls, root: Path) -> tuple[CgroupTree | None, str]:
        """The tree's cgroup directory, made now; or None and why cgroups cannot be used."""
        mount, own = cgroup2_mount(), cgroup_of()
        base, _ = own_base(mount, own)
        if mount is None or own is None or base is None:
            return None, "no cgroup v2 mount"
        if base != mount / own.lstrip("/"):
            enable_controllers(base)  # delegated to us, the daemon in its leaf: no process
        path = base / _dir_name(root)
        try:
            path.mkdir(exist_ok=True)
            probe = path / ".probe"
            probe.mkdir(exist_ok=True)  # a directory we may create is one we may fill
            probe.rmdir()
        except OSError as exc:
            return None, f"cannot create a cgroup under {path.parent}: {exc.strerror or exc}"
        enable_controllers(path)
        # Empty ones a killed daemon left (their removal comes just after a stop); a populated
        # one (a service to adopt) refuses the rmdir.
        with contextlib.suppress(OSError):
            for child in path.iterdir():
                if child.is_dir():
                    remove(child)
        return cls(path), ""

    def service(self, name: str) -> Path:
        """The service's cgroup, created if missing (a left-over one is reused once empty)."""
        return self.make_service(name)[0]

    def make_service(self, name: str) -> tuple[Path, bool]:
        """The service's cgroup and whether it was made now (then it holds no process)."""
        path = self.path / name
        try:
            path.mkdir()
        except FileExistsError:
            return path, False
        return path, True

    def close(self) -> None:
        """Remove the tree's directory if no service cgroup is left in it."""
        with contextlib.suppress(OSError):
            self.path.rmdir()


#: The controllers the services' limits use (daemon/cgroup_limits.py).
CONTROLLERS = ("memory", "pids", "cpu")


def enable_controllers(path: Path) -> set[str]:
    """Enable for ``path``'s children the limit controllers it has itself (``cgroup.controllers``,
    given by its parent): the tree's directory holds no process, so the kernel's no-internal-
    process rule allows it. Returns what is enabled; an error leaves limits to sampling."""
    try:
        available = set((path / "cgroup.controllers").read_text().split())
    except OSError:
        return set()
    for controller in (c for c in CONTROLLERS if c in available):
        # One write each: the kernel takes a line all or nothing, and cpu alone may be refused
        # (a real-time thread in the subtree) without costing memory and pids.
        with contextlib.suppress(OSError):
            (path / "cgroup.subtree_control").write_text(f"+{controller}")
    return subtree_controllers(path)


def subtree_controllers(path: Path) -> set[str]:
    """The controllers ``path`` enables for its children (none when it cannot be read)."""
    try:
        return set((path / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def join(path: Path, pid: int) -> None:
    """Move ``pid`` (its whole thread group) into the cgroup: one write to ``cgroup.procs``."""
    fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def members(path: Path) -> list[int]:
    """Pids in the cgroup (none when it is gone)."""
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(pid) for pid in text.split()]


def populated(path: Path) -> bool:
    """Whether any process is still in the cgroup (``cgroup.events``; False when it is gone)."""
    try:
        text = (path / "cgroup.events").read_text()
    except OSError:
        return False
    return "populated 1" in text


def kill(path: Path) -> None:
    """SIGKILL every process in the cgroup, forks under way included (kernel 5.14+).

    Older kernels have no ``cgroup.kill``: then each member is killed by pid, in rounds, by
    ``wait_empty``'s caller rescanning.
    """
    try:
        (path / "cgroup.kill").write_text("1")
    except FileNotFoundError:
        for pid in members(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    except OSError:
        pass  # the cgroup is gone: nothing to kill


async def wait_empty(path: Path, deadline: float) -> bool:
    """Wait until the cgroup is unpopulated (True) or ``deadline`` (monotonic) passes."""
    delay = _FIRST_POLL
    while populated(path):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not (path / "cgroup.kill").exists():
            kill(path)  # no cgroup.kill: newcomers are killed one by one each round
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_POLL)
    return True


def remove(path: Path) -> bool:
    """Remove an empty cgroup; False when it still holds processes (or cannot be removed)."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
