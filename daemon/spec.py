"""What the daemon runs: every installed ``kind: service`` entry, resolved into a `ServiceSpec`.

A spec is the *effective* definition of a service: the manifest entry the project pins (or
the newest ensured), the supervision settings merged from built-in defaults, the template
``config/{service}/service.toml`` and ``[services.NAME]`` of runyard.toml, the merged env with
the scoped PATH, argv and cwd. A spec is a frozen msgspec Struct, and its ``digest`` is the
sha256 of the Struct itself encoded with sorted keys, every field but the digest: no hand-kept
field list, so a field added later cannot escape reload. Reload compares digests: a service
restarts on reload only when its digest changed.

Dependency cycles and dependencies on unknown services are refused here, at load, naming them.

``admit`` applies the license's ``max_services``: which services may run when there are more
than the limit (the first ones in start order, a service only with its dependencies; at reload
the services already admitted keep their place).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from runyard.runtime.config.env import EnvShared, resolve_service_env, select_entry
from runyard.runtime.config.identity import RunAs, daemon_identity, resolve_run_as
from runyard.runtime.config.limits import Limits, parse_limits
from runyard.runtime.config.project import Project, load_service_template
from runyard.runtime.config.supervision import (
    Supervision,
    SupervisionError,
    merge,
    parse_log_mode,
    parse_signal,
    parse_umask,
)
from runyard.runtime.core.digest import sha256
from runyard.runtime.core.errors import ConfigError, ProjectError, ResolveError
from runyard.runtime.core.manifest import PortDef, RuntimeManifest, load_manifest
from runyard.runtime.core.tree import RuntimeTree

from .liveness import Liveness, parse_liveness
from .policy import BackoffPolicy
from .readiness import Readiness, parse_readiness

__all__ = [
    "ConfigError",
    "ServiceSpec",
    "admit",
    "dependency_levels",
    "load_specs",
    "spec_digest",
    "start_order",
    "with_dependencies",
]


class ServiceSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    ports: tuple[PortDef, ...]
    autostart: bool
    restart: str
    backoff: BackoffPolicy
    stable_secs: float
    start_secs: float
    max_restarts: int
    stop_signal: signal.Signals
    stop_timeout: float
    depends_on: Mapping[str, str]
    readiness: Readiness | None
    log_max_bytes: int
    log_backups: int
    log_mode: int = 0o640
    #: The liveness probe (daemon/liveness.py), or None: no restart for not answering.
    liveness: Liveness | None = None
    # --- containment (issue 12) ---
    #: ``auto`` (a cgroup when the daemon can make one) or ``subreaper``.
    containment: str = "auto"
    # --- who the service runs as (runtime/config/identity.py) ---
    #: The credentials the child takes before exec; None (a spec made by hand): the daemon's.
    run_as: RunAs | None = None
    no_new_privileges: bool = True
    #: The child's umask; None: the daemon's.
    umask: int | None = None
    #: spec_digest of every other field; set once by ``with_digest``.
    digest: str = ""
    # --- resource limits (runtime/config/limits.py) ---
    limits: Limits = Limits()
    # --- sd_notify (daemon/notify.py) ---
    notify: bool = False
    watchdog_sec: float = 0.0
    # --- the installed files (issue 13) ---
    #: sha256 of every installed file of the entry (manifest ``services[].files``): a bundle
    #: upgrade through ``DIR/current`` that changes a program but not the service's version
    #: keeps ``argv`` as it was, and only this tells reload that the service must restart.
    files: Mapping[str, str] = {}
    #: The entry's os-arch (``linux-amd64``): with name and version, the install lock the
    #: daemon holds shared while it spawns (runtime/core/locking.py). Empty: made by hand.
    platform: str = ""

    @property
    def notify_ready(self) -> bool:
        """READY=1 is this service's readiness: notify on, and no probe configured."""
        return self.notify and self.readiness is None

    @property
    def has_readiness(self) -> bool:
        """Running is not enough to be ready: a probe or READY=1 decides."""
        return self.readiness is not None or self.notify_ready

    @property
    def port_map(self) -> dict[str, int]:
        return {p.name: p.port for p in self.ports}


_digest_encoder = msgspec.json.Encoder(order="sorted")


def spec_digest(spec: msgspec.Struct) -> str:
    """sha256 over the Struct's own encoding (fields and dict keys sorted), ``digest`` left out.

    Generic on purpose: it takes whatever fields the Struct has, so a new field of ServiceSpec
    changes the digest without anyone remembering to list it here.
    """
    fields = msgspec.to_builtins(spec, order="sorted")
    fields.pop("digest", None)
    return sha256(_digest_encoder.encode(fields)).hexdigest()


def with_digest(spec: ServiceSpec) -> ServiceSpec:
    return msgspec.structs.replace(spec, digest=spec_digest(spec))


class _Checked(NamedTuple):
    """The merged settings that needed more than their type: parsed and checked."""

    readiness: Readiness | None
    stop_signal: signal.Signals
    log_mode: int
    cwd: str
    limits: Limits
    liveness: Liveness | None = None


class _Load:
    """What every service of one ``load_specs`` call shares, made once for the call (a reload
    makes a new one): the env's base layers and user config, the real paths of the root and
    of data/, the daemon's identity (issue 16: per service, they cost the cold start)."""

    def __init__(self, tree: RuntimeTree, base: Mapping[str, str] | None) -> None:
        self.tree = tree
        self.env = EnvShared(tree, base)
        self.root = self.env.root
        self.data_dir = f"{self.env.prefix}data"
        self.real_root = os.path.realpath(self.root)
        self.real_data = os.path.realpath(self.data_dir)
        self._own: RunAs | None = None

    def default_cwd(self, name: str) -> tuple[str, str]:
        """``data/{name}`` and its real path, with one lstat when data/ is resolved already."""
        cwd = f"{self.data_dir}/{name}"
        real = os.path.join(self.real_data, name)
        return cwd, os.path.realpath(cwd) if os.path.islink(real) else real

    def template(self, name: str) -> tuple[Supervision, str]:
        """``config/{name}/service.toml`` loaded (missing: the defaults), and its path."""
        path = f"{self.env.prefix}config/{name}/service.toml"
        if not self.env.configured(name):
            return Supervision(), path
        return load_service_template(Path(path)), path

    def own(self) -> RunAs:
        if self._own is None:
            self._own = daemon_identity()
        return self._own


def _check_settings(
    load: _Load,
    name: str,
    settings: Mapping[str, Any],
    ports: Sequence[PortDef],
    where: str,
    probe_where: str,
) -> _Checked:
    """Parse the probe, the stop signal and the file mode, keep cwd inside the tree, check the
    ranges; a bad value is one ConfigError naming where it came from."""
    readiness = None
    if settings["readiness"] is not None:
        try:
            readiness = parse_readiness(
                settings["readiness"], {p.name: p.port for p in ports}, probe_where
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        stop_signal = parse_signal(settings["stop_signal"])
    except SupervisionError as exc:
        raise ConfigError(f"{where}.stop_signal: {exc}") from None
    try:
        log_mode = parse_log_mode(settings["log_mode"])
    except SupervisionError as exc:
        raise ConfigError(f"{where}.log_mode: {exc}") from None
    cwd = settings["cwd"]
    if cwd:
        cwd_path = str(load.tree.root / cwd)
        real = os.path.realpath(cwd_path)
    else:
        cwd_path, real = load.default_cwd(name)
    if not load.tree.contains(real, real_root=load.real_root, resolved=True):
        raise ConfigError(f"{where}.cwd: {cwd!r} leaves the runtime tree")
    for key in ("stop_timeout", "start_secs"):
        if settings[key] < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0, got {settings[key]}")
    if settings["watchdog_sec"] > 0 and not settings["notify"]:
        raise ConfigError(f"{where}.watchdog_sec: needs notify = true (WATCHDOG=1 comes over it)")
    if settings["max_restarts"] < 0:
        raise ConfigError(f"{where}.max_restarts: must be >= 0")
    try:
        limits = parse_limits(settings)
    except SupervisionError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return _Checked(readiness, stop_signal, log_mode, cwd_path, limits)


def _check_liveness(
    settings: Mapping[str, Any], ports: Sequence[PortDef], where: str
) -> Liveness | None:
    if settings["liveness"] is None:
        return None
    try:
        return parse_liveness(settings["liveness"], {p.name: p.port for p in ports}, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_identity(
    settings: Mapping[str, Any], where: str, own: RunAs | None = None
) -> tuple[RunAs, int | None]:
    """The user and group as numbers (refused when unknown, or when only root could take
    them), and the umask; a bad value is one ConfigError naming the service's setting."""
    try:
        run_as = resolve_run_as(settings["user"], settings["group"], own=own)
    except SupervisionError as exc:  # its text starts with "user: " or "group: "
        raise ConfigError(f"{where}.{exc}") from None
    umask = None
    if settings["umask"] is not None:
        try:
            umask = parse_umask(settings["umask"])
        except SupervisionError as exc:
            raise ConfigError(f"{where}.umask: {exc}") from None
    return run_as, umask


def _build(
    tree: RuntimeTree,
    manifest: RuntimeManifest,
    name: str,
    project: Project,
    base: Mapping[str, str] | None = None,
    load: _Load | None = None,
) -> ServiceSpec:
    load = _Load(tree, base) if load is None else load
    entry = select_entry(manifest, name, project)
    template, template_path = load.template(name)
    settings = merge(template, project.service(name).supervise)
    where = f"{project.path or 'runyard.toml'}: services.{name}"
    # A readiness table replaces the template's whole: name the file it came from.
    from_template = project.service(name).supervise.readiness is None
    probe_where = f"{template_path}: readiness" if from_template else f"{where}.readiness"
    resolved = resolve_service_env(
        tree, name, project=project, manifest=manifest, shared=load.env, entry=entry
    )
    ports = tuple(entry.default_ports)
    checked = _check_settings(load, name, settings, ports, where, probe_where)
    live_own = project.service(name).supervise.liveness is not None
    live_where = f"{where}.liveness" if live_own else f"{template_path}: liveness"
    checked = checked._replace(liveness=_check_liveness(settings, ports, live_where))
    run_as, umask = _check_identity(settings, where, load.own())
    args = settings["args"] if settings["args"] is not None else entry.args
    b = settings["backoff"]
    spec = ServiceSpec(
        name=name,
        version=entry.version,
        argv=(str(tree.root / entry.bin_path), *args),
        env=resolved.env,
        cwd=checked.cwd,
        ports=ports,
        autostart=settings["autostart"],
        restart=settings["restart"],
        backoff=BackoffPolicy(b["initial"], b["max"], b["multiplier"], b["jitter"]),
        stable_secs=settings["stable_secs"],
        start_secs=settings["start_secs"],
        max_restarts=settings["max_restarts"],
        stop_signal=checked.stop_signal,
        stop_timeout=settings["stop_timeout"],
        depends_on=dict(settings["depends_on"]),
        readiness=checked.readiness,
        log_max_bytes=settings["log_max_bytes"],
        log_backups=settings["log_backups"],
        log_mode=checked.log_mode,
        liveness=checked.liveness,
        containment=settings["containment"],
        limits=checked.limits,
        run_as=run_as,
        no_new_privileges=settings["no_new_privileges"],
        umask=umask,
        notify=settings["notify"],
        watchdog_sec=settings["watchdog_sec"],
        files=dict(entry.files),
        platform=entry.platform,
    )
    return with_digest(spec)


def load_specs(
    tree: RuntimeTree, project: Project, manifest: RuntimeManifest | None = None
) -> tuple[dict[str, ServiceSpec], list[str]]:
    """Every runnable service, and warnings (none today).

    A ``[services.NAME]`` section for a name that is neither an installed service nor an engine
    is a ConfigError naming the section: a typo (``[services.wbe]``) would otherwise drop that
    service's settings without a word, and it would run with the defaults.
    """
    if manifest is None:  # else the caller's, loaded and validated already (boot: the checks')
        manifest = load_manifest(tree)
    names = sorted({s.name for s in manifest.services if s.kind == "service"})
    # os.environ read once, not once per service (each read decodes every name and value)
    base = dict(os.environ)
    engines = {s.name for s in manifest.services if s.kind == "engine"}
    warnings: list[str] = []
    unknown = [n for n in sorted(project.services) if n not in names and n not in engines]
    if unknown:
        source = project.path or "runyard.toml"
        raise ConfigError(
            f"{source}: [services.{unknown[0]}]: no installed service or engine is named "
            f"{unknown[0]!r} (installed: {', '.join(sorted([*names, *engines])) or 'none'}; "
            "runyard runtime ensure it, or fix the name)"
        )
    specs: dict[str, ServiceSpec] = {}
    load = _Load(tree, base)  # for this call only: a reload reads the user config again
    for name in names:
        try:
            specs[name] = _build(tree, manifest, name, project, load=load)
        except (ProjectError, ResolveError) as exc:
            raise ConfigError(str(exc)) from None
    for name, spec in specs.items():
        for dep in spec.depends_on:
            if dep not in specs:
                raise ConfigError(
                    f"services.{name}.depends_on: {dep!r} is not an installed service "
                    f"(installed: {', '.join(sorted(specs)) or 'none'})"
                )
    start_order(specs)  # raises on a cycle
    return specs, warnings


def start_order(specs: Mapping[str, ServiceSpec]) -> list[str]:
    """Dependencies first; ties by name. A cycle raises ConfigError naming it (a -> b -> a)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise ConfigError(f"dependency cycle: {' -> '.join(cycle)}")
        state[name] = 1
        path.append(name)
        for dep in sorted(specs[name].depends_on):
            if dep in specs:
                visit(dep)
        path.pop()
        state[name] = 2
        order.append(name)

    for name in sorted(specs):
        visit(name)
    return order


def admit(
    order: Sequence[str],
    depends_on: Mapping[str, Collection[str]],
    limit: int | None,
    keep: Collection[str] = (),
) -> list[str]:
    """The services allowed to run under ``limit`` (None: all), in ``order``.

    ``order`` is the start order (dependencies first, ties by name), so the first ``limit``
    services are admitted and an admitted service's dependencies always are too. The services
    in ``keep`` (admitted before a reload) are admitted first, so adding a service never
    pushes out one that runs; a kept service whose dependencies are not all admitted is not.
    """
    if limit is None or len(order) <= limit:
        return list(order)
    admitted: set[str] = set()
    for first_pass in (True, False):
        for name in order:
            if len(admitted) >= limit:
                break
            if name in admitted or (first_pass and name not in keep):
                continue
            if all(dep in admitted for dep in depends_on.get(name, ())):
                admitted.add(name)
    return [n for n in order if n in admitted]


def with_dependencies(
    deps: Mapping[str, Mapping[str, str]], order: Sequence[str], names: Iterable[str]
) -> list[str]:
    """``names`` and everything they depend on, transitively, in ``order``."""
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        wanted.add(name)
        stack.extend(deps[name])
    return [n for n in order if n in wanted]


def dependency_levels(
    deps: Mapping[str, Mapping[str, str]], order: Sequence[str], names: Iterable[str]
) -> list[list[str]]:
    """``names`` grouped by dependency depth, deepest (most dependent) first."""
    depth: dict[str, int] = {}
    for name in order:  # dependencies come first in order
        if name not in deps:
            continue
        depth[name] = 1 + max((depth[d] for d in deps[name] if d in depth), default=-1)
    chosen = set(names)
    levels: dict[int, list[str]] = {}
    for name in depth:
        if name in chosen:
            levels.setdefault(depth[name], []).append(name)
    return [levels[d] for d in sorted(levels, reverse=True)]
