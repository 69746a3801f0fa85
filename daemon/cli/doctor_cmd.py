"""``runyard doctor``: the startup checks of an installed tree (runtime/ops/doctor.py), as a table.

Exit 0 when nothing fails (warnings allowed), 1 on any failed check.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import open_project, open_tree
from .output import print_json, print_table

__all__ = ["register"]

_MARK = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check the installed tree (checksums, permissions, disk, ports, license)",
        description=(
            "The checks the daemon runs at start: manifest, checksums of installed files, "
            "permissions of bin/ and temp/, writable data/ and logs/, free disk, default ports, "
            "license, services that run as root. Exit 1 on any failed check; 'fatal' marks those the daemon refuses to "
            "start on."
        ),
    )
    p.add_argument("--license", metavar="FILE", help="check this license file instead")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from runyard.runtime.ops.doctor import run_checks

    project = open_project(args)
    tree = open_tree(args, project).require()
    report = run_checks(tree, license_file=args.license, project=project)
    if args.json:
        print_json(report.to_dict())
    else:
        rows = [
            (c.name, _MARK.get(c.status, c.status) + (" (fatal)" if c.fatal else ""), c.detail)
            for c in report.checks
        ]
        print_table(("CHECK", "STATUS", "DETAIL"), rows)
        fails = sum(c.status == "fail" for c in report.checks)
        warns = sum(c.status == "warn" for c in report.checks)
        print(f"{tree.root}: {fails} failed, {warns} warning(s)")
    return 0 if report.ok else 1
