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
import sys
import traceback
from collections.abc import Sequence

from runyard.protocol.client import DaemonUnreachable
from runyard.runtime.acquisition.urls import redact_url
from runyard.runtime.core.errors import InvariantBroken, RunyardError

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
from .common import UsageError, common_options
from .output import silence_stdout, stdout_closed

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="runyard",
        description="Supervise a self-contained runtime tree.",
        parents=[common],
        epilog="exit codes: 0 ok, 1 failed, 2 usage, 3 daemon unreachable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("root", "project"):
        if not hasattr(args, name):
            setattr(args, name, None)
    for name in ("json", "debug"):
        if not hasattr(args, name):
            setattr(args, name, False)
    try:
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
    except KeyboardInterrupt:
        print("runyard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        return _fail(args, exc, EXIT_FAILED, internal=True)


def _fail(args: argparse.Namespace, exc: BaseException, code: int, internal: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    # Our messages show URLs redacted already; this is the last line of defence for others.
    text = redact_url(str(exc).replace("\n", " ")) or type(exc).__name__
    if internal:
        text = f"internal error: {type(exc).__name__}: {text} (run with --debug for details)"
    print(f"runyard: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
