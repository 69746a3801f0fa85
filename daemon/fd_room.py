"""Room in the daemon's descriptor table, made once before its services need it.

The kernel grows a process's descriptor table by doubling (64, 128, 256, ... slots) when a
descriptor above its size is opened, and while the table is shared by more than one thread
(the daemon's ZeroMQ I/O threads start at the control socket's bind) each growth waits for an
RCU grace period (``expand_fdtable``: ``synchronize_rcu``). On this 2-core VM one wait was 5-13
ms: a cold start of 50 services grew the table three times after the bind (64, the size a
launcher with few descriptors open passes on, to 512: ~20 ms of ~260; one FIFO open alone took
13 ms), one of 500 six times. ``make_room`` asks once for what
the services will hold at their busiest (``FDS_PER_SERVICE`` each), before the bind: one growth,
no wait; a reload that adds services asks again, one growth and one wait instead of several.

The room is taken with ``F_DUPFD_CLOEXEC`` (the lowest free descriptor at or above the top, so
nothing open is ever replaced) and given back at once; the table keeps its size. A table of
4,096 slots is 32 KiB of kernel memory. Never more than the soft RLIMIT_NOFILE allows, nor
``MOST``.
"""

from __future__ import annotations

import fcntl
import os
import resource

__all__ = ["FDS_PER_SERVICE", "MOST", "make_room"]

#: Descriptors one service holds at its busiest: the read end, write end and keeper of its two
#: FIFOs and its cgroup.procs while its spawn is prepared, two spools, Popen's error pipe.
#: Measured: 50 services peaked at descriptor 476, 500 stayed under 4,096.
FDS_PER_SERVICE = 8
#: The daemon's own: sockets, its log, the lock, state.json, the audit trail.
_BASE = 64
#: The most slots asked for (256 KiB of table), whatever the service count.
MOST = 1 << 15


def make_room(services: int) -> int:
    """Grow the table to hold what ``services`` services need; the top descriptor the table
    now holds room for, or 0 when nothing was asked (the limit allows no more than it has)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = min(_BASE + FDS_PER_SERVICE * max(services, 0), MOST)
    if soft != resource.RLIM_INFINITY:
        top = min(top, soft - 1)
    if top < _BASE:
        return 0
    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        taken = fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top)
    except OSError:  # EMFILE: every descriptor from top up is open, or the limit moved
        return 0
    finally:
        os.close(probe)
    os.close(taken)
    return top
