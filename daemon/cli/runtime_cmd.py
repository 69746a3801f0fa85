"""``runyard runtime ...``: the tree, acquisition, env, disk usage, cache GC and drift checks."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from runyard.runtime.acquisition.cache import cache_owner, collect_garbage
from runyard.runtime.acquisition.drift import verify_installed
from runyard.runtime.acquisition.ensure import ensure_service
from runyard.runtime.acquisition.urls import split_credentials
from runyard.runtime.config.env import resolve_service_env, select_entry
from runyard.runtime.config.project import Project
from runyard.runtime.core.du import disk_usage
from runyard.runtime.core.errors import InUse, ResolveError, TreeError
from runyard.runtime.core.manifest import RuntimeManifest, ServiceEntry, init_tree, load_manifest
from runyard.runtime.core.sizes import format_bytes
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.core.versions import Version, VersionSpec
from runyard.runtime.ops.audit_action import audited

from .common import UsageError, open_project, open_project_leniently, open_tree, os_problem
from .output import parse_bytes, print_json, print_table

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    runtime = sub.add_parser("runtime", help="the runtime tree: install, inspect, clean")
    rsub = runtime.add_subparsers(dest="runtime_command", metavar="COMMAND", required=True)

    p = rsub.add_parser("init", parents=[common], help="lay out a runtime tree")
    p.add_argument("dir", nargs="?", help="where (default: the resolved root)")
    p.set_defaults(handler=cmd_init)

    p = rsub.add_parser("ensure", parents=[common], help="install a service binary from a catalog")
    p.add_argument("name", help="service name in the catalog")
    p.add_argument(
        "version_spec",
        nargs="?",
        default="latest",
        metavar="VERSION_SPEC",
        help="8.3.4, 8.3.x or latest (default)",
    )
    p.add_argument("--catalog", help="catalog path or URL (remembered for next time)")
    p.set_defaults(handler=cmd_ensure)

    p = rsub.add_parser(
        "ls", parents=[common], help="list installed services; * marks the version that runs"
    )
    p.set_defaults(handler=cmd_ls)

    p = rsub.add_parser(
        "remove",
        parents=[common],
        help="remove an installed version (refused while a service runs from it)",
    )
    p.add_argument("name", metavar="NAME", help="installed service or engine name")
    p.add_argument("version", metavar="VERSION", help="the exact installed version (runtime ls)")
    p.set_defaults(handler=cmd_remove)

    p = rsub.add_parser("env", parents=[common], help="the environment a service runs with")
    p.add_argument("name", help="installed service name")
    p.add_argument("--all", action="store_true", help="also show inherited variables")
    p.set_defaults(handler=cmd_env)

    p = rsub.add_parser("du", parents=[common], help="disk usage per service")
    p.set_defaults(handler=cmd_du)

    p = rsub.add_parser("verify", parents=[common], help="re-hash installed files, report drift")
    p.set_defaults(handler=cmd_verify)

    p = rsub.add_parser("gc", parents=[common], help="evict least-recently-used cached archives")
    p.add_argument("--max-bytes", required=True, help="cache budget, e.g. 500M or 2GiB")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.add_argument("--all", action="store_true", help="may evict archives of installed versions")
    p.set_defaults(handler=cmd_gc)


def _tree(args: argparse.Namespace) -> RuntimeTree:
    return open_tree(args, lenient=True).require()


def cmd_init(args: argparse.Namespace) -> int:
    tree = RuntimeTree(args.dir) if args.dir else open_tree(args)
    try:
        # Recorded into the tree it lays out; one already there changes nothing.
        with audited(tree.logs_dir, "init", target=str(tree.root), refusal_needs_log=True) as act:
            created = act.changed = init_tree(tree)
    except OSError as exc:  # the world refused the path: say which and why, not "internal error"
        raise TreeError(f"cannot create the runtime tree: {os_problem(exc)}") from None
    if args.json:
        print_json({"root": str(tree.root), "created": created})
    else:
        verb = "initialised" if created else "already initialised:"
        print(f"{verb} runtime tree at {tree.root}")
    return 0


#: Said when --catalog carried user:token@: the tree remembers the URL without them.
CREDENTIALS_NOT_STORED = (
    "runyard: note: the catalog's credentials are not stored in the tree; an ensure without "
    "--catalog takes them from ~/.netrc, or gets HTTP 401"
)


def cmd_ensure(args: argparse.Namespace) -> int:
    try:
        VersionSpec.parse(args.version_spec)
    except ValueError as exc:  # malformed on the command line: usage (2), not "not found" (1)
        raise UsageError(str(exc)) from None
    # require(): a mistyped --root is an error, not a new tree (only `runtime init` makes one).
    tree = open_tree(args).require()
    result = ensure_service(
        args.name,
        args.version_spec,
        root=tree.root,
        catalog=args.catalog,
        progress=None if not args.json else False,
    )
    if result.catalog_note:
        print(f"runyard: {result.catalog_note}", file=sys.stderr)
    if args.catalog and split_credentials(args.catalog)[1] is not None:
        print(CREDENTIALS_NOT_STORED, file=sys.stderr)
    if args.json:
        print_json(result)
        return 0
    rel = os.path.relpath(result.bin_path, tree.root)
    if result.installed:
        how = f"downloaded {format_bytes(result.size)}" if result.fetched else "from cache"
        print(f"installed {result.name} {result.version} {result.os}-{result.arch} ({how}): {rel}")
    else:
        print(f"{result.name} {result.version} {result.os}-{result.arch} already installed: {rel}")
    return 0


def _running_versions(manifest: RuntimeManifest, project: Project) -> set[int]:
    """ids of the entries that run (the project's pin, else the newest ensured), as the daemon
    picks them (`select_entry`)."""
    chosen = set()
    for name in {s.name for s in manifest.services}:
        try:
            chosen.add(id(select_entry(manifest, name, project)))
        except ResolveError:  # nothing here for this platform, or the pin matches nothing
            continue
    return chosen


def cmd_ls(args: argparse.Namespace) -> int:
    project = open_project_leniently(args)
    manifest = load_manifest(open_tree(args, project).require())
    if args.json:
        print_json(manifest.services)
        return 0
    if not manifest.services:
        print("no services installed (runyard runtime ensure NAME VERSION --catalog FILE)")
        return 0
    runs = _running_versions(manifest, project)
    rows = [
        (
            ("*" if id(s) in runs else " ") + s.name,
            s.version,
            s.platform,
            s.kind,
            format_bytes(s.size),
            ",".join(f"{p.name}:{p.port}" for p in s.default_ports) or "-",
            s.bin_path,
        )
        for s in manifest.services
    ]
    print_table(["NAME", "VERSION", "PLATFORM", "KIND", "ARCHIVE", "PORTS", "BINPATH"], rows, {4})
    print("* the version that runs (runyard.toml's pin, else the one ensured last)")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from runyard.runtime.acquisition.remove import installed_versions, remove_installed

    project = open_project_leniently(args)
    tree = open_tree(args, project).require()
    installed_versions(tree, args.name, args.version)  # not installed: say so first

    def unused(removing: list[ServiceEntry]) -> None:
        # Runs with the version's install locks held, which the daemon needs to spawn from it:
        # what this finds unused stays unused until it is removed.
        running = _in_use(tree, args.name, args.version)
        if running is not None:
            raise InUse(
                f"{args.name} {args.version} is in use ({running}); "
                f"runyard stop {args.name}, or ensure and run another version, then remove it",
            )
        versions = {e.version for e in load_manifest(tree).find(args.name)}
        if not versions - {e.version for e in removing} and args.name in project.services:
            raise InUse(
                f"{args.name} {args.version} is the last version of [services.{args.name}] in "
                "the project file, and a daemon refuses to start a section with nothing "
                "installed: remove the section first, or ensure another version"
            )

    gone = remove_installed(tree, args.name, args.version, check=unused)
    if args.json:
        print_json(gone)
    else:
        platforms = ", ".join(e.platform for e in gone)
        print(f"removed {args.name} {args.version} ({platforms})")
    return 0


def _in_use(tree: RuntimeTree, name: str, version: str) -> str | None:
    """How the tree's daemon uses ``name`` at ``version`` (``pid N``, or the state of one it
    will start again: backoff has no pid); None when it does not (or when no daemon answers:
    then nothing runs from the tree)."""
    from runyard.protocol.client import Client, DaemonUnreachable
    from runyard.runtime.core.errors import NotFound

    try:
        with Client(tree.root, timeout=5.0, client_name="runyard-cli") as client:
            services = client.status([name]).services
    except (DaemonUnreachable, NotFound):
        return None
    for s in services:
        same = Version.try_parse(s.version) == Version.try_parse(version) or s.version == version
        if same and s.pid is not None:
            return f"pid {s.pid}"
        if same and s.state == "backoff" and s.wanted == "up":
            return "in backoff, to be started again"
    return None


def cmd_env(args: argparse.Namespace) -> int:
    project = open_project(args)
    tree = open_tree(args, project).require()
    resolved = resolve_service_env(tree, args.name, project=project)
    if args.json:
        print_json(resolved)
        return 0
    for key in sorted(resolved.env):
        source = resolved.sources.get(key, "base")
        if args.all or source != "base" or key == "PATH":
            print(f"{key}={resolved.env[key]}")
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    tree = _tree(args)
    owners = cache_owner(tree)
    report = disk_usage(tree, owners.get)
    if args.json:
        print_json(report)
        return 0
    cats = ("bin", "data", "logs", "config", "cache")
    rows = []
    for s in report.services:
        rows.append(
            [
                s.name,
                *(format_bytes(getattr(s, c).bytes) for c in cats),
                format_bytes(s.total.bytes),
                s.total.files,
            ]
        )
    rows.append(
        ["(runyard)", "", "", "", "", "", format_bytes(report.other.bytes), report.other.files]
    )
    rows.append(["TOTAL", "", "", "", "", "", format_bytes(report.total.bytes), report.total.files])
    print_table(["SERVICE", *(c.upper() for c in cats), "TOTAL", "FILES"], rows, set(range(1, 8)))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify_installed(_tree(args))
    if args.json:
        print_json({"ok": report.ok, **{k: getattr(report, k) for k in report.__struct_fields__}})
    else:
        for d in report.drift:
            print(f"{d.service} {d.version} {d.platform}: {d.path}: {d.problem}")
        state = "ok" if report.ok else f"{len(report.drift)} problem(s)"
        print(
            f"verified {report.checked_files} files in {report.services} installs: {state}",
            file=sys.stdout if report.ok else sys.stderr,
        )
    return 0 if report.ok else 1


def cmd_gc(args: argparse.Namespace) -> int:
    try:
        max_bytes = parse_bytes(args.max_bytes)
    except ValueError as exc:
        raise UsageError(f"--max-bytes: {exc}") from None
    report = collect_garbage(
        _tree(args), max_bytes, dry_run=args.dry_run, include_installed=args.all
    )
    if args.json:
        print_json(report)
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in report.removed:
        print(f"{verb} {r.file} ({format_bytes(r.bytes)})")
    print(
        f"{verb} {len(report.removed)} archive(s), {format_bytes(report.freed_bytes)} freed; "
        f"cache now {format_bytes(report.kept_bytes)}"
    )
    if report.protected:
        print(
            f"over budget: kept {len(report.protected)} archive(s) of installed versions "
            "(--all evicts them too)"
        )
    return 0
