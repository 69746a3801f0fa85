"""``runyard --host [USER@]BOX[:ROOT] COMMAND``, and ``runyard bridge``, the box's end of it.

Two ways over the operator's own ssh, chosen by what a command needs:

- the commands that talk to the daemon (``RELAYED``: status, start/stop/restart, reload, logs,
  health, shutdown, tui) run here, unchanged, against a local ``SshRelay`` whose private socket
  directory carries each connection over ``ssh -T BOX runyard bridge`` to the box's daemon:
  live streams (``logs -f``, the TUI) and the link's loss and return behave as on the box;
- every other command works on the box's files (``runtime``, ``bundle``, ``runs``, ``up``...),
  so it runs there: ``ssh -T BOX runyard [--root ROOT] ARGS...`` with stdin, stdout, stderr
  and the exit status passed through. File arguments name files on the box.

ROOT: ``:ROOT`` of --host, else ``--root``, else the box's own default. No port is opened on
either side, and no key or option of ours is given to ssh.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from runyard.protocol.client import DaemonUnreachable
from runyard.protocol.ssh_relay import SshRelay, SshTarget, ssh_argv

from .common import UsageError, open_tree

__all__ = ["RELAYED", "dispatch", "register"]

#: The commands that only talk to the daemon: they run here, through the relay.
RELAYED = frozenset(
    {"status", "start", "stop", "restart", "reload", "logs", "health", "shutdown", "tui"}
)
#: ssh's own exit status for "ssh failed" (connection, authentication, host key).
SSH_FAILED = 255
#: The options that belong to this side of the link: not passed to the box's runyard.
_LOCAL_OPTIONS = ("--host", "--ssh-command")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bridge",
        parents=[common],
        help="relay this tree's daemon sockets over stdin/stdout (what --host runs over ssh)",
    )
    p.set_defaults(handler=cmd_bridge)


def cmd_bridge(args: argparse.Namespace) -> int:
    from runyard.runtime.core.own_version import runyard_version

    from ..bridge import run_bridge

    return run_bridge(open_tree(args).root, runyard_version())


def dispatch(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Run the command here, or on the box of ``--host`` / RUNYARD_HOST."""
    host = getattr(args, "host", None)
    if host is None:
        host = os.environ.get("RUNYARD_HOST", "")
    if not host or args.command == "bridge":
        return int(args.handler(args) or 0)
    target = SshTarget.parse(host)
    if args.root and target.root is not None and args.root != target.root:
        raise UsageError(
            f"two roots for {target.destination}: :{target.root} and --root {args.root}"
        )
    if target.root is None and args.root:
        target = SshTarget(target.destination, args.root)
    ssh_command = getattr(args, "ssh_command", None)
    if args.command in RELAYED:
        return _relayed(args, target, ssh_command)
    remote = _strip_local(list(sys.argv[1:] if argv is None else argv))
    argv = ssh_argv(target, ssh_command, remote)
    try:
        code = subprocess.call(argv)
    except OSError as exc:  # as the relay says it for the relayed commands
        raise DaemonUnreachable(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    if code == SSH_FAILED:
        raise DaemonUnreachable(f"ssh to {target.destination} failed (exit {code}, said above)")
    return code


def _relayed(args: argparse.Namespace, target: SshTarget, ssh_command: str | None) -> int:
    with _ended_by_signals(), SshRelay(target, ssh_command) as relay:
        if relay.remote.get("tree") is False:
            raise DaemonUnreachable(
                f"{target.label}: no runtime tree at {relay.remote.get('root')} on the box "
                f"(runyard --host {target.destination} runtime init, or give :ROOT)"
            )
        args.root, args.project = str(relay.root), None
        args.remote_label = f"{target.destination}:{relay.remote.get('root')}"
        try:
            return int(args.handler(args) or 0)
        except DaemonUnreachable as exc:
            raise DaemonUnreachable(relay.explain(str(exc))) from None


@contextlib.contextmanager
def _ended_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (``kill``, a closed terminal) end the command through its ``finally``
    blocks, so the relay stops ssh and removes its directory instead of leaving them behind."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _strip_local(argv: list[str]) -> list[str]:
    """``argv`` without --host / --ssh-command (and their values), spelled in full or
    abbreviated as argparse takes them (``--hos``): the box's runyard runs there, not over
    another hop. What follows ``--`` is not an option and goes as it is."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--":
            return out + argv[i:]
        elif _is_local(arg.partition("=")[0]):
            skip = "=" not in arg
        else:
            out.append(arg)
    return out


def _is_local(name: str) -> bool:
    """``name`` is one of _LOCAL_OPTIONS, or a prefix argparse expands to one ("--ho")."""
    return len(name) >= 4 and any(option.startswith(name) for option in _LOCAL_OPTIONS)
