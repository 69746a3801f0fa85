"""``runyard bundle pack | verify | install | rollback | ls``: runtime bundles (runtime/bundle/).

Exit codes as everywhere: 0 ok; 1 refused or failed (a secret found, a check failed, a version
policy said no: the reason on one line); 2 usage (a bad --version or --format). None of these
commands talks to a daemon: after an install or a rollback, `runyard reload` (or a restart)
makes a running daemon pick up the new ``current``. Formats, rules and layout:
docs/BUNDLES.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from runyard.runtime.core.errors import BundleError
from runyard.runtime.core.sizes import format_bytes

from .common import UsageError, open_project, open_tree, os_problem
from .output import print_json, print_table

# runtime.bundle (cryptography, tarfile, zipfile) is imported inside the commands: every
# `runyard` process imports this module.

__all__ = ["register"]

PACK_HELP = """\
Pack the runtime tree (--root, RUNYARD_ROOT, the project's root...) into one
deterministic runtime bundle FILE: manifest.json, the services' bin/ install dirs, their
config/ surface and Runyard's schemas/ (--with-wheels: also Runyard's wheel and its
locked dependency wheels, with install.sh). Packing the same tree twice gives the
same bytes. Secret-looking files and values are refused, all listed in one error;
--allow PATH lets one path in (recorded in the manifest). --sign KEY signs the
manifest with an Ed25519 key (runyard keys gen); the key itself is never packed.
The version is --version or `version` in the project file.

--format deb|rpm|run (or FILE ending in .deb .rpm .run) wraps the signed runtime
bundle (--sign is required) into a system package installing into
/opt/runyard/NAME (--package-name, default runyard-TREEDIR), or a self-extracting
shell installer; its script verifies the signature before switching `current`."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    bundle = sub.add_parser("bundle", help="runtime bundles: pack, verify, install, rollback, ls")
    bsub = bundle.add_subparsers(dest="bundle_command", metavar="COMMAND", required=True)
    _register_pack(bsub, common)

    p = bsub.add_parser(
        "verify", parents=[common], help="check a runtime bundle file, one line a failure"
    )
    p.add_argument("file", metavar="FILE", help="runtime bundle file (.tar.gz or .zip)")
    p.add_argument(
        "--pubkey", metavar="K", help="Ed25519 public key the runtime bundle must be signed by"
    )
    _format_option(p)
    p.set_defaults(handler=cmd_verify)

    p = bsub.add_parser(
        "install",
        parents=[common],
        help="install a runtime bundle into PREFIX/versions/ and switch",
    )
    p.add_argument("file", metavar="FILE", help="runtime bundle file (.tar.gz or .zip)")
    p.add_argument("--prefix", required=True, metavar="DIR", help="install prefix")
    p.add_argument("--pubkey", metavar="K", help="require a signature by this Ed25519 key")
    p.add_argument("--migrate", action="store_true", help="allow a major version upgrade")
    p.add_argument(
        "--force",
        action="store_true",
        help="allow a downgrade, or replacing an installed (not current) version",
    )
    _format_option(p)
    p.set_defaults(handler=cmd_install)

    p = bsub.add_parser("rollback", parents=[common], help="switch back to the previous version")
    p.add_argument("--prefix", required=True, metavar="DIR", help="install prefix")
    p.set_defaults(handler=cmd_rollback)

    p = bsub.add_parser("ls", parents=[common], help="installed versions of a prefix")
    p.add_argument("--prefix", required=True, metavar="DIR", help="install prefix")
    p.set_defaults(handler=cmd_ls)


def _format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format", choices=("tar.gz", "zip"), help="default: from FILE's suffix (.tar.gz, .zip)"
    )


def _format(args: argparse.Namespace) -> str:
    """The bundle format of FILE: a name that says none, or says another than --format, is a
    usage error (2), as for ``pack``."""
    from runyard.runtime.bundle.layout import BundleError, bundle_format

    try:
        return bundle_format(args.file, args.format)
    except BundleError as exc:
        raise UsageError(str(exc)) from None


def _register_pack(bsub: Any, common: argparse.ArgumentParser) -> None:
    """``bundle pack``: the one subcommand with many options."""
    p = bsub.add_parser(
        "pack",
        parents=[common],
        help="pack the tree into a deterministic, optionally signed runtime bundle",
        description=PACK_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="runtime bundle file to write"
    )
    p.add_argument(
        "--format",
        choices=("tar.gz", "zip", "deb", "rpm", "run"),
        help="default: from FILE's suffix; deb, rpm, run: a package of the signed runtime bundle",
    )
    p.add_argument("--services", metavar="A,B", help="only these services (default: all)")
    p.add_argument("--with-wheels", action="store_true", help="add wheels/ and install.sh")
    p.add_argument("--sign", metavar="KEY", help="Ed25519 private key (runyard keys gen)")
    p.add_argument("--version", dest="bundle_version", metavar="V", help="semantic version")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATH",
        help="pack PATH although it looks like a secret (repeatable)",
    )
    p.add_argument(
        "--created-at",
        metavar="TIME",
        help="RFC 3339 createdAt (default: SOURCE_DATE_EPOCH, else the newest install time)",
    )
    p.add_argument(
        "--compress-level",
        type=int,
        default=6,
        choices=range(1, 10),
        metavar="N",
        help="gzip/deflate level 1-9 (default 6, as tar czf; 1: ~2x faster, 3-13%% bigger)",
    )
    p.add_argument(
        "--package-name",
        metavar="NAME",
        help="deb/rpm/run: package name and /opt/runyard/NAME (default: runyard-TREEDIR)",
    )
    p.add_argument(
        "--maintainer",
        metavar="'NAME <EMAIL>'",
        help="deb/rpm: the Maintainer/Packager field",
    )
    p.set_defaults(handler=cmd_pack)


def cmd_pack(args: argparse.Namespace) -> int:
    from runyard.runtime.bundle import SecretsFound
    from runyard.runtime.bundle.layout import BundleError
    from runyard.runtime.bundle.pack import check_version
    from runyard.runtime.bundle.packages import check_maintainer, output_format
    from runyard.runtime.bundle.system_package import package_name_problem

    project = open_project(args)
    version = args.bundle_version or getattr(project, "version", None)
    try:
        check_version(version)
        fmt = output_format(args.output, args.format)
        if fmt in ("deb", "rpm", "run") and not args.sign:
            raise BundleError(
                f"--format {fmt} needs --sign KEY: the package's install script verifies "
                "the bundle's signature before switching `current`"
            )
        if args.maintainer is not None:
            check_maintainer(args.maintainer)
        if args.package_name and package_name_problem(args.package_name):
            raise BundleError(str(package_name_problem(args.package_name)))
    except BundleError as exc:
        raise UsageError(str(exc)) from None
    services = None
    if args.services is not None:
        services = [s.strip() for s in args.services.split(",") if s.strip()]
        if not services:
            raise UsageError("--services: expected a comma-separated list of service names")
    tree = open_tree(args, project)
    try:
        result = _pack(args, tree, fmt, services, version)
    except SecretsFound as exc:
        if args.json:
            print_json(
                {
                    "status": "refused",
                    "findings": [{"path": f.path, "reason": f.reason} for f in exc.findings],
                }
            )
        raise
    if args.json:
        print_json({"status": "packed", **msgspec.to_builtins(result)})
        return 0
    print(f"packed {result.path}")
    print(f"  version     {result.version} ({result.format}, createdAt {result.created_at})")
    print(f"  services    {', '.join(result.services)}")
    print(f"  files       {result.files}, {format_bytes(result.size)}")
    print(f"  sha256      {result.sha256}")
    if result.package:
        print(f"  package     {result.package} (bundle sha256 {result.bundle_sha256})")
    print(f"  signed by   {result.signed_by or '(unsigned)'}")
    if result.allowed:
        print(f"  allowed     {', '.join(result.allowed)}")
    return 0


def _pack(args: argparse.Namespace, tree: Any, fmt: str, services: Any, version: str) -> Any:
    from runyard.runtime.bundle import pack_bundle, pack_package

    options = {
        "services": services,
        "with_wheels": args.with_wheels,
        "allow": args.allow,
        "created_at": args.created_at,
        "level": args.compress_level,
    }
    if fmt in ("deb", "rpm", "run"):
        return pack_package(
            tree,
            args.output,
            fmt,
            name=args.package_name,
            maintainer=args.maintainer,
            sign_key=args.sign,
            version=version,
            **options,
        )
    return pack_bundle(tree, args.output, fmt=fmt, sign_key=args.sign, version=version, **options)


def cmd_verify(args: argparse.Namespace) -> int:
    from runyard.runtime.bundle import verify_bundle_file

    report = verify_bundle_file(args.file, args.pubkey, _format(args))
    if args.json:
        print_json(report.to_builtins())
        return 0 if report.ok else 1
    for check in report.checks:
        state = "SKIPPED" if check.skipped else ("OK" if check.ok else "FAILED")
        print(f"{state:<8} {check.name:<10} {check.detail}")
    if report.ok:
        what = f"{report.version} ({', '.join(report.services)})" if report.version else ""
        print(f"bundle OK: {args.file} {what}".rstrip())
        return 0
    print(f"bundle INVALID: {len(report.failed)} check(s) failed: {args.file}", file=sys.stderr)
    return 1


def _signature_note(state: str, signed_by: str) -> str | None:
    if state == "unsigned":
        return "note: the bundle is unsigned (give --pubkey to require a signature)"
    if state == "self-consistent":
        return (
            f"note: signed by key {signed_by}, not checked against a trusted key "
            "(give --pubkey to check it)"
        )
    return None


def cmd_install(args: argparse.Namespace) -> int:
    from runyard.runtime.bundle import install_bundle

    try:
        result = install_bundle(
            args.file,
            args.prefix,
            pubkey=args.pubkey,
            migrate=args.migrate,
            force=args.force,
            fmt=_format(args),
        )
    except OSError as exc:  # the prefix cannot be made or written: the path and the cause
        raise BundleError(f"cannot install into --prefix: {os_problem(exc)}") from None
    if args.json:
        print_json(msgspec.to_builtins(result))
        return 0
    if result.action == "unchanged":
        print(f"{result.version} is already installed and current in {result.prefix}")
    else:
        was = f" (was {result.previous})" if result.previous else ""
        print(f"{result.action}: {result.version} is now current in {result.prefix}{was}")
        print(f"  current -> versions/{result.version}")
    if result.signature == "valid":
        print(f"  signed by {result.signed_by} (checked against --pubkey)")
    note = _signature_note(result.signature, result.signed_by)
    if note:
        print(note, file=sys.stderr)
    for name in result.removed_stale:
        print(f"  removed {name} (left by an interrupted install)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from runyard.runtime.bundle import rollback

    result = rollback(args.prefix)
    if args.json:
        print_json(msgspec.to_builtins(result))
        return 0
    print(
        f"rolled back: {result.version} is now current in {result.prefix} (was {result.previous})"
    )
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from runyard.runtime.bundle import Prefix

    if not os.path.isdir(args.prefix):  # a mistyped --prefix: not found, not "no versions"
        raise BundleError(f"--prefix {args.prefix}: no such directory")
    rows = Prefix(args.prefix).describe()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no versions installed in {args.prefix}")
        return 0
    table = [
        (
            r["version"],
            "current" if r["current"] else "previous" if r["previous"] else "",
            r["created_at"] or "-",
            (r["signed_by"][:16] + "...") if r["signed_by"] else "-",
            ",".join(r["services"]) or "-",
        )
        for r in rows
    ]
    print_table(["VERSION", "STATE", "CREATED", "SIGNED BY", "SERVICES"], table)
    return 0
