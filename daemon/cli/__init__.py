"""The ``runyard`` command line: argument parsing, error reporting and exit codes.

Exit codes: 0 ok; 1 the operation failed or a check found a problem; 2 usage or bad input;
3 the daemon is unreachable (or died while a command waited on it). Errors print on one line to
stderr, no traceback unless ``--debug``. Each command group lives in its own module and
registers its subparsers here.

A reader that goes away early (``runyard logs web | head -1``) ends the command quietly with
exit 0, as ``cat`` would under SIGPIPE: what it printed was what the reader wanted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from runyard.runtime.core.errors import DaemonUnreachable, InvariantBroken, RunyardError
from runyard.runtime.core.own_version import runyard_version

from .common import UsageError, common_options, os_problem
from .output import silence_stdout, stdout_closed

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, Any]:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="runyard",
        description="Supervise a self-contained runtime tree.",
        parents=[common],
        epilog="exit codes: 0 ok, 1 failed, 2 usage, 3 daemon unreachable",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"runyard {runyard_version()}",
        help="print Runyard's version and exit",
    )
    return parser, common, parser.add_subparsers(dest="command", metavar="COMMAND", required=True)


def daemon_parser() -> argparse.ArgumentParser:
    """The parser of ``runyard daemon`` alone (see daemon_cmd.py: a launch imports no other
    command's module)."""
    from . import daemon_cmd

    parser, common, sub = _parser()
    daemon_cmd.register(sub, common)
    describe_commands(parser)
    return parser


def _local_daemon(argv: Sequence[str]) -> bool:
    """``runyard daemon ...`` on this box: the command name first, no --host."""
    return (
        list(argv[:1]) == ["daemon"]
        and not any(a == "--host" or a.startswith("--host=") for a in argv)
        and not os.environ.get("RUNYARD_HOST")
    )


def build_parser() -> argparse.ArgumentParser:
    from . import (
        audit_cmd,
        bundle_cmd,
        control_cmd,
        doctor_cmd,
        keys_cmd,
        license_cmd,
        remote_cmd,
        runs_cmd,
        runtime_cmd,
        service_cmd,
        tui_cmd,
    )

    parser, common, sub = _parser()
    control_cmd.register(sub, common)
    runtime_cmd.register(sub, common)
    keys_cmd.register(sub, common)
    runs_cmd.register(sub, common)
    tui_cmd.register(sub, common)
    bundle_cmd.register(sub, common)
    doctor_cmd.register(sub, common)
    license_cmd.register(sub, common)
    audit_cmd.register(sub, common)
    service_cmd.register(sub, common)
    remote_cmd.register(sub, common)
    describe_commands(parser)
    return parser


def describe_commands(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand without a description its one-line help as one, so that
    ``runyard CMD --help`` always says what CMD does (argparse does not copy it)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, child in action.choices.items():
            if not child.description and helps.get(name):
                child.description = f"{helps[name][0].upper()}{helps[name][1:]}."
            describe_commands(child)


def main(argv: Sequence[str] | None = None) -> int:
    local_daemon = _local_daemon(sys.argv[1:] if argv is None else argv)
    parser = daemon_parser() if local_daemon else build_parser()
    args = parser.parse_args(argv)
    for name in ("root", "project"):
        if not hasattr(args, name):
            setattr(args, name, None)
    for name in ("json", "debug"):
        if not hasattr(args, name):
            setattr(args, name, False)
    try:
        if local_daemon:
            code = int(args.handler(args) or 0)
        else:
            from . import remote_cmd

            code = remote_cmd.dispatch(args, argv)  # here, or on the box of --host
        sys.stdout.flush()  # here, not at exit, so a closed pipe is seen and answered below
        return code
    except BrokenPipeError as exc:
        if not stdout_closed():
            return _fail(args, exc, EXIT_FAILED)
        silence_stdout()
        return EXIT_OK
    except UsageError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except DaemonUnreachable as exc:
        return _fail(args, exc, EXIT_UNREACHABLE)
    except InvariantBroken as exc:  # a bug, though ours: shown as one
        return _fail(args, exc, EXIT_FAILED, internal=True)
    except RunyardError as exc:
        return _fail(args, exc, EXIT_FAILED)
    except OSError as exc:  # the world said no (a path, a permission, a full disk): not a bug
        return _fail(args, exc, EXIT_FAILED, text=os_problem(exc))
    except KeyboardInterrupt:
        print("runyard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        return _fail(args, exc, EXIT_FAILED, internal=True)


def _fail(
    args: argparse.Namespace,
    exc: BaseException,
    code: int,
    internal: bool = False,
    text: str | None = None,
) -> int:
    if args.debug:
        traceback.print_exc()
    # Our messages show URLs redacted already; this is the last line of defence for others.
    from runyard.runtime.acquisition.urls import redact_url

    text = redact_url((text or str(exc)).replace("\n", " ")) or type(exc).__name__
    if internal:
        text = f"internal error: {type(exc).__name__}: {text} (run with --debug for details)"
    print(f"runyard: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
