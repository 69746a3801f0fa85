"""Startup checks of an installed tree: ``runyard doctor`` prints them, the daemon runs them.

Each check gives pass, warn, fail or skip and one line of detail. A failed check is *fatal*
when the daemon must not start on it (``StartupCheck.fatal``); the others go to the daemon log.

    check      what                                                      fatal at daemon start
    manifest   manifest.json decodes and validates                       yes
    checksums  every installed file matches its sha256 in the manifest   yes (changed, vanished,
               (services[].files, runtime/acquisition/drift.py); in an installed    appeared, not a file)
               bundle also bundle.files: config/ (not config/runyard),
               schemas/, wheels/, install.sh, and nothing else appeared
               under bin/ config/ schemas/ wheels/
    bin        nothing under bin/ is world-writable (group-writable:     no
               warn)
    temp       temp/ is a directory we own, mode 0700 (a symlink we own  yes when not ours, not a
               to one: a versioned install shares temp/)                 directory, or writable
                                                                         by others; 0755 is a
                                                                         fail of doctor only (the
                                                                         daemon resets it to 0700)
    data       data/ is a directory we can create a file in              yes
    logs       logs/ and logs/runyard/ are directories we can write      yes
    disk       free space of the tree's filesystem: warn below 5% or     no
               512 MiB, fail below 64 MiB
    ports      every service's default port can be bound on 127.0.0.1    no (warn only: a running
               (warn only)                                               daemon's services, or the
                                                                         ones it adopts, hold them)
    license    config/runyard/license.json: valid or absent passes;      no (community limits)
               expired, forged, unverified or malformed warns
    users      no service runs as root (``user``, or a root daemon's     no (warn only)
               default); an unknown user or group warns too

A missing data/, logs/ or temp/ is a warning: the daemon creates them. Writability is tested
by creating a file, because ``os.access`` says yes to root whatever the modes.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from runyard.runtime.core.errors import RunyardError, StartupCheckFailed
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.license import LicenseStatus, tree_license

if TYPE_CHECKING:
    from runyard.runtime.acquisition.drift import Listing
    from runyard.runtime.config.project import Project

__all__ = [
    "DISK_FAIL_BYTES",
    "DISK_WARN_BYTES",
    "DISK_WARN_FRACTION",
    "DoctorReport",
    "StartupCheck",
    "StartupCheckFailed",
    "run_checks",
]

DISK_WARN_BYTES = 512 * 1024 * 1024
DISK_WARN_FRACTION = 0.05
DISK_FAIL_BYTES = 64 * 1024 * 1024
#: How many offending paths a detail line names before "and N more".
MAX_NAMED = 5


class StartupCheck(msgspec.Struct, frozen=True):
    """One startup check's result (not a verification ``runtime.core.checks.Check``: those are ok or not)."""

    name: str
    #: pass | warn | fail | skip
    status: str
    detail: str
    #: The daemon refuses to start on this result.
    fatal: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "fatal": self.fatal,
        }


class DoctorReport(msgspec.Struct):
    root: Path
    checks: list[StartupCheck] = msgspec.field(default_factory=list)
    license: LicenseStatus | None = None
    #: The manifest the checks loaded and validated (None when invalid): a daemon's first boot
    #: runs what was checked, without a load of its own.
    manifest: Any = None

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    @property
    def fatal(self) -> list[StartupCheck]:
        return [c for c in self.checks if c.fatal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "license": self.license.to_dict() if self.license else None,
        }


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


# --- the checks --------------------------------------------------------------------------------


def check_manifest(tree: RuntimeTree) -> tuple[StartupCheck, Any]:
    from runyard.runtime.core.manifest import load_manifest

    try:
        manifest = load_manifest(tree)
    except (RunyardError, OSError) as exc:
        return StartupCheck("manifest", "fail", str(exc), fatal=True), None
    kinds = [s.kind for s in manifest.services]
    detail = f"{kinds.count('service')} service(s), {kinds.count('engine')} engine(s) installed"
    return StartupCheck("manifest", "pass", detail), manifest


def check_checksums(
    tree: RuntimeTree, manifest: Any = None, listed: Listing | None = None
) -> StartupCheck:
    """``listed``: bin/ as ``scan_dir`` lists it, when the caller walked it already."""
    from runyard.runtime.acquisition.drift import bundle_drift, verify_installed

    try:
        if manifest is None:
            from runyard.runtime.core.manifest import load_manifest

            manifest = load_manifest(tree)
        # Not a load (and validation) of its own, nor a walk of bin/ when given one.
        report = verify_installed(tree, manifest, listed)
        bundle_checked, bundle_problems = bundle_drift(tree, manifest)
    except (RunyardError, OSError) as exc:
        return StartupCheck("checksums", "fail", f"cannot check: {exc}", fatal=True)
    problems = [
        f"{d.problem}: bin/{d.service}/{d.version}/{d.platform}/{d.path}" for d in report.drift
    ] + bundle_problems
    if not problems:
        checked = report.checked_files + bundle_checked
        return StartupCheck("checksums", "pass", f"{checked} file(s) match the manifest")
    return StartupCheck("checksums", "fail", _named(problems), fatal=True)


def check_bin(tree: RuntimeTree, listed: Listing | None = None) -> StartupCheck:
    """``listed``: bin/ as ``scan_dir`` lists it (os.walk's order, lstat done), when walked already."""
    if not tree.bin_dir.is_dir():
        return StartupCheck("bin", "warn", f"{tree.bin_dir}: missing")
    if listed is None:
        from runyard.runtime.acquisition.drift import scan_dir

        listed = scan_dir(str(tree.root), "bin")
    root = str(tree.root).rstrip("/")
    world: list[str] = []
    group: list[str] = []
    for rel_dir, rows in listed.items():
        for _, name, mode in rows:  # its dirs, then its other entries, each sorted
            if mode is None or stat.S_ISLNK(mode) or not mode & (stat.S_IWOTH | stat.S_IWGRP):
                continue  # the path named only when shown (relpath: 2 abspaths per entry)
            rel = os.path.relpath(f"{root}/{rel_dir}/{name}", tree.root)
            if mode & stat.S_IWOTH:
                world.append(f"{rel} ({stat.S_IMODE(mode):04o})")
            else:
                group.append(rel)
    if world:
        return StartupCheck("bin", "fail", f"world-writable: {_named(world)}")
    if group:
        return StartupCheck("bin", "warn", f"group-writable: {_named(group)}")
    return StartupCheck("bin", "pass", "nothing under bin/ is writable by others")


def check_temp(tree: RuntimeTree) -> StartupCheck:
    path = tree.temp_dir
    uid = os.geteuid()
    try:
        link = os.lstat(path)
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return StartupCheck("temp", "fail", f"{path}: a dangling symlink", fatal=True)
        return StartupCheck("temp", "warn", f"{path}: missing (the daemon creates it, mode 0700)")
    where = str(path)
    if stat.S_ISLNK(link.st_mode):
        # A versioned install shares temp/ across versions: versions/<v>/temp -> ../../temp.
        if link.st_uid != uid:
            return StartupCheck(
                "temp", "fail", f"{path}: a symlink owned by uid {link.st_uid}, not us", fatal=True
            )
        where = f"{path} -> {os.path.realpath(path)}"
    if not stat.S_ISDIR(st.st_mode):
        return StartupCheck("temp", "fail", f"{where}: not a directory", fatal=True)
    if st.st_uid != uid:
        return StartupCheck(
            "temp", "fail", f"{where}: owned by uid {st.st_uid}, not by us (uid {uid})", fatal=True
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return StartupCheck(
            "temp", "fail", f"{where}: mode {mode:04o} lets others write; want 0700", fatal=True
        )
    if mode != 0o700:
        return StartupCheck("temp", "fail", f"{where}: mode {mode:04o}, want 0700")
    return StartupCheck("temp", "pass", f"{where}: ours, mode 0700")


def _writable(name: str, path: Path, also: Iterable[Path] = ()) -> StartupCheck:
    if not path.exists() and not path.is_symlink():
        return StartupCheck(name, "warn", f"{path}: missing (the daemon creates it)")
    for p in (path, *also):
        if not p.exists() and p != path:
            continue
        if not p.is_dir():
            return StartupCheck(name, "fail", f"{p}: not a directory", fatal=True)
        try:
            fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=p)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            return StartupCheck(name, "fail", f"{p}: not writable: {reason}", fatal=True)
    return StartupCheck(name, "pass", f"{path}: writable")


def check_data(tree: RuntimeTree) -> StartupCheck:
    return _writable("data", tree.data_dir)


def check_logs(tree: RuntimeTree) -> StartupCheck:
    own = tree.logs_dir / "runyard"
    result = _writable("logs", tree.logs_dir, [own])
    if result.status != "pass":
        return result
    audit = own / "audit.jsonl"
    if audit.exists() and not audit.is_file():
        return StartupCheck("logs", "fail", f"{audit}: not a regular file", fatal=True)
    return result


def check_disk(tree: RuntimeTree) -> StartupCheck:
    try:
        usage = shutil.disk_usage(tree.root)
    except OSError as exc:
        return StartupCheck("disk", "warn", f"cannot read free space: {exc.strerror or exc}")
    free, total = usage.free, usage.total
    mib = free / (1024 * 1024)
    share = free / total if total else 0.0
    detail = f"{mib:,.0f} MiB free ({share:.1%} of {total / (1024**3):,.1f} GiB)"
    if free < DISK_FAIL_BYTES:
        return StartupCheck(
            "disk", "fail", f"{detail}: below {DISK_FAIL_BYTES // (1024 * 1024)} MiB"
        )
    if free < DISK_WARN_BYTES or share < DISK_WARN_FRACTION:
        return StartupCheck("disk", "warn", f"{detail}: below 512 MiB or 5%")
    return StartupCheck("disk", "pass", detail)


def _port_free(port: int) -> bool | None:
    """True when 127.0.0.1:port can be bound (TIME_WAIT does not count), None when unsure."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            return None
    return True


def check_ports(manifest: Any, skip: Iterable[str] = ()) -> StartupCheck:
    skipped = set(skip)
    owners: dict[int, set[str]] = {}
    for entry in manifest.services:
        if entry.kind != "service" or entry.name in skipped:
            continue
        for p in entry.default_ports:
            if p.protocol != "udp" and 0 < p.port < 65536:
                owners.setdefault(p.port, set()).add(f"{entry.name}.{p.name}")
    busy = [
        f"{port} ({', '.join(sorted(owners[port]))})"
        for port in sorted(owners)
        if _port_free(port) is False
    ]
    if busy:
        return StartupCheck("ports", "warn", f"in use on 127.0.0.1: {_named(busy)}")
    note = f" ({len(skipped)} adopted service(s) not checked)" if skipped else ""
    return StartupCheck("ports", "pass", f"{len(owners)} default port(s) free{note}")


def check_license(
    tree: RuntimeTree, license_file: str | os.PathLike[str] | None, issuers: Iterable[str]
) -> tuple[StartupCheck, LicenseStatus]:
    status = tree_license(tree, license_file, issuers)
    if status.status == "valid":
        return StartupCheck("license", "pass", status.summary().removeprefix("license: ")), status
    if status.status == "missing":
        return StartupCheck("license", "pass", status.summary().removeprefix("license: ")), status
    return StartupCheck("license", "warn", status.summary().removeprefix("license: ")), status


def check_users(tree: RuntimeTree, manifest: Any, project: Project | None = None) -> StartupCheck:
    """Who each installed service would run as (template < ``project``), as this process."""
    from runyard.runtime.config.identity import resolve_run_as
    from runyard.runtime.config.project import Project, load_service_template
    from runyard.runtime.config.supervision import merge

    project = project if project is not None else Project()
    root: list[str] = []
    problems: list[str] = []
    config = str(tree.config_dir)
    uids: dict[tuple[Any, Any], int | str] = {}  # (user, group) -> uid or problem: one lookup
    for name in sorted({e.name for e in manifest.services if e.kind == "service"}):
        try:
            template = load_service_template(Path(f"{config}/{name}/service.toml"))
            settings = merge(template, project.service(name).supervise)
        except RunyardError as exc:
            problems.append(f"{name}: {exc}")
            continue
        key = (settings["user"], settings["group"])
        if key not in uids:
            try:
                uids[key] = resolve_run_as(*key).uid
            except RunyardError as exc:
                uids[key] = str(exc)
        uid = uids[key]
        if isinstance(uid, str):
            problems.append(f"{name}: {uid}")
        elif uid == 0:
            root.append(name)
    if problems:
        return StartupCheck("users", "warn", _named(problems))
    if root:
        return StartupCheck(
            "users", "warn", f'runs as root: {_named(root)} (set user = "..." in runyard.toml)'
        )
    return StartupCheck("users", "pass", "no service runs as root")


def run_checks(
    tree: RuntimeTree,
    *,
    license_file: str | os.PathLike[str] | None = None,
    issuers: Iterable[str] = (),
    skip_ports_of: Iterable[str] = (),
    project: Project | None = None,
) -> DoctorReport:
    """Every check of the tree, in the order of the module doc; ``project`` (the parsed
    runyard.toml) tells the users check who each service runs as."""
    from runyard.runtime.acquisition.drift import scan_dir

    report = DoctorReport(tree.root)
    checks = report.checks
    listed = scan_dir(str(tree.root), "bin")  # one walk of bin/ for the checksums and bin checks
    manifest_check, manifest = check_manifest(tree)
    report.manifest = manifest
    checks.append(manifest_check)
    if manifest is None:
        checks.append(StartupCheck("checksums", "skip", "the manifest is invalid"))
    else:
        checks.append(check_checksums(tree, manifest, listed))
    checks += [
        check_bin(tree, listed),
        check_temp(tree),
        check_data(tree),
        check_logs(tree),
        check_disk(tree),
    ]
    if manifest is None:
        checks.append(StartupCheck("ports", "skip", "the manifest is invalid"))
    else:
        checks.append(check_ports(manifest, skip_ports_of))
    license_check, report.license = check_license(tree, license_file, issuers)
    checks.append(license_check)
    if manifest is None:
        checks.append(StartupCheck("users", "skip", "the manifest is invalid"))
    else:
        checks.append(check_users(tree, manifest, project))
    return report
