"""Room in the daemon's descriptor table, made once before its services need it.

The kernel grows a process's descriptor table by doubling (64, 128, 256, ... slots) when a
descriptor above its size is opened, and while the table is shared by more than one thread
(the daemon's ZeroMQ I/O threads start at the control socket's bind) each growth waits for an
RCU grace period (``expand_fdtable``: ``synchronize_rcu``). On this 2-core VM one wait was 5-13
ms: a cold start of 50 services grew the table three times after the bind (64, the size a
launcher with few descriptors open passes on, to 512: ~20 ms of ~260; one FIFO open alone took
13 ms), one of 500 six times. ``make_room`` asks once for what the services will hold at
their busiest (``FDS_PER_SERVICE`` each), before the bind: one growth, no wait; a reload that
adds services asks again, one growth and one wait instead of several.

The room is taken with ``F_DUPFD_CLOEXEC`` (the lowest free descriptor at or above the top, so
nothing open is ever replaced) and given back at once; the table keeps its size. A table of
4,096 slots is 32 KiB of kernel memory; never more than ``MOST``.

**RLIMIT_NOFILE.** When the room is above the soft limit (1,024 in a login shell and in a systemd
unit; 500 services hold ~3,100 descriptors), the daemon raises its soft limit to the hard one,
as systemd asks of a program that needs more (before, a daemon of 500 services under 1,024
crashed at its 251st service: EMFILE). Its services get the soft limit it had back
(``runtime/core/nofile.py``, set in the child's step: ``select()`` and programs that size
tables by the limit expect the system's), unless they set their own ``nofile``. When the hard limit is
too low as well, ``shortfall`` says so in one line.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource

from runyard.runtime.core.errors import ConfigError
from runyard.runtime.core.nofile import children_nofile, raise_soft

__all__ = ["FDS_PER_SERVICE", "MOST", "make_room", "out_of_files", "shortfall"]

#: Descriptors one service holds at its busiest: the read end, write end and keeper of its two
#: FIFOs and its cgroup.procs while its spawn is prepared, two spools, Popen's error pipe.
#: Measured: 50 services peaked at descriptor 476, 500 stayed under 4,096.
FDS_PER_SERVICE = 8
#: The daemon's own: sockets, its log, the lock, state.json, the audit trail.
_BASE = 64
#: The most slots asked for (256 KiB of table), whatever the service count.
MOST = 1 << 15


def _room(services: int) -> int:
    return min(_BASE + FDS_PER_SERVICE * max(services, 0), MOST)


def make_room(services: int, log: logging.Logger | None = None) -> int:
    """Grow the table to hold what ``services`` services need, raising the soft limit first
    when it is lower (a line in ``log`` says so, or what is short); the top descriptor the table
    now holds room for, or 0 when nothing was asked (the limit allows no more than the
    daemon's own)."""
    want = _room(services)
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    soft = raise_soft(want)
    if log is not None and soft != before:
        log.info(
            "RLIMIT_NOFILE raised from %d to %d for %d services (their programs get %s)",
            before,
            soft,
            services,
            children_nofile(),
        )
    if log is not None and (short := shortfall(services)) is not None:
        log.warning("%s", short)
    top = want if soft == resource.RLIM_INFINITY else min(want, soft - 1)
    if top < _BASE:
        return 0
    try:
        probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # EMFILE already: nothing to make room with (the spawns will say why)
        return 0
    try:
        taken = fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top)
    except OSError:  # EMFILE: every descriptor from top up is open, or the limit moved
        return 0
    finally:
        os.close(probe)
    os.close(taken)
    return top


def shortfall(services: int) -> str | None:
    """One line when the limit leaves ``services`` services less than their room, else None."""
    want = _room(services)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or want < soft:
        return None
    return (
        f"{services} services may hold up to {want} open files and RLIMIT_NOFILE allows {soft}:"
        " raise its hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn in a shell)"
    )


def out_of_files(exc: OSError) -> ConfigError | None:
    """One line for the daemon out of descriptors (EMFILE), naming the limit; None otherwise."""
    if exc.errno != errno.EMFILE:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    where = f" at {exc.filename}" if exc.filename else ""
    return ConfigError(
        f"out of open files{where}: RLIMIT_NOFILE is {soft} (hard {hard}); raise its hard limit"
        " (LimitNOFILE= in the systemd unit, ulimit -Hn in a shell)"
    )
