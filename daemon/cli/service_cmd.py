"""``runyard service install | uninstall | status``: the daemon of a tree started at boot by
systemd (the unit: runtime/ops/systemd_unit.py; systemctl: runtime/ops/systemd_install.py).

Exit codes: 0 done (``status``: the unit is active, or with ``--unit-dir`` its file is there and
up to date); 1 failed, systemd is not the init system, or ``status`` found it inactive, missing
or stale; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import pwd
import sys
from pathlib import Path
from typing import Any

from runyard.runtime.ops import systemd_install as sd
from runyard.runtime.ops.systemd_unit import (
    DELEGATE_SUBGROUP_SINCE,
    daemon_argv,
    render_unit,
    unit_dir,
    unit_name,
)

from .common import UsageError, open_project, open_tree
from .output import print_json

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "service",
        parents=[common],
        help="start the tree's daemon at boot (a systemd unit)",
        description=(
            "Install, remove or inspect the systemd unit that runs `runyard daemon` for the tree "
            "(runyard-ROOTNAME.service). Exit 1 when systemd is not the init system."
        ),
    )
    actions = p.add_subparsers(dest="service_action", metavar="ACTION", required=True)
    for action, helptext, handler in (
        ("install", "write the unit, daemon-reload, enable --now", cmd_install),
        ("uninstall", "stop and disable the unit, remove it, daemon-reload", cmd_uninstall),
        ("status", "what systemd says of the unit (exit 0 when active)", cmd_status),
    ):
        q = actions.add_parser(action, parents=[common], help=helptext)
        q.add_argument("--name", help="unit name (default runyard-ROOTNAME.service)")
        q.add_argument("--user", action="store_true", help="a user unit (systemctl --user)")
        q.add_argument(
            "--unit-dir",
            metavar="DIR",
            help="the unit file in DIR only; systemd is not told (an image being built)",
        )
        if action != "uninstall":
            q.add_argument("--license", metavar="FILE", help="license file the daemon is given")
            q.add_argument(
                "--run-as",
                metavar="USER",
                help="User= of a system unit (default: the owner of the tree's temp/; root: none)",
            )
        if action == "install":
            q.add_argument("--print", action="store_true", help="write the unit to stdout only")
            q.add_argument("--no-enable", action="store_true", help="do not enable at boot")
            q.add_argument("--no-start", action="store_true", help="do not start it now")
        q.set_defaults(handler=handler)


def _unit(args: argparse.Namespace, *, require: bool = False) -> tuple[Path, str, str]:
    """The tree's root, the unit's name and the text `install` writes with these options."""
    project = open_project(args)
    tree = open_tree(args, project)
    if require:
        tree.require()
    license_file = None
    if args.license:
        license_file = Path(args.license).absolute()
        if not license_file.is_file():
            raise UsageError(f"--license: {license_file} is not a file")
    argv = daemon_argv(sys.executable, tree.root, project.path, license_file)
    name = unit_name(tree.root, args.name)
    if args.run_as and args.user:
        raise UsageError("--run-as: a user unit runs as its user; it is for a system unit")
    run_as = args.run_as if args.run_as else _tree_owner(tree.temp_dir)
    # Written only for a systemd that knows it: an older one warns of the key at every load.
    subgroup = (sd.systemd_version() or 0) >= DELEGATE_SUBGROUP_SINCE
    text = render_unit(tree.root, argv, user=args.user, run_as=run_as, delegate_subgroup=subgroup)
    return tree.root, name, text


def _tree_owner(temp_dir: Path) -> str | None:
    """Who a system unit runs the daemon as: the owner of the tree's temp/ (or of the tree),
    since the daemon refuses a temp/ that is not its own; None for root."""
    for path in (temp_dir, temp_dir.parent):
        try:
            uid = path.stat().st_uid
        except OSError:
            continue
        if uid == 0:
            return None
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)
    return None


def _unit_path(args: argparse.Namespace, name: str) -> Path:
    base = Path(args.unit_dir).absolute() if args.unit_dir else unit_dir(args.user)
    return base / name


def _say(args: argparse.Namespace, doc: dict[str, object], text: str) -> None:
    if args.json:
        print_json(doc)
    else:
        print(text)


def cmd_install(args: argparse.Namespace) -> int:
    if args.print and args.unit_dir:
        raise UsageError("--print and --unit-dir: choose one")
    root, name, text = _unit(args, require=True)
    if args.print:
        sys.stdout.write(text)
        return 0
    path = _unit_path(args, name)
    if args.unit_dir:
        sd.write_unit(path, text)
        ctl = "systemctl --user" if args.user else "systemctl"
        _say(
            args,
            {"unit": name, "path": str(path), "enabled": False, "started": False},
            f"wrote {path}; systemd was not told (--unit-dir): on the box, "
            f"`{ctl} daemon-reload && {ctl} enable --now {name}`",
        )
        return 0
    sd.require_systemd(root)
    enable, start = not args.no_enable, not args.no_start
    replaced = sd.install_unit(path, text, user=args.user, enable=enable, start=start)
    done = [w for w, on in (("enabled", enable), ("started", start)) if on] or ["not enabled"]
    ctl = "systemctl --user" if args.user else "systemctl"
    # A restart is a SIGTERM: the daemon stops its services on the way. Killed, it is restarted
    # (Restart=always) and re-adopts them (KillMode=process).
    later = (
        f"; a daemon already running keeps the old unit until restarted: `{ctl} restart {name}` "
        f"restarts its services too, `{ctl} kill -s KILL --kill-whom=main {name}` only the "
        "daemon (its services are re-adopted)"
        if replaced
        else ""
    )
    _say(
        args,
        {
            "unit": name,
            "path": str(path),
            "enabled": enable,
            "started": start,
            "replaced": replaced,
        },
        f"installed {name} ({path}), {' and '.join(done)}{later}",
    )
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    root = open_tree(args).root
    name = unit_name(root, args.name)
    path = _unit_path(args, name)
    if args.unit_dir:
        removed = path.is_file()
        if removed:
            sd.refuse_foreign(path)
            path.unlink()
    else:
        sd.require_systemd(root)
        removed = sd.uninstall_unit(path, user=args.user)
    text = f"removed {name} ({path})" if removed else f"no unit file {path}: nothing to remove"
    _say(args, {"unit": name, "path": str(path), "removed": removed}, text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    root, name, text = _unit(args)
    path = _unit_path(args, name)
    differs = sd.unit_file_differs(path, text)
    file_state = {None: "missing", True: "differs", False: "up to date"}[differs]
    props: dict[str, str] | None = None
    if not args.unit_dir:
        sd.require_systemd(root)
        props = sd.unit_properties(name, user=args.user)
    ok = differs is False and (props is None or props.get("ActiveState") == "active")
    if args.json:
        print_json({"unit": name, "path": str(path), "file": file_state, "systemd": props})
        return 0 if ok else 1
    stale = " (differs from what `service install` would write now)" if differs else ""
    print(f"unit     {name}")
    print(f"file     {path}: {file_state}{stale}")
    if props is not None:
        print(
            f"state    {props.get('ActiveState', '?')} ({props.get('SubState', '?')}), "
            f"{props.get('UnitFileState') or props.get('LoadState', '?')}"
        )
        if props.get("MainPID", "0") != "0":
            print(f"main pid {props['MainPID']}")
        if props.get("ActiveEnterTimestamp"):
            print(f"since    {props['ActiveEnterTimestamp']}")
        print(f"restarts {props.get('NRestarts', '?')}")
    return 0 if ok else 1
