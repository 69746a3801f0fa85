"""``runyard tui``: the Textual interface on the daemon of a tree (it uses only the client)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import UsageError, open_tree
from .output import parse_bytes

__all__ = ["register"]

#: The disk panel's default log warning threshold (tui.disk_screen.LOGS_WARN, not imported so
#: that parsing the command line never loads textual).
DEFAULT_LOGS_WARN = "100MiB"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tui", parents=[common], help="services and logs, live, in the terminal")
    p.add_argument(
        "--read-only", action="store_true", help="look but do not act: action keys are disabled"
    )
    p.add_argument(
        "--logs-warn",
        metavar="SIZE",
        default=DEFAULT_LOGS_WARN,
        help="flag a service in the disk panel when its logs pass SIZE "
        f"(500M, 100MiB, bytes; default {DEFAULT_LOGS_WARN})",
    )
    p.set_defaults(handler=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    try:
        logs_warn = parse_bytes(args.logs_warn)
    except ValueError as exc:
        raise UsageError(f"--logs-warn: {exc}") from None
    # Without a terminal (cron, nohup, `ssh -n`, a pipe) Textual would wait for input that never
    # comes, spinning on a closed stdin: refuse at once instead. Textual draws on stderr.
    missing = [name for name, f in (("stdin", sys.stdin), ("stderr", sys.stderr)) if not _tty(f)]
    if missing:
        raise UsageError(
            f"tui needs a terminal, and {' and '.join(missing)} is not one "
            "(scripts: runyard status / runyard logs)"
        )
    from runyard.tui.app import RunyardApp  # textual loads only for this command

    # Over --host the root is the relay's local directory: the title names the box's tree.
    label = getattr(args, "remote_label", None)
    app = RunyardApp(
        open_tree(args, lenient=True).root,
        read_only=args.read_only,
        logs_warn=logs_warn,
        label=label,
    )
    app.run()
    return 0


def _tty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False
