"""What the daemon runs: every installed ``kind: service`` entry, resolved into a `ServiceSpec`.

A spec is the *effective* definition of a service: the manifest entry the project pins (or
the newest ensured), the supervision settings merged from built-in defaults, the template
``config/{service}/service.toml`` and ``[services.NAME]`` of runyard.toml, the merged env with
the scoped PATH, argv and cwd. Its ``digest`` (sha256 over a canonical encoding) is what reload
compares: a service restarts on reload only when its digest changed.

Dependency cycles and dependencies on unknown services are refused here, at load, naming them.

``admit`` applies the license's ``max_services``: which services may run when there are more
than the limit (the first ones in start order, a service only with its dependencies; at reload
the services already admitted keep their place).
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from runtime.env import resolve_service_env, select_entry
from runtime.errors import ProjectError, ResolveError, RunyardError
from runtime.manifest import PortDef, RuntimeManifest, load_manifest
from runtime.project import Project, load_service_template
from runtime.supervision import SupervisionError, merge, parse_signal
from runtime.tree import RuntimeTree

from .policy import BackoffPolicy
from .readiness import Readiness, parse_readiness

__all__ = ["ConfigError", "ServiceSpec", "admit", "load_specs", "start_order"]


class ConfigError(RunyardError):
    """The services cannot be run as configured (a cycle, an unknown dependency, a bad probe)."""


@dataclass(frozen=True)
class ServiceSpec:
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
    digest: str = field(default="", compare=False)

    @property
    def port_map(self) -> dict[str, int]:
        return {p.name: p.port for p in self.ports}


_digest_encoder = msgspec.json.Encoder(order="sorted")


def _digest(spec: ServiceSpec) -> str:
    data = {
        "name": spec.name,
        "version": spec.version,
        "argv": list(spec.argv),
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "ports": [msgspec.to_builtins(p) for p in spec.ports],
        "autostart": spec.autostart,
        "restart": spec.restart,
        "backoff": [
            spec.backoff.initial,
            spec.backoff.max,
            spec.backoff.multiplier,
            spec.backoff.jitter,
        ],
        "stable_secs": spec.stable_secs,
        "start_secs": spec.start_secs,
        "max_restarts": spec.max_restarts,
        "stop_signal": int(spec.stop_signal),
        "stop_timeout": spec.stop_timeout,
        "depends_on": dict(spec.depends_on),
        "readiness": msgspec.to_builtins(spec.readiness) if spec.readiness else None,
        "log_max_bytes": spec.log_max_bytes,
        "log_backups": spec.log_backups,
    }
    return hashlib.sha256(_digest_encoder.encode(data)).hexdigest()


def _build(
    tree: RuntimeTree, manifest: RuntimeManifest, name: str, project: Project
) -> ServiceSpec:
    entry = select_entry(manifest, name, project)
    template_path = tree.config_dir / name / "service.toml"
    template = load_service_template(template_path)
    settings = merge(template, project.service(name).supervise)
    where = f"{project.path or 'runyard.toml'}: services.{name}"
    # A readiness table replaces the template's whole: name the file it came from.
    from_template = project.service(name).supervise.readiness is None
    probe_where = f"{template_path}: readiness" if from_template else f"{where}.readiness"
    resolved = resolve_service_env(tree, name, project=project)
    ports = tuple(entry.default_ports)
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
    cwd = settings["cwd"]
    cwd_path = tree.root / cwd if cwd else tree.data_dir / name
    if not tree.contains(cwd_path):
        raise ConfigError(f"{where}.cwd: {cwd!r} leaves the runtime tree")
    args = settings["args"] if settings["args"] is not None else entry.args
    b = settings["backoff"]
    for key, value in (
        ("stop_timeout", settings["stop_timeout"]),
        ("start_secs", settings["start_secs"]),
    ):
        if value < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0, got {value}")
    if settings["max_restarts"] < 0:
        raise ConfigError(f"{where}.max_restarts: must be >= 0")
    spec = ServiceSpec(
        name=name,
        version=entry.version,
        argv=(str(tree.root / entry.bin_path), *args),
        env=resolved.env,
        cwd=str(cwd_path),
        ports=ports,
        autostart=settings["autostart"],
        restart=settings["restart"],
        backoff=BackoffPolicy(b["initial"], b["max"], b["multiplier"], b["jitter"]),
        stable_secs=settings["stable_secs"],
        start_secs=settings["start_secs"],
        max_restarts=settings["max_restarts"],
        stop_signal=stop_signal,
        stop_timeout=settings["stop_timeout"],
        depends_on=dict(settings["depends_on"]),
        readiness=readiness,
        log_max_bytes=settings["log_max_bytes"],
        log_backups=settings["log_backups"],
    )
    return _with_digest(spec)


def _with_digest(spec: ServiceSpec) -> ServiceSpec:
    object.__setattr__(spec, "digest", _digest(spec))
    return spec


def load_specs(tree: RuntimeTree, project: Project) -> tuple[dict[str, ServiceSpec], list[str]]:
    """Every runnable service, and warnings (project sections for services not installed)."""
    manifest = load_manifest(tree)
    names = sorted({s.name for s in manifest.services if s.kind == "service"})
    engines = {s.name for s in manifest.services if s.kind == "engine"}
    warnings = [
        f"runyard.toml: services.{n}: not installed as a service; ignored"
        for n in sorted(project.services)
        if n not in names and n not in engines
    ]
    specs: dict[str, ServiceSpec] = {}
    for name in names:
        try:
            specs[name] = _build(tree, manifest, name, project)
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
