"""``runyard audit show | verify``: the tree's audit trail, ``logs/runyard/audit.jsonl``.

``verify`` exits 1 when any entry was edited, removed, duplicated or reordered, naming each;
it checks the end of the log against ``audit.head`` (a missing head is a warning line, exit 0);
``--anchor SEQ:SHA256`` (the head printed by an earlier verify, kept off the box) also catches
a truncated tail when both files were rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runyard.runtime.core.errors import TreeError
from runyard.runtime.ops.audit import audit_path, tail, verify_chain

from .common import UsageError, open_tree
from .output import print_json, print_table

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser("audit", help="the audit trail of control actions, installs and seals")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)

    p = asub.add_parser("show", parents=[common], help="the last entries")
    p.add_argument("-n", type=int, default=20, metavar="N", help="how many (default 20)")
    p.set_defaults(handler=cmd_show)

    p = asub.add_parser(
        "verify", parents=[common], help="check the hash chain; exit 1 naming any broken entry"
    )
    p.add_argument(
        "--anchor",
        metavar="SEQ:SHA256",
        help="the head of an earlier verify, kept elsewhere: catches a truncated tail",
    )
    p.set_defaults(handler=cmd_verify)


def _logs_dir(args: argparse.Namespace) -> Path:
    """The logs/ of the tree (or of a bundle prefix: no manifest needed); a root that does not
    exist at all is a mistyped --root, not an empty trail (exit 1)."""
    tree = open_tree(args, lenient=True)
    if not tree.root.is_dir():
        raise TreeError(f"no runtime tree at {tree.root} (no such directory)")
    return tree.logs_dir


def _actor(actor: Any) -> str:
    if not isinstance(actor, dict):
        return str(actor)
    if "uid" in actor:
        who = f"uid {actor['uid']}"
    elif "socket_owner_uid" in actor:
        who = f"uid {actor['socket_owner_uid']} or root"
    else:
        who = actor.get("via", "?") + (f" {actor['address']}" if actor.get("address") else "")
    for key in ("client", "key"):
        if actor.get(key):
            who += f" {actor[key]}"
    return who


def cmd_show(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    entries = tail(_logs_dir(args), args.n)
    if args.json:
        print_json(entries)
        return 0
    rows = [
        (
            e.get("seq", "?"),
            e.get("time", ""),
            _actor(e.get("actor")),
            e.get("action", ""),
            e.get("target", ""),
            e.get("result", ""),
        )
        if "raw" not in e
        else ("?", "", "", "(unreadable line)", e["raw"][:60], "")
        for e in entries
    ]
    print_table(("SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "RESULT"), rows, right={0})
    return 0


def _anchor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, sep, digest = text.partition(":")
    digest = digest.lower()
    if not sep or not seq.isdigit() or len(digest) != 64 or digest.strip("0123456789abcdef"):
        raise UsageError(f"--anchor {text!r}: expected SEQ:SHA256 (as printed by audit verify)")
    return int(seq), digest


def cmd_verify(args: argparse.Namespace) -> int:
    anchor = _anchor(args.anchor)
    path = audit_path(_logs_dir(args))
    report = verify_chain(path, anchor=anchor)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for problem in report.problems:
        print(f"{path}: {problem.message}", file=sys.stderr)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not path.exists() and report.ok:
        print(f"{path}: no audit log yet")
    elif report.ok:
        print(
            f"{path}: ok, {report.entries} entries; head seq {report.head_seq} "
            f"sha256 {report.head_hash} (keep SEQ:SHA256 elsewhere as an --anchor)"
        )
    else:
        print(f"{path}: {len(report.problems)} problem(s) in {report.entries} entries")
    return 0 if report.ok else 1
