"""``runyard tui``: the Textual interface on the daemon of a tree (it uses only the client)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import open_tree

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tui", parents=[common], help="services and logs, live, in the terminal")
    p.add_argument(
        "--read-only", action="store_true", help="look but do not act: action keys are disabled"
    )
    p.set_defaults(handler=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import RunyardApp  # textual loads only for this command

    RunyardApp(open_tree(args).root, read_only=args.read_only).run()
    return 0
