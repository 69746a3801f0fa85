"""Who a service runs as: the ``user`` and ``group`` settings resolved against the user database.

Resolved once, when the services are loaded, so an unknown name is one line at load and never a
surprise at spawn; the result (`RunAs`) is plain numbers, so a later edit of /etc/passwd shows as
a changed definition at the next reload. Like ``initgroups(3)``, a user's supplementary groups
are every group of /etc/group that lists it, plus its primary group.

Only root may become someone else: a daemon that runs as another user can run its services only
as itself, and `resolve_run_as` refuses anything else here, before a spawn could fail with EPERM.
"""

from __future__ import annotations

import grp
import os
import pwd

import msgspec

from runyard.runtime.core.errors import SupervisionError

__all__ = ["RunAs", "daemon_identity", "resolve_run_as"]

#: (uid_t)-1 means "unchanged" to setresuid(2): never a real id.
_ID_MAX = 2**32 - 2


class RunAs(msgspec.Struct, frozen=True, kw_only=True):
    """A service's credentials: set in the child, in this order, before exec."""

    #: The user's name (or its number when the database has no name for it): for messages.
    user: str
    uid: int
    gid: int
    #: Supplementary groups (setgroups), sorted, no duplicates.
    groups: tuple[int, ...]


def daemon_identity() -> RunAs:
    """The daemon's own credentials: what a service gets when it sets no ``user``."""
    uid = os.geteuid()
    return RunAs(
        user=_user_name(uid),
        uid=uid,
        gid=os.getegid(),
        groups=tuple(sorted(set(os.getgroups()))),
    )


def resolve_run_as(
    user: str | int | None, group: str | int | None, own: RunAs | None = None
) -> RunAs:
    """``user`` and ``group`` (names or numbers, None = unset) as numbers.

    No ``user``: the daemon's own identity (with ``group`` as its group, if set). A ``user``
    without ``group``: that user's primary group. Raises SupervisionError, one line, for an
    unknown name, a bad number, or a change of identity a daemon that is not root cannot make;
    its text starts with the setting it is about (``user: no user named 'x' on this system``).
    ``own``: ``daemon_identity()``, taken once by a caller that resolves many services.
    """
    own = daemon_identity() if own is None else own
    if user is None:
        run_as = own
    else:
        uid, name, primary = _lookup_user(user)
        run_as = RunAs(user=name, uid=uid, gid=primary, groups=_groups_of(name, primary))
    if group is not None:
        gid = _lookup_group(group)
        groups = run_as.groups if user is not None else (gid,)
        run_as = msgspec.structs.replace(run_as, gid=gid, groups=tuple(sorted({gid, *groups})))
    if own.uid != 0 and (run_as.uid, run_as.gid) != (own.uid, own.gid):
        key = "user" if user is not None else "group"
        raise SupervisionError(
            f"{key}: runs as {_describe(run_as)} but the daemon runs as {_describe(own)} and is not "
            "root: only a daemon running as root can start a service as another user or group"
        )
    if own.uid != 0:
        return own  # the daemon itself, supplementary groups and all: nothing to change
    return run_as


def _lookup_user(user: str | int) -> tuple[int, str, int]:
    """(uid, name, primary gid); a number with no entry keeps its number as group too."""
    if isinstance(user, bool):
        raise SupervisionError(f"user: {user!r} is not a user name or number")
    if isinstance(user, int) or user.strip().isdigit():
        uid = _number(user, "user")
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return uid, str(uid), uid  # like systemd's User=: a bare number needs no entry
        return uid, entry.pw_name, entry.pw_gid
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SupervisionError(f"user: no user named {user!r} on this system") from None
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def _lookup_group(group: str | int) -> int:
    if isinstance(group, bool):
        raise SupervisionError(f"group: {group!r} is not a group name or number")
    if isinstance(group, int) or group.strip().isdigit():
        return _number(group, "group")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SupervisionError(f"group: no group named {group!r} on this system") from None


def _number(value: str | int, what: str) -> int:
    n = int(value)
    if not 0 <= n <= _ID_MAX:
        raise SupervisionError(f"{what}: {value!r} is not a {what} number (0 to {_ID_MAX})")
    return n


def _groups_of(name: str, primary: int) -> tuple[int, ...]:
    try:
        return tuple(sorted(set(os.getgrouplist(name, primary))))
    except OSError:
        return (primary,)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _describe(run_as: RunAs) -> str:
    return f"{run_as.user} (uid {run_as.uid}, gid {run_as.gid})"
