"""``runyard license show | verify | sign``: the tree's license, a license file, signing one.

``show`` always exits 0 (its status says what is wrong); ``verify`` exits 1 with the reason
when the license is not valid; ``sign`` is for issuers and tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from runyard.runtime.core.atomic import atomic_write_text
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import FileRefused, RunyardError
from runyard.runtime.core.tree import RuntimeTree

from .common import UsageError, missing_file, open_tree
from .output import print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    lic = sub.add_parser("license", help="the tier and limits this tree runs with")
    lsub = lic.add_subparsers(dest="license_command", metavar="COMMAND", required=True)

    p = lsub.add_parser(
        "show", parents=[common], help="tier, licensee, expiry, limits and status of the license"
    )
    p.add_argument("--license", metavar="FILE", help="show this file instead of the tree's")
    p.set_defaults(handler=cmd_show)

    p = lsub.add_parser("verify", parents=[common], help="check a license file; exit 1 if bad")
    p.add_argument("file", metavar="FILE", help="license file (JSON)")
    p.add_argument(
        "--issuer",
        action="append",
        default=[],
        metavar="PUB",
        help="trust only this issuer public key (repeatable); default: the tree's issuers",
    )
    p.set_defaults(handler=cmd_verify)

    p = lsub.add_parser("sign", parents=[common], help="sign a license JSON file (issuers)")
    p.add_argument("file", metavar="FILE", help="the license document (signature is replaced)")
    p.add_argument("--key", required=True, metavar="PRIV", help="Ed25519 private key (PEM)")
    p.add_argument("-o", "--out", metavar="OUT", help="write here (default: stdout)")
    p.set_defaults(handler=cmd_sign)


def _tree_or_none(args: argparse.Namespace) -> RuntimeTree | None:
    try:
        tree = open_tree(args)
    except RunyardError:
        return None
    return tree if tree.exists() else None


def _print(status: Any) -> None:
    d = status.to_dict()
    claimed = d["claimed"]
    rows = [
        ("status", status.status),
        ("tier", status.tier),
        ("limits", ", ".join(f"{k} {v}" for k, v in sorted(status.limits.items()))),
    ]
    if status.path:
        rows.append(("file", status.path))
    if claimed["licensee"] is not None:
        rows.append(("licensee", claimed["licensee"]))
    if claimed["tier"] is not None and claimed["tier"] != status.tier:
        rows.append(("claimed tier", claimed["tier"]))
    if claimed["issued"] is not None:
        rows.append(("issued", claimed["issued"]))
    if claimed["expires"] is not None:
        rows.append(("expires", claimed["expires"]))
    if status.issuer:
        rows.append(("issuer", status.issuer))
    if status.reason:
        rows.append(("reason", status.reason))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


def cmd_show(args: argparse.Namespace) -> int:
    from runyard.runtime.ops.license import tree_license

    tree = open_tree(args, lenient=True)  # a read: a broken runyard.toml only warns
    status = tree_license(tree, args.license)
    if args.json:
        print_json(status.to_dict())
    else:
        _print(status)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from runyard.runtime.ops.license import check_license, trusted_issuers

    if not Path(args.file).is_file():
        raise missing_file("license file", args.file)
    if args.issuer:
        issuers = [Path(p) for p in args.issuer]
        for key in issuers:
            if not key.is_file():
                raise missing_file("--issuer", key)
    else:
        issuers = trusted_issuers(_tree_or_none(args))
    status = check_license(args.file, issuers)
    if args.json:
        print_json(status.to_dict())
    elif status.status == "valid":
        print(
            f"{args.file}: valid: {status.tier} for {status.licensee}, expires {status.expires}, "
            f"signed by {status.issuer}"
        )
    else:
        print(f"runyard: {status.reason}", file=sys.stderr)
    return 0 if status.status == "valid" else 1


def cmd_sign(args: argparse.Namespace) -> int:
    from runyard.runtime.ops.license import sign_license

    try:
        doc = json.loads(read_capped(args.file, SMALL_FILE))
    except FileRefused as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read: {exc.strerror or exc}", args.file) from None
    except RecursionError:
        raise UsageError(f"{args.file}: JSON nested too deeply") from None
    except ValueError as exc:
        raise UsageError(f"{args.file}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{args.file}: a license is a JSON object")
    text = json.dumps(sign_license(doc, args.key), indent=2, ensure_ascii=False) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
        if not args.json:
            print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
