"""Disk usage of a runtime tree, per service and category, measured with ``os.scandir``.

What is counted, everywhere in this module:

- a *file* is every directory entry that is not a directory: regular files, symlinks (never
  followed; they count with their own lstat size) and the odd socket or FIFO in ``temp/``;
- ``bytes`` is the apparent size, ``st_size``, like ``du -sb`` (``--apparent-size``), except
  that directories themselves add nothing: only the files in them count, so a report is the
  sum of ``find ROOT ! -type d -printf '%s\\n'``, with hard links counted once;
- a file with several hard links counts once per report (per :func:`disk_usage` or
  :func:`scan_usage` call), as ``du`` does, and always in the same place: with the unit
  (service and category) whose path sorts first, however the scan was split;
- a directory that cannot be read (permissions, vanished mid-scan, a path longer than
  PATH_MAX) is skipped, not fatal; a path that does not exist measures zero.

Speed: the scan opens each directory once and stats its entries relative to that descriptor
(``fstatat``), about what GNU ``du`` does. Python still spends about as long per file as the
syscall itself, so a big tree is split into units (one per service and category, split further
when there are few) and, when the scan has run for a while on a machine with two or more
cores, a second interpreter (``python -I -S``, no ``du`` or other tool) takes half of the
remaining units. Threads do not help: the GIL hand-off on every ``stat`` made them 2-3x
slower than one thread. The split never changes the result; if the helper cannot start or
fails, this process scans its units itself. ``scripts/bench du`` measures all of it.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import msgspec

from runyard.runtime.core.errors import RunyardError
from runyard.runtime.core.manifest import load_manifest
from runyard.runtime.core.tree import RESERVED_NAMES, TOP_DIRS, RuntimeTree

__all__ = ["DiskReport", "ServiceUsage", "Usage", "disk_usage", "scan_usage"]

CATEGORIES = ("bin", "data", "logs", "config", "cache")


class Usage(msgspec.Struct):
    """Apparent bytes and number of files (non-directories) under some paths."""

    bytes: int = 0
    files: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.bytes + other.bytes, self.files + other.files)


class ServiceUsage(msgspec.Struct):
    """One service: its bin/, data/, logs/ and config/ dirs and its cached archives."""

    name: str
    bin: Usage
    data: Usage
    logs: Usage
    config: Usage
    cache: Usage
    total: Usage


class DiskReport(msgspec.Struct):
    """Usage of a whole runtime tree. ``total`` is the sum of every service and ``other``."""

    root: str
    services: list[ServiceUsage]
    #: What belongs to no service: manifest.json, temp/, the cache index, Runyard's own
    #: logs/runyard and config/runyard, archives no index entry attributes, stray files.
    other: Usage
    total: Usage
    #: The filesystem the tree is on, bytes free (unprivileged) and its size: filled in by the
    #: daemon for the wire (disk_usage leaves them out: they change by the second).
    disk_free: int | None = None
    disk_size: int | None = None


# The scanner is kept as source text so the helper interpreter can run it with
# `python -I -S -c` without importing this package (runtime/__init__ imports a lot, and
# needs site-packages). This process runs the very same text: one implementation.
_SCANNER_SOURCE = r'''
import os

_BY_FD = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_SEP = os.sep


def scan(top, into=None):
    """(bytes, files, links) of the files below directory ``top``.

    ``links`` lists (st_dev, st_ino, st_size) of files with st_nlink > 1; they are not in
    bytes/files, the caller counts each inode once. When ``into`` is a list, subdirectories
    of ``top`` are appended to it instead of being scanned. Iterative, never follows
    symlinks, skips what it cannot read.
    """
    total = count = 0
    links = []
    stack = [top]
    push = stack.append if into is None else into.append
    while stack:
        path = stack.pop()
        try:
            handle = os.open(path, _O_DIR) if _BY_FD else path
        except OSError:
            continue
        try:
            # With a descriptor, entry.stat() is an fstatat() relative to it: no path walk.
            with os.scandir(handle) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        push(path + _SEP + entry.name)
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        links.append((st.st_dev, st.st_ino, st.st_size))
                    else:
                        total += st.st_size
                        count += 1
        except OSError:
            pass
        finally:
            if _BY_FD:
                os.close(handle)
    return total, count, links


def main():
    import marshal
    import sys

    paths = marshal.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(marshal.dumps([scan(path) for path in paths]))
'''

_scanner: dict[str, Any] = {"__name__": "runyard.runtime.core.du._scanner"}
exec(compile(_SCANNER_SOURCE, "<runtime.core.du scanner>", "exec"), _scanner)
_scan: Callable[..., tuple[int, int, list[tuple[int, int, int]]]] = _scanner["scan"]

#: Split the roots, a level at a time, until there are this many units (or 3 levels down).
_SPLIT_TARGET = 32
_SPLIT_LEVELS = 3
#: Hand half of what is left to a helper once a scan has taken this long (parallel=None).
_HELPER_AFTER = 0.02

_Piece = tuple[str, int, tuple[int, int, list[tuple[int, int, int]]]]  # path, slot, scan()
_OTHER = 0


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _Helper:
    """A second interpreter scanning some units, so that two cores share the work."""

    def __init__(self, proc: subprocess.Popen[bytes], units: list[tuple[int, str]]) -> None:
        self.proc = proc
        self.units = units

    @classmethod
    def start(cls, units: list[tuple[int, str]]) -> _Helper | None:
        if not sys.executable or getattr(sys, "frozen", False):
            return None  # a frozen app's executable is the app, not a Python to run -c with
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SCANNER_SOURCE + "\nmain()\n"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            return None
        assert proc.stdin is not None
        try:
            with proc.stdin:
                proc.stdin.write(marshal.dumps([path for _, path in units]))
        except OSError:
            cls(proc, units).abandon()
            return None
        return cls(proc, units)

    def results(self) -> list[_Piece] | None:
        """The helper's pieces, or None when it failed (the caller then scans its units)."""
        assert self.proc.stdout is not None
        with self.proc.stdout:
            out = self.proc.stdout.read()
        if self.proc.wait() != 0:
            return None
        try:
            scanned = marshal.loads(out)
        except (EOFError, ValueError, TypeError):
            return None
        if not isinstance(scanned, list) or len(scanned) != len(self.units):
            return None
        return [
            (path, slot, tuple(res)) for (slot, path), res in zip(self.units, scanned, strict=True)
        ]

    def abandon(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _measure(
    roots: list[tuple[int, str]], pieces: list[_Piece], slots: int, parallel: bool | None
) -> list[Usage]:
    """Scan every (slot, directory) root into ``pieces``, then add them up by slot."""
    started = time.monotonic()
    units = roots
    for _ in range(_SPLIT_LEVELS):
        if len(units) >= _SPLIT_TARGET:
            break
        deeper: list[tuple[int, str]] = []
        for slot, path in units:
            subdirs: list[str] = []
            pieces.append((path, slot, _scan(path, subdirs)))
            deeper.extend((slot, sub) for sub in subdirs)
        units = deeper

    may_help = parallel is True or (parallel is None and _cores() >= 2)
    helper: _Helper | None = None
    queue = sorted(units, key=itemgetter(1), reverse=True)  # pop() takes the first path
    try:
        while queue:
            if (
                may_help
                and len(queue) >= 2
                and (parallel or time.monotonic() - started >= _HELPER_AFTER)
            ):
                may_help = False
                helper = _Helper.start(queue[1::2])
                if helper is not None:
                    queue = queue[0::2]
            slot, path = queue.pop()
            pieces.append((path, slot, _scan(path)))
        if helper is not None:
            theirs = helper.results()
            if theirs is None:
                theirs = [(path, slot, _scan(path)) for slot, path in helper.units]
            pieces.extend(theirs)
            helper = None
    finally:
        if helper is not None:
            helper.abandon()

    # Add up in path order, so a hard-linked inode lands in the same slot however split.
    totals = [[0, 0] for _ in range(slots)]
    seen: set[tuple[int, int]] = set()
    for _path, slot, (size, count, links) in sorted(pieces, key=itemgetter(0)):
        acc = totals[slot]
        acc[0] += size
        acc[1] += count
        for dev, ino, linked_size in links:
            if (dev, ino) not in seen:
                seen.add((dev, ino))
                acc[0] += linked_size
                acc[1] += 1
    return [Usage(size, count) for size, count in totals]


def _entries(path: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _file_piece(path: str, slot: int, st: os.stat_result) -> _Piece:
    if st.st_nlink > 1:
        return (path, slot, (0, 0, [(st.st_dev, st.st_ino, st.st_size)]))
    return (path, slot, (st.st_size, 1, []))


def scan_usage(path: str | os.PathLike[str], *, parallel: bool | None = None) -> Usage:
    """Bytes and files below ``path`` (a file measures itself; a missing path is zero).

    ``parallel``: None lets a big scan hand half its work to a helper interpreter when there
    are two cores, True does so from the start, False never does; the result is the same.
    """
    top = os.fspath(path)
    try:
        st = os.lstat(top)
    except OSError:
        return Usage()
    if not stat.S_ISDIR(st.st_mode):
        return _measure([], [_file_piece(top, 0, st)], 1, parallel)[0]
    return _measure([(0, top)], [], 1, parallel)[0]


def disk_usage(
    tree: RuntimeTree,
    cache_owner: Callable[[str], str | None] | None = None,
    *,
    parallel: bool | None = None,
) -> DiskReport:
    """Usage of every service in ``tree``, by category, and of everything else.

    Services are the subdirectories of bin/, data/, logs/ and config/ (except the reserved
    ``runyard``) plus the services in the manifest, when it can be read. ``cache_owner``
    maps an archive's file name in cache/archives/ to its service (None: nobody's, counted
    in ``other``). ``parallel`` is as for :func:`scan_usage`.
    """
    names: set[str] = set()
    # A broken or missing manifest is no error here: the directories still say who is there.
    with contextlib.suppress(RunyardError, OSError):
        names.update(entry.name for entry in load_manifest(tree).services)
    plan = _ScanPlan(names)
    _plan_tree(plan, tree, cache_owner)
    usage = _measure(plan.roots, plan.pieces, len(plan.slot_of) + 1, parallel)
    return _report(tree, plan, usage)


class _ScanPlan:
    """What a scan measures and where each byte is counted: directories to walk (``roots``)
    and files already stat'ed (``pieces``), each under a slot; one slot per (service,
    category) that has something, slot ``_OTHER`` for the rest."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.slot_of: dict[tuple[str, str], int] = {}
        self.roots: list[tuple[int, str]] = []
        self.pieces: list[_Piece] = []

    def slot(self, name: str, category: str) -> int:
        if name in RESERVED_NAMES:
            return _OTHER
        self.names.add(name)
        return self.slot_of.setdefault((name, category), len(self.slot_of) + 1)

    def place(self, entry: os.DirEntry[str], where: int) -> None:
        """Queue a directory, or count a file, under slot ``where``."""
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                self.roots.append((where, entry.path))
            else:
                self.pieces.append(
                    _file_piece(entry.path, where, entry.stat(follow_symlinks=False))
                )


def _plan_tree(
    plan: _ScanPlan, tree: RuntimeTree, cache_owner: Callable[[str], str | None] | None
) -> None:
    """Each top-level entry of the tree: a category dir's subdirs are services, cached
    archives belong to their owner, everything else is ``other``."""
    categories = {
        str(tree.bin_dir): "bin",
        str(tree.data_dir): "data",
        str(tree.logs_dir): "logs",
        str(tree.config_dir): "config",
    }
    for entry in _entries(str(tree.root)):
        category = categories.get(entry.path)
        # An installed runtime bundle links its shared top-level dirs (versions/<v>/data ->
        # ../../data): those links are followed, no deeper one is.
        try:
            top_dir = entry.is_dir(follow_symlinks=entry.name in TOP_DIRS)
        except OSError:
            top_dir = False
        if category and top_dir:
            for sub in _entries(entry.path):
                is_service = sub.is_dir(follow_symlinks=False)
                plan.place(sub, plan.slot(sub.name, category) if is_service else _OTHER)
        elif entry.path == str(tree.cache_dir) and top_dir:
            _plan_cache(plan, entry.path, str(tree.archives_dir), cache_owner)
        elif top_dir:
            plan.roots.append((_OTHER, entry.path))
        else:
            plan.place(entry, _OTHER)


def _plan_cache(
    plan: _ScanPlan,
    cache_dir: str,
    archives_dir: str,
    cache_owner: Callable[[str], str | None] | None,
) -> None:
    """cache/: an archive in cache/archives/ is its owner's (``cache``), the rest ``other``."""
    for sub in _entries(cache_dir):
        if sub.path == archives_dir and sub.is_dir(follow_symlinks=False):
            for archive in _entries(sub.path):
                owner = cache_owner(archive.name) if cache_owner else None
                plan.place(archive, _OTHER if owner is None else plan.slot(owner, "cache"))
        else:
            plan.place(sub, _OTHER)


def _report(tree: RuntimeTree, plan: _ScanPlan, usage: list[Usage]) -> DiskReport:
    """Slots back to services by category, with their totals and the grand total."""
    services = []
    for name in sorted(plan.names):
        parts = {
            c: usage[plan.slot_of[(name, c)]] if (name, c) in plan.slot_of else Usage()
            for c in CATEGORIES
        }
        total = Usage()
        for part in parts.values():
            total += part
        services.append(ServiceUsage(name=name, total=total, **parts))
    other = usage[_OTHER]
    grand = other
    for service in services:
        grand += service.total
    return DiskReport(root=str(tree.root), services=services, other=other, total=grand)
