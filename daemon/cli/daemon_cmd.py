"""``runyard daemon``: run the daemon in the foreground.

Kept apart from the other commands (control_cmd registers it in the full parser) so that a
daemon's launch (``python -m runyard.daemon daemon --root ...``, from ``runyard up`` and the
systemd unit) parses its arguments without importing every command's module: the client
library, acquisition, bundles, the ssh relay stay out of its start and its memory.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .common import missing_file, open_project, open_tree

__all__ = ["cmd_daemon", "license_option", "register"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("daemon", parents=[common], help="run the daemon in the foreground")
    license_option(p)
    p.set_defaults(handler=cmd_daemon)


def license_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--license",
        metavar="FILE",
        help="license file (default: the tree's config/runyard/license.json; none: community)",
    )


def cmd_daemon(args: argparse.Namespace) -> int:
    from ..lazy_ssl import import_asyncio

    import_asyncio()  # before anything imports asyncio: ssl stays out until TLS is asked for
    from ..main import run_daemon

    # runyard.toml (--project, else the working directory's) read once for the whole launch: the
    # tree's root, the startup checks and the boot all take this parse (issue 16, cold start).
    if args.project:  # absolute and normalised (no ..), as the daemon has always named it
        args.project = os.path.abspath(args.project)
    project = open_project(args)
    tree = open_tree(args, project)
    license_file = Path(args.license).absolute() if args.license else None
    if license_file is not None and not license_file.is_file():
        raise missing_file("--license", license_file)
    return run_daemon(tree.root, project.path, license_file, project=project)
