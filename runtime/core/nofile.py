"""The process's soft RLIMIT_NOFILE, raised for itself and given back to what it runs.

A process that needs more descriptors than the soft limit (1,024 in a login shell and in a
systemd unit) raises its soft limit up to the hard one, as systemd asks of such programs, and
gives every program it starts the soft limit it had: ``select()`` and programs that size
tables by the limit expect the system's. The daemon raises it (``daemon/fd_room.py``, for its
services' descriptors); whatever it then starts gets the old one back: services (in their
spawn step, ``daemon/spawning.py``), engines (``runtime/runs/process.py``) and exec probes
(``daemon/probes.py``) through ``restore_in_child``, a ``preexec_fn`` only while it is raised
(else None, and CPython may vfork).
"""

from __future__ import annotations

import resource
from collections.abc import Callable

__all__ = ["children_nofile", "raise_soft", "restore_in_child"]

#: fs.nr_open's default: no soft limit above it is taken, whatever the hard one says.
_NR_OPEN = 1 << 20
_INFINITY = resource.RLIM_INFINITY
#: The soft limit before this process raised it (what children get back); None: never raised.
_children_soft: int | None = None


def raise_soft(want: int) -> int:
    """Raise the soft limit above ``want`` if it is not: to the hard one, or to ``want + 1``
    when the kernel takes no more (fs.nr_open). The soft limit in effect."""
    global _children_soft
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == _INFINITY or want < soft:
        return soft
    ceiling = _NR_OPEN if hard == _INFINITY else min(hard, _NR_OPEN)
    for new in (ceiling, min(want + 1, ceiling)):
        if new <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):  # above fs.nr_open
            continue
        if _children_soft is None:
            _children_soft = soft
        return new
    return soft


def children_nofile() -> int | None:
    """The soft limit a started program gets (this process's before it raised its own), or
    None when it was never raised (then a child inherits it as it is)."""
    return _children_soft


def _restore() -> None:
    """In the child, before exec: the soft limit back, the hard one as it is."""
    if _children_soft is not None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(_children_soft, hard), hard))


def restore_in_child() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child the old soft limit, or None when there is none to
    give back (no child step: CPython may vfork)."""
    return None if _children_soft is None else _restore
