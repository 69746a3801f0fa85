"""The systemd unit that starts a tree's daemon at boot: its name, its text. Pure, no I/O but
what `writable_paths` reads (which links a tree has).

Why the unit says what it says (docs/OPERATIONS.md, "Starting at boot", has the long form):

- ``Type=notify``: the daemon sends READY=1 once its control socket serves (daemon/main.py), so
  units ordered ``After=`` it start when clients can talk to it, not when Python was exec'd.
- ``KillMode=process``: systemd signals the daemon alone. On SIGTERM (a stop or a restart of
  the unit) the daemon stops its services itself, in dependency order with each one's stop
  signal and timeout; when it crashes (or is killed) the services keep running, Restart=
  brings it back and it re-adopts them from temp/state.json. The default (``control-group``)
  would kill them all with it.
- ``Delegate=yes``: the daemon makes one cgroup per service under its own (daemon/cgroup.py);
  systemd must leave that subtree to it. ``DelegateSubgroup=supervisor`` (written when the
  box's systemd is 254 or newer; older ones would warn of an unknown key at every load) starts
  each daemon in the leaf ``<unit>/supervisor``, so the unit's cgroup holds no process and may
  enable the memory, pids and cpu controllers for the services' cgroups beside the leaf; the
  daemon never moves itself there, since with KillMode=process its services outlive it and the
  next daemon must still be placeable (daemon/cgroup.py, ``own_base``).
- Hardening: every setting is inherited by the supervised services, so only what no sane
  service of a tree needs is taken away (the table in docs/OPERATIONS.md says what was left
  out and why). A user unit gets no mount-namespace settings: a user manager can only apply
  them through a user namespace (PrivateUsers=), which maps every other uid to nobody.

Quoting: systemd expands ``%`` specifiers everywhere and ``$`` in ExecStart, and splits on
whitespace with C-style quotes; `unit_word` writes a path so that it comes back as it was, and
refuses the few characters (quotes, backslash, control characters) whose unquoting differs from
one setting to the next.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from runyard.runtime.core.errors import UsageError

__all__ = [
    "DELEGATE_SUBGROUP_SINCE",
    "TOP_LEVEL_LINKS",
    "UNIT_HEADER",
    "daemon_argv",
    "render_unit",
    "unit_dir",
    "unit_name",
    "unit_word",
    "writable_paths",
]

#: The first line of every unit we write: a file without it is not ours to replace or remove.
UNIT_HEADER = '# Written by `runyard service install` (docs/OPERATIONS.md, "Starting at boot");'
#: Top-level entries of a tree that may be links out of it (an install prefix's shared dirs).
TOP_LEVEL_LINKS = ("data", "logs", "cache", "temp", "config/runyard")
#: The first systemd that knows ``DelegateSubgroup=``.
DELEGATE_SUBGROUP_SINCE = 254
#: Characters systemd allows in a unit name (unit_name_is_valid), the ``@`` of templates aside.
_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.\\-]+")
#: Longest unit name systemd accepts (UNIT_NAME_MAX).
UNIT_NAME_MAX = 255
_PLAIN = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")
#: What User= takes: a name (useradd's rule, loosely) or a uid.
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]+")
#: Where the unit of a tree under one of these may not see it with PrivateTmp=yes.
_TMP_DIRS = ("/tmp", "/var/tmp")


def unit_name(root: Path, name: str | None = None) -> str:
    """``runyard-ROOTNAME.service``, or ``name`` (``.service`` added); UsageError if invalid.

    A root name with characters systemd does not take in a unit name has them replaced by ``-``
    (``my tree`` -> ``runyard-my-tree.service``); an install prefix's ``DIR/current`` is named
    after DIR (every prefix has a ``current``); ``--name`` is taken as given or refused.
    """
    if name is None:
        base = root.parent.name if root.name == "current" and root.parent.name else root.name
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "tree"
        return f"runyard-{stem}.service"
    full = name if name.endswith(".service") else f"{name}.service"
    if not _UNIT_CHARS.fullmatch(full) or full.startswith(".") or len(full) > UNIT_NAME_MAX:
        raise UsageError(
            f"--name: {name!r} is not a unit name (letters, digits and ':_.\\-' only, "
            f"at most {UNIT_NAME_MAX} characters)"
        )
    return full


def unit_dir(user: bool, env: dict[str, str] | None = None) -> Path:
    """Where an administrator's units go: /etc/systemd/system, or the user's
    ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/systemd/user``)."""
    if not user:
        return Path("/etc/systemd/system")
    env = dict(os.environ) if env is None else env
    config = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "systemd" / "user"


def daemon_argv(
    python: str, root: Path, project: Path | None = None, license_file: Path | None = None
) -> list[str]:
    """What ExecStart runs: ``python -m runyard.daemon daemon --root ROOT [...]``.

    The interpreter, not the ``runyard`` script: ``sys.executable`` is the one that imports
    this very Runyard, from a venv (editable or not) or a system install alike, and the unit
    keeps working if a console script is shadowed or missing from PATH.
    """
    if not os.path.isabs(python):
        raise UsageError(f"the interpreter path {python!r} is not absolute")
    argv = [python, "-m", "runyard.daemon", "daemon", "--root", str(root)]
    if project is not None:
        argv += ["--project", str(project)]
    if license_file is not None:
        argv += ["--license", str(license_file)]
    return argv


def writable_paths(root: Path) -> list[Path]:
    """The tree, and where its top-level links lead when that is outside it (an install
    prefix's ``current/data -> ../../data``): all the daemon and its services may write."""
    paths = [root]
    real_root = Path(os.path.realpath(root))
    for entry in TOP_LEVEL_LINKS:
        target = Path(os.path.realpath(root / entry))
        if target.exists() and not target.is_relative_to(real_root) and target not in paths:
            paths.append(target)
    return paths


def unit_word(text: str, *, command: bool = False) -> str:
    """One word of a unit file line, read back by systemd as ``text``: ``%`` doubled (every
    line expands specifiers), ``$`` doubled in a ``command`` argument (ExecStart= expands
    variables there, not in the executable's path), double-quoted when it holds a space. Quotes, backslashes and control
    characters are refused: a tree path does not need them, and their unquoting rules differ
    from one setting to the next."""
    bad = sorted({c for c in text if c in "\\\"'" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise UsageError(
            f"{text!r}: a path written into a unit file cannot hold {' '.join(map(repr, bad))}"
        )
    text = text.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    return text if _PLAIN.fullmatch(text) else f'"{text}"'


def _under_tmp(paths: Sequence[Path]) -> bool:
    return any(str(p) == t or str(p).startswith(t + "/") for p in paths for t in _TMP_DIRS)


def render_unit(
    root: Path,
    argv: Sequence[str],
    *,
    user: bool = False,
    run_as: str | None = None,
    delegate_subgroup: bool = False,
) -> str:
    """The unit's text for the daemon of the tree at ``root`` started by ``argv``; a system
    unit runs it as ``run_as`` (a user name or uid) when given, else as root.
    ``delegate_subgroup``: the systemd that loads it knows ``DelegateSubgroup=`` (254+)."""
    if run_as is not None and not _USER_NAME.fullmatch(run_as):
        raise UsageError(f"--run-as: {run_as!r} is not a user name or uid")
    writable = writable_paths(root)  # each path checked by unit_word below, root included
    # $ is expanded in the arguments only: the executable's path is taken as it is (found by
    # `systemd-analyze verify` looking for a path with a $ in it).
    exec_start = " ".join([unit_word(argv[0]), *(unit_word(a, command=True) for a in argv[1:])])
    lines = [
        UNIT_HEADER,
        "# `runyard service status` says when it is stale.",
        "[Unit]",
        # Not a word list: taken as it is, quotes and all, but for its specifiers.
        f"Description=Runyard daemon for {str(root).replace('%', '%%')}",
    ]
    if not user:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        # Five failed starts in a minute (a fatal startup check, say) and systemd gives up:
        # `systemctl status` shows it failed instead of a restart every RestartSec forever.
        "StartLimitIntervalSec=60",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "# READY=1 comes once the control socket serves (daemon/main.py).",
        "Type=notify",
        f"ExecStart={exec_start}",
        "# SIGHUP is `runyard reload`: re-read manifest and config, restart only what changed.",
        "ExecReload=/bin/kill -HUP $MAINPID",
        *_identity(run_as, user),
        "Restart=always",
        "RestartSec=2",
        "# Only the daemon is signalled. On SIGTERM (stop, restart) it stops its services itself",
        "# (dependency order, each one's stop signal and timeout). If it crashes or is killed,",
        "# its services keep running, Restart= brings it back, and it re-adopts them from",
        "# temp/state.json. The default, control-group, would kill every service with it.",
        "KillMode=process",
        "# Services get long stop timeouts of their own; the daemon waits for them all.",
        "TimeoutStopSec=180",
        "# The daemon puts each service in a cgroup of its own, under the unit's.",
        "Delegate=yes",
        *_subgroup(delegate_subgroup),
        *_hardening(writable, argv, user),
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def _subgroup(known: bool) -> list[str]:
    if not known:
        return []
    return [
        "# The daemon starts in <unit>/supervisor: the unit's cgroup holds no process and can",
        "# enable the memory, pids and cpu controllers for the services' cgroups beside it.",
        "DelegateSubgroup=supervisor",
    ]


def _identity(run_as: str | None, user: bool) -> list[str]:
    if user or run_as is None:
        return []
    return [
        "# The tree's temp/ must belong to the daemon's user (the doctor's temp check).",
        f"User={run_as}",
    ]


def _hardening(writable: Sequence[Path], argv: Sequence[str], user: bool) -> list[str]:
    """Only what no supervised service should need: the services inherit all of it."""
    lines = [
        "# Hardening. The services inherit every line below.",
        "# NoNewPrivileges: no service can gain privileges through setuid/setgid binaries or",
        "# file capabilities (sudo, ping with cap_net_raw): drop this line if one must.",
        "NoNewPrivileges=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    if user:
        lines.append(
            "# No mount-namespace settings in a user unit (they would need PrivateUsers=)."
        )
        return lines
    lines += [
        "ProtectSystem=strict",
        "ReadWritePaths=" + " ".join(unit_word(str(p)) for p in writable),
        "ProtectHome=read-only",
    ]
    if _under_tmp([*writable, *(Path(a) for a in argv if a.startswith("/"))]):
        lines.append("# PrivateTmp= left off: the tree, or a file ExecStart names, is under /tmp.")
    else:
        lines.append("PrivateTmp=yes")
    lines += [
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectHostname=yes",
        "# Mounts a service makes stay in the unit's namespace.",
        "PrivateMounts=yes",
        "# Only calls no service of a tree has a use for; EPERM, not a kill, if one tries.",
        "SystemCallFilter=~@obsolete @swap",
        "SystemCallErrorNumber=EPERM",
    ]
    return lines
