"""What every command shares: the common options and finding the tree and project file."""

from __future__ import annotations

import argparse
from pathlib import Path

from runyard.runtime.config.project import Project, load_project, project_root
from runyard.runtime.core.errors import UsageError
from runyard.runtime.core.tree import RuntimeTree, resolve_root

__all__ = ["UsageError", "common_options", "open_project", "open_tree"]


def common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after the command name."""
    # SUPPRESS keeps a subcommand's unset option from overwriting the top-level value.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", default=argparse.SUPPRESS, help="runtime tree directory")
    p.add_argument("--project", default=argparse.SUPPRESS, help="project file (runyard.toml)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks on errors"
    )
    # Over ssh to another box: daemon/cli/remote_cmd.py.
    p.add_argument(
        "--host",
        default=argparse.SUPPRESS,
        metavar="[USER@]BOX[:ROOT]",
        help="the tree and daemon on another box, over ssh (env RUNYARD_HOST; '' for this box)",
    )
    p.add_argument(
        "--ssh-command",
        default=argparse.SUPPRESS,
        metavar="CMD",
        help="the ssh client to run, e.g. 'ssh -F FILE' (env RUNYARD_SSH; default: ssh)",
    )
    return p


def open_project(args: argparse.Namespace) -> Project:
    return load_project(Path(args.project) if args.project else None)


def open_tree(args: argparse.Namespace, project: Project | None = None) -> RuntimeTree:
    """``--root`` > ``RUNYARD_ROOT`` > the project's ``root`` > ``./runtime`` > user data dir."""
    if project is None:
        project = open_project(args)
    return RuntimeTree(resolve_root(args.root, project_root(project)))
