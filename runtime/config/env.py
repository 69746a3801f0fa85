"""The environment of a spawned service, merged from layers; os.environ is never touched.

Layers, in order (later wins); ``sources`` in `ResolvedEnv` reports the label of the last layer
that set each variable:

    label                   what
    base                    the caller's environment (os.environ) without any RUNYARD_* variable
    default                 PATH (os.defpath), LANG=C.UTF-8 (when neither LANG nor LC_ALL is set),
                            HOME (from the password database), each only when missing
    manifest                ``env`` of the selected manifest entry
    config/{name}/env.toml  flat ``NAME = value`` table in the tree
    runyard.toml            project ``[env]``, then project ``[services.NAME].env``
    user                    user env.toml ``[env]``, then its ``[services.NAME].env``

Expansion. Every value of the manifest layer and later is expanded; base and default values are
taken as they are. Each layer (the project's ``[env]`` and its ``[services.NAME].env`` are two
layers, and so are the user's) is expanded against the result of all *previous* layers, never
against itself, so the order of keys inside one table does not matter and ``PATH =
"/opt/x:${PATH}"`` extends the PATH from before. ``${NAME}`` looks up, first, the built-ins:

    ${root}        tree root                      ${bin_dir}     the entry's install dir
    ${service}     service name                   ${data_dir}    data/{service}
    ${version}     selected version               ${logs_dir}    logs/{service}
    ${port.NAME}   the entry's defaultPorts       ${config_dir}  config/{service}

then the variables merged so far. ``$$`` is a literal ``$``; a bare ``$FOO`` stays literal; an
unknown ``${NAME}`` or an unterminated ``${`` raises ProjectError naming the layer's source and
the variable. No layer may set a RUNYARD_* variable (those belong to Runyard, not its children).

Scoped PATH. After merging, the service's bin dirs (the directory of the entry's binPath, then
``{install_dir}/bin`` when it exists and differs), then those of every service in the project's
``needs`` list, are prepended to the merged PATH (from whichever layer set it last). Duplicates
and empty components are dropped, the first occurrence wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from runyard.runtime.config.project import (
    Project,
    UserConfig,
    load_env_table,
    load_project,
    load_user_config,
    project_root,
)
from runyard.runtime.core.errors import ProjectError, ResolveError
from runyard.runtime.core.manifest import RuntimeManifest, ServiceEntry, load_manifest
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree, resolve_root
from runyard.runtime.core.versions import VersionSpec, pick_highest

__all__ = [
    "RESERVED_PREFIX",
    "EnvShared",
    "ResolvedEnv",
    "base_env",
    "expand",
    "resolve_service_env",
    "select_entry",
    "service_bin_dirs",
    "service_env",
    "user_config_path",
]

#: Variables with this prefix control Runyard itself; children never see them.
RESERVED_PREFIX = "RUNYARD_"

_REF_RE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")


class ResolvedEnv(msgspec.Struct, kw_only=True):
    """The environment for one service, with where each variable came from."""

    service: str
    version: str
    #: The complete environment to hand to the child (a new dict every call).
    env: dict[str, str]
    #: NAME -> label of the layer that set it last (see the module docstring).
    sources: dict[str, str]
    #: The bin dirs prepended to PATH, in order.
    path_dirs: list[str]


def _reserved(name: str) -> bool:
    return name.upper().startswith(RESERVED_PREFIX)


def user_config_path() -> Path:
    """``env.toml`` in the user config dir (honours XDG_CONFIG_HOME on Linux)."""
    import platformdirs

    return Path(platformdirs.user_config_dir("runyard")) / "env.toml"


def _home_dir() -> str | None:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir or None
    except (ImportError, KeyError, AttributeError):
        return None


def base_env(base: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """The base and default layers: a copy of ``base`` (os.environ) minus RUNYARD_*, plus defaults.

    Returns (env, sources). ``base`` itself is only read.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not _reserved(k)}
    sources = dict.fromkeys(env, "base")
    defaults: dict[str, str] = {}
    if "PATH" not in env:
        defaults["PATH"] = os.defpath
    if "LANG" not in env and "LC_ALL" not in env:
        defaults["LANG"] = "C.UTF-8"
    if "HOME" not in env:
        home = _home_dir()
        if home:
            defaults["HOME"] = home
    env.update(defaults)
    sources.update(dict.fromkeys(defaults, "default"))
    return env, sources


class EnvShared:
    """What resolving many services at once shares, made once (issue 16, cold start): the base
    and default layers (``base_env``), the tree root as text, the names in ``config/``, and
    the user's env.toml.

    It lives for one call (the daemon's ``load_specs``): a reload makes a new one, so it reads
    a changed user config file. The user config is read at the first service's resolution, as
    each resolution used to read it, so the errors come in the order they did. Paths below the
    root are joined as text (``prefix``): service names, versions and platforms of a validated
    manifest are plain path components.
    """

    def __init__(
        self,
        tree: RuntimeTree,
        base: Mapping[str, str] | None = None,
        user_config: Path | None = None,
    ) -> None:
        self.root = str(tree.root)
        self.prefix = self.prefix_of(tree)
        self.env, self.sources = base_env(base)
        try:  # one listing, not two failing stats per service without a config/{name}/
            listed = os.listdir(f"{self.prefix}config")
            # casefolded: on a case-insensitive file system config/Web/ is web's, as a stat says
            self._configured: frozenset[str] | None = frozenset(n.casefold() for n in listed)
        except OSError:
            self._configured = None
        self._user_config = user_config
        self._user: UserConfig | None = None

    def user(self) -> UserConfig:
        if self._user is None:
            if self._user_config is None:
                self._user = load_user_config(user_config_path())
            else:
                self._user = load_user_config(Path(self._user_config), missing_ok=False)
        return self._user

    @staticmethod
    def prefix_of(tree: RuntimeTree) -> str:
        """The root as text, ending with one separator (``/`` is its own)."""
        root = str(tree.root)
        return root if root.endswith(os.sep) else root + os.sep

    def configured(self, name: str) -> bool:
        """Whether ``config/{name}`` may hold files (False: it was not there at the start)."""
        return self._configured is None or name.casefold() in self._configured


def expand(value: str, lookup: Callable[[str], str | None], source: str, key: str) -> str:
    """Expand ``${NAME}`` and ``$$`` in ``value``; ``lookup`` returns None for unknown names."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        if m.group(3):
            raise ProjectError(f"{source}: {key}: unterminated '${{' in {value!r}")
        ref = m.group(2)
        found = lookup(ref)
        if found is None:
            raise ProjectError(
                f"{source}: {key}: ${{{ref}}} is not defined "
                "(neither a built-in nor set by an earlier layer)"
            )
        return found

    return _REF_RE.sub(sub, value)


def _platform_entries(manifest: RuntimeManifest, name: str) -> list[ServiceEntry]:
    os_name, arch = current_os(), current_arch()
    return [e for e in manifest.find(name) if e.os == os_name and e.arch == arch]


def select_entry(
    manifest: RuntimeManifest, name: str, project: Project | None = None
) -> ServiceEntry:
    """The installed entry of ``name`` to run on this os/arch.

    With a ``version`` pin in the project: the highest installed version matching it. Without:
    the most recently installed one. ResolveError when nothing fits.
    """
    entries = _platform_entries(manifest, name)
    if not entries:
        here = f"{current_os()}-{current_arch()}"
        elsewhere = sorted({e.platform for e in manifest.find(name)})
        if elsewhere:
            raise ResolveError(
                f"service {name!r} is not installed for {here} "
                f"(installed for: {', '.join(elsewhere)})"
            )
        installed = sorted({e.name for e in _all_here(manifest)})
        raise ResolveError(
            f"service {name!r} is not installed (installed: {', '.join(installed) or 'none'})"
        )
    pin = project.service(name).version if project is not None else None
    if not pin:
        return entries[0]
    spec = VersionSpec.parse(pin)
    best = pick_highest(spec, [e.version for e in entries])
    if best is None:
        versions = ", ".join(sorted({e.version for e in entries}))
        raise ResolveError(
            f"service {name!r}: no installed version matches {pin!r} (installed: {versions})"
        )
    return next(e for e in entries if e.version == best)


def _all_here(manifest: RuntimeManifest) -> list[ServiceEntry]:
    os_name, arch = current_os(), current_arch()
    return [e for e in manifest.services if e.os == os_name and e.arch == arch]


def service_bin_dirs(
    tree: RuntimeTree, entry: ServiceEntry, prefix: str | None = None
) -> list[str]:
    """The dir holding the entry's binary, then ``{install_dir}/bin`` when it exists and differs.

    ``prefix``: `EnvShared.prefix`, made once by a caller that resolves many services.
    """
    prefix = EnvShared.prefix_of(tree) if prefix is None else prefix
    first = os.path.dirname(os.path.normpath(prefix + entry.bin_path))
    dirs = [first]
    extra = f"{prefix}{entry.install_rel}/bin"
    if os.path.isdir(extra) and os.path.normpath(extra) != first:
        dirs.append(os.path.normpath(extra))
    return dirs


def _builtins(shared: EnvShared, entry: ServiceEntry) -> dict[str, str]:
    name, prefix = entry.name, shared.prefix  # the dirs are tree.service_dirs', as text
    out = {
        "root": shared.root,
        "service": name,
        "version": entry.version,
        "bin_dir": prefix + entry.install_rel,
        "data_dir": f"{prefix}data/{name}",
        "logs_dir": f"{prefix}logs/{name}",
        "config_dir": f"{prefix}config/{name}",
    }
    for port in entry.default_ports:
        out[f"port.{port.name}"] = str(port.port)
    return out


def _join_path(prepend: list[str], path: str) -> str:
    seen: set[str] = set()
    out: list[str] = []
    for part in [*prepend, *path.split(os.pathsep)]:
        if part and part not in seen:
            seen.add(part)
            out.append(part)
    return os.pathsep.join(out)


def resolve_service_env(
    tree: RuntimeTree,
    name: str,
    *,
    project: Project | None = None,
    user_config: Path | None = None,
    base: Mapping[str, str] | None = None,
    manifest: RuntimeManifest | None = None,
    shared: EnvShared | None = None,
    entry: ServiceEntry | None = None,
) -> ResolvedEnv:
    """Merge every layer for service ``name`` of ``tree``.

    ``project`` None means no project file (it is not looked up here). ``user_config`` None means
    `user_config_path` (absent = no user overrides); an explicit path must exist. ``base``
    defaults to os.environ, which is only read. ``manifest``: the tree's, already loaded (the
    daemon resolves every service against one load: loading it per service made a start of N
    services cost N x N path checks). ``shared``: the base layers and user config made once for
    many services of ``tree`` (then ``base`` and ``user_config`` are its, not these arguments).
    ``entry``: ``select_entry(manifest, name, project)``, when the caller has it already.
    """
    manifest = manifest if manifest is not None else load_manifest(tree)
    project = project if project is not None else Project()
    entry = select_entry(manifest, name, project) if entry is None else entry
    shared = shared if shared is not None else EnvShared(tree, base, user_config)
    user = shared.user()
    env, sources = dict(shared.env), dict(shared.sources)
    builtins = _builtins(shared, entry)
    for layer in _layers(shared, entry, project, user):
        env = _apply_layer(env, sources, builtins, *layer)
    path_dirs = _scoped_path(tree, manifest, entry, project, shared.prefix)
    env["PATH"] = _join_path(path_dirs, env.get("PATH", ""))
    sources.setdefault("PATH", "default")
    return ResolvedEnv(
        service=name, version=entry.version, env=env, sources=sources, path_dirs=path_dirs
    )


#: (label for sources, source named in errors, key prefix in errors, values)
_Layer = tuple[str, str, str, Mapping[str, str]]


def _layers(
    shared: EnvShared, entry: ServiceEntry, project: Project, user: UserConfig
) -> list[_Layer]:
    """The env layers of ``entry``, lowest precedence first."""
    name = entry.name
    project_src = str(project.path) if project.path is not None else "runyard.toml"
    config_file = f"{shared.prefix}config/{name}/env.toml"
    table = load_env_table(Path(config_file)) if shared.configured(name) else {}
    user_src = str(user.path)
    user_svc = user.services.get(name)
    return [
        ("manifest", f"manifest env ({name} {entry.version})", "", entry.env),
        (f"config/{name}/env.toml", config_file, "", table),
        ("runyard.toml", project_src, "env.", project.env),
        ("runyard.toml", project_src, f"services.{name}.env.", project.service(name).env),
        ("user", user_src, "env.", user.env),
        ("user", user_src, f"services.{name}.env.", user_svc.env if user_svc else {}),
    ]


def _apply_layer(
    before: dict[str, str],
    sources: dict[str, str],
    builtins: dict[str, str],
    label: str,
    src: str,
    prefix: str,
    values: Mapping[str, str],
) -> dict[str, str]:
    """``before`` with one layer's values set, each expanded against the built-ins and the
    layers below (never against its own layer); ``sources`` records the layer's label."""

    def lookup(ref: str) -> str | None:
        return builtins[ref] if ref in builtins else before.get(ref)

    updates: dict[str, str] = {}
    for key, raw in values.items():
        if _reserved(key):
            raise ProjectError(
                f"{src}: {prefix}{key}: {RESERVED_PREFIX}* variables are reserved for Runyard"
            )
        updates[key] = expand(raw, lookup, src, f"{prefix}{key}")
    sources.update(dict.fromkeys(updates, label))
    return {**before, **updates}


def _scoped_path(
    tree: RuntimeTree, manifest: RuntimeManifest, entry: ServiceEntry, project: Project, prefix: str
) -> list[str]:
    """The bin dirs PATH starts with: the service's own, then those of what it needs."""
    name = entry.name
    path_dirs = service_bin_dirs(tree, entry, prefix)
    for need in project.service(name).needs:
        try:
            needed = select_entry(manifest, need, project)
        except ResolveError as exc:
            raise ResolveError(f"{name} needs {need}: {exc}") from None
        path_dirs.extend(d for d in service_bin_dirs(tree, needed, prefix) if d not in path_dirs)
    return path_dirs


def service_env(
    name: str, *, root: Path | str | None = None, project: Project | None = None
) -> dict[str, str]:
    """The environment to spawn service ``name`` with: a new dict; os.environ is untouched.

    ``project`` None loads ``runyard.toml`` from the working directory when there is one. The
    tree is ``resolve_root(root, project_root(project))``.
    """
    if project is None:
        project = load_project()
    tree = RuntimeTree(resolve_root(root, project_root(project)))
    return resolve_service_env(tree, name, project=project).env
