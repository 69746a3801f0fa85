"""What every command shares: the common options and finding the tree and project file."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from runyard.runtime.config.project import (
    Project,
    load_project,
    load_project_leniently,
    project_root,
)
from runyard.runtime.core.errors import UsageError
from runyard.runtime.core.tree import RuntimeTree, resolve_root

__all__ = [
    "UsageError",
    "common_options",
    "missing_file",
    "open_project",
    "open_project_leniently",
    "open_tree",
    "os_problem",
]


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


def open_project_leniently(args: argparse.Namespace) -> Project:
    """The project file, or (when it is broken) one warning line on stderr naming the line and
    what `load_project_leniently` could keep of it (its ``root``)."""
    project, warning = load_project_leniently(Path(args.project) if args.project else None)
    if warning:
        print(f"runyard: warning: {warning} (the project file is ignored)", file=sys.stderr)
    return project


def open_tree(
    args: argparse.Namespace, project: Project | None = None, *, lenient: bool = False
) -> RuntimeTree:
    """``--root`` > ``RUNYARD_ROOT`` > the project's ``root`` > ``./runtime`` > user data dir.

    ``lenient``: for commands that read or stop (status, logs, shutdown, ls...), a broken project
    file is one warning line on stderr instead of a refusal; its ``root`` is used when readable.
    """
    if project is None and lenient:
        project = open_project_leniently(args)
    if project is None:
        project = open_project(args)
    return RuntimeTree(resolve_root(args.root, project_root(project)))


def os_problem(exc: OSError) -> str:
    """An OSError as one line naming the path(s) and the cause: ``/x/file/sub: Not a directory``."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return cause
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {cause}"
    return f"{exc.filename}: {cause}"


def missing_file(what: str, path: object) -> FileNotFoundError:
    """A file named on the command line that is not there: "not found", exit 1 (not usage)."""
    return FileNotFoundError(errno.ENOENT, "no such file", f"{what} {path}")
