"""The optional project file ``runyard.toml`` and the env override files that share its shapes.

    root = "./runtime"        # optional; a relative path is relative to this file's directory
    version = "1.4.0"         # optional: this runtime's semantic version (`bundle pack` uses it)
    [env]                     # optional; every service gets these
    TZ = "UTC"
    [services.web]
    version = "1.2.x"         # optional pin: a VersionSpec the running version must match
    needs = ["redis"]         # optional: these services' bin dirs join the PATH of web
    env = { PORT = "8080" }   # optional; applied after [env]
    restart = "always"        # optional supervision settings: see runtime/config/supervision.py

Env values may be strings, integers, floats or booleans; they become strings (``true``/``false``).
Tables, arrays and dates are refused. Every problem is one ``ProjectError`` line naming the file and
the key: ``runyard.toml: services.web.env.PORT: expected a string, number or boolean, got array``.

Two more files use the same value rules:

* ``config/{service}/env.toml`` in the tree: a flat table ``NAME = value`` (`load_env_table`);
* the user's ``env.toml`` (`load_user_config`): ``[env]`` plus ``[services.NAME] env = {...}``.

To add a per-service setting, add a field with a default to `ProjectService`; unknown keys are
refused, so a typo never passes silently.
"""

from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from runyard.runtime.config.supervision import Supervision, range_problem
from runyard.runtime.core.capped import SMALL_FILE, read_toml_capped
from runyard.runtime.core.errors import FileRefused, ProjectError
from runyard.runtime.core.manifest import decode_error_message
from runyard.runtime.core.tree import RESERVED_NAMES, check_name, find_project_file
from runyard.runtime.core.versions import VersionSpec

__all__ = [
    "DaemonSettings",
    "Project",
    "ProjectService",
    "ServiceOverride",
    "UserConfig",
    "check_env_name",
    "load_env_table",
    "load_project",
    "load_project_leniently",
    "load_service_template",
    "load_user_config",
    "parse_project",
    "project_root",
]

T = TypeVar("T")


_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


class ProjectService(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.NAME]`` of the project file."""

    #: A version spec (``latest``, ``1.2.3``, ``1.2.x``) the running version must match; None = any.
    version: str | None = None
    #: Services whose bin dirs are prepended to this one's PATH (after its own).
    needs: list[str] = []
    #: Env overrides for this service only; applied after the project's ``[env]``.
    env: dict[str, str] = {}
    #: The supervision settings (autostart, restart, backoff, ...) written in the same table.
    supervise: Supervision = msgspec.field(default_factory=Supervision)


class DaemonSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[daemon]`` of the project file: settings of the daemon itself."""

    #: Serve ``GET /healthz`` and ``GET /readyz`` on 127.0.0.1:PORT; None = off.
    health_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    #: ``"HOST:PORT"``: also serve control on tcp://HOST:PORT and events on tcp://HOST:PORT+1,
    #: CurveZMQ only (both settings below are then required); None = ipc only.
    tcp: str | None = None
    #: The daemon's CurveZMQ ``.key_secret`` certificate (mode 0600); relative = to this file.
    curve_secret_key: str | None = None
    #: A directory of client ``*.key`` public certificates allowed in; relative = to this file.
    curve_authorized_dir: str | None = None


class Project(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A loaded project file; ``Project()`` is the empty project used when there is no file."""

    #: The file it was read from (absolute), or None.
    path: Path | None = None
    #: The tree root as written in the file; see `project_root` for the resolved path.
    root: str | None = None
    #: The runtime's own semantic version (``x.y.z``), the default of ``bundle pack --version``.
    version: str | None = None
    #: Env overrides for every service.
    env: dict[str, str] = {}
    services: dict[str, ProjectService] = {}
    daemon: DaemonSettings = msgspec.field(default_factory=DaemonSettings)

    def service(self, name: str) -> ProjectService:
        """The ``[services.NAME]`` settings, or the defaults when the file has none."""
        return self.services.get(name) or ProjectService()


class ServiceOverride(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[services.NAME]`` of the user's env.toml: only ``env``."""

    env: dict[str, str] = {}


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The user's ``env.toml``: ``[env]`` for every service, ``[services.NAME] env`` for one."""

    path: Path | None = None
    env: dict[str, str] = {}
    services: dict[str, ServiceOverride] = {}


# --- helpers -----------------------------------------------------------------------------------

_OBJECT_RE = re.compile(r"\bobject\b")


def _toml_type(value: object) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return "date/time"
    return type(value).__name__


def _fail(source: str, where: str, problem: str) -> ProjectError:
    return ProjectError(f"{source}: {where}: {problem}")


def check_env_name(name: str) -> str | None:
    """Why ``name`` cannot be an environment variable name, or None."""
    if not name:
        return "an env name must not be empty"
    if "=" in name or "\x00" in name:
        return f"env name {name!r} must not contain '=' or NUL"
    return None


def _env_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _env_table(value: object, source: str, where: str) -> dict[str, str]:
    """A TOML table of NAME = scalar as dict[str, str]; ``where`` is the key path ("" = top)."""
    if not isinstance(value, dict):
        raise _fail(source, where or "(top level)", f"expected a table, got {_toml_type(value)}")
    out: dict[str, str] = {}
    for key, raw in value.items():
        at = f"{where}.{key}" if where else key
        problem = check_env_name(key)
        if problem:
            raise _fail(source, at or repr(key), problem)
        text = _env_value(raw)
        if text is None:
            raise _fail(source, at, f"expected a string, number or boolean, got {_toml_type(raw)}")
        out[key] = text
    return out


def _convert(data: object, typ: type[T], source: str, where: str) -> T:
    """msgspec.convert with errors as one ProjectError line: ``FILE: where.path: problem``."""
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as exc:
        msg = decode_error_message(exc, root_name="\x00")
        path, _, problem = msg.partition(": ")
        value = _at(data, path)
        problem = range_problem(path.rpartition(".")[2], value) or problem
        problem = _OBJECT_RE.sub("table", problem.replace(" | null", ""))
        if path == "\x00":
            path = where or "(top level)"
        elif where:
            path = f"{where}{path}" if path.startswith("[") else f"{where}.{path}"
        raise _fail(source, path, problem) from None


def _at(data: object, path: str) -> object:
    """The value at a dotted key path of ``data`` (None when there is none)."""
    for key in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return read_toml_capped(path, SMALL_FILE)
    except FileRefused as exc:
        raise ProjectError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path}: {exc}") from None
    except UnicodeDecodeError:
        raise ProjectError(f"{path}: not valid UTF-8") from None
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such file") from None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _services_table(data: dict[str, Any], source: str) -> dict[str, Any]:
    services = data.get("services", {})
    if not isinstance(services, dict):
        raise _fail(source, "services", f"expected a table, got {_toml_type(services)}")
    for name, table in services.items():
        problem = check_name(name)
        if problem:
            raise _fail(source, f"services.{name}", problem)
        if name in RESERVED_NAMES:
            raise _fail(source, f"services.{name}", f"{name!r} is reserved for Runyard itself")
        if not isinstance(table, dict):
            raise _fail(source, f"services.{name}", f"expected a table, got {_toml_type(table)}")
    return services


# --- the project file ---------------------------------------------------------------------------


def parse_project(data: dict[str, Any], path: Path | None = None) -> Project:
    """Check and convert a parsed ``runyard.toml``; errors name ``path`` and the key."""
    source = str(path) if path is not None else "runyard.toml"
    if "path" in data:
        raise _fail(source, "path", "unknown field")
    env = _env_table(data["env"], source, "env") if "env" in data else {}
    services: dict[str, ProjectService] = {}
    for name, table in _services_table(data, source).items():
        at = f"services.{name}"
        table = dict(table)
        if "env" in table:
            table["env"] = _env_table(table["env"], source, f"{at}.env")
        if "supervise" in table:
            raise _fail(source, f"{at}.supervise", "unknown field")
        own = {k: table.pop(k) for k in ("version", "needs", "env") if k in table}
        own["supervise"] = _convert(table, Supervision, source, at)
        svc = _convert(own, ProjectService, source, at)
        if svc.version is not None:
            try:
                VersionSpec.parse(svc.version)
            except ValueError as exc:
                raise _fail(source, f"{at}.version", str(exc)) from None
        for i, need in enumerate(svc.needs):
            problem = check_name(need)
            if problem:
                raise _fail(source, f"{at}.needs[{i}]", problem)
            if need == name:
                raise _fail(source, f"{at}.needs[{i}]", "a service cannot need itself")
        services[name] = svc
    rest = {k: v for k, v in data.items() if k not in ("env", "services")}
    project = _convert(rest, Project, source, "")
    if project.version is not None and not _SEMVER.match(project.version):
        raise _fail(source, "version", f"{project.version!r} is not a semantic version (x.y.z)")
    return msgspec.structs.replace(project, path=path, env=env, services=services)


def load_project(path: Path | None = None) -> Project:
    """Read a project file; None looks for ``runyard.toml`` in the working directory.

    With no file found, the empty `Project` is returned; an explicit path must exist.
    """
    if path is None:
        path = find_project_file()
        if path is None:
            return Project()
    path = Path(path).absolute()
    return parse_project(_read_toml(path), path)


def load_project_leniently(path: Path | None = None) -> tuple[Project, str | None]:
    """`load_project` for commands that only read or stop: a broken file is a warning, not a
    refusal, so ``status`` and ``shutdown`` still work while someone fixes a typo.

    Returns the project and the warning (the ProjectError's line: the file and the line or key).
    A broken file gives an empty project, except its top-level ``root = "..."`` when that one line
    still reads as TOML, so the tree is found as before. An explicit path that does not exist is
    still an error: that is a mistyped ``--project``, not a file being edited.
    """
    if path is not None and not Path(path).exists():
        return load_project(path), None  # raises, naming the path
    try:
        return load_project(path), None
    except ProjectError as exc:
        found = Path(path).absolute() if path is not None else find_project_file()
        root = _salvage_root(found) if found is not None else None
        return Project(path=found, root=root), str(exc)


def _salvage_root(path: Path) -> str | None:
    """The top-level ``root`` of a project file that does not parse as a whole, if one line of
    it (above the first table) does."""
    try:
        text = path.read_bytes()[:SMALL_FILE].decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.lstrip().startswith("["):
            return None
        if line.lstrip().startswith("root"):
            try:
                root = tomllib.loads(line).get("root")
            except tomllib.TOMLDecodeError:
                continue
            return root if isinstance(root, str) else None
    return None


def project_root(project: Project | None) -> Path | None:
    """The project's ``root``, made absolute relative to the project file's directory."""
    if project is None or not project.root:
        return None
    root = Path(project.root).expanduser()
    if not root.is_absolute() and project.path is not None:
        root = project.path.parent / root
    return root.absolute()


# --- env override files -------------------------------------------------------------------------


def load_env_table(path: Path) -> dict[str, str]:
    """A flat ``NAME = value`` TOML file (``config/{service}/env.toml``); missing file = {}."""
    if not path.is_file():
        return {}
    return _env_table(_read_toml(path), str(path), "")


def load_service_template(path: Path) -> Supervision:
    """``config/{service}/service.toml``: the service's supervision defaults; missing file = {}."""
    if not path.is_file():
        return Supervision()
    return _convert(_read_toml(path), Supervision, str(path), "")


def load_user_config(path: Path, *, missing_ok: bool = True) -> UserConfig:
    """The user's ``env.toml``; a missing file is an empty config unless ``missing_ok`` is False."""
    if missing_ok and not path.exists():
        return UserConfig(path=path)
    data = _read_toml(path)
    source = str(path)
    if "path" in data:
        raise _fail(source, "path", "unknown field")
    env = _env_table(data["env"], source, "env") if "env" in data else {}
    services: dict[str, ServiceOverride] = {}
    for name, table in _services_table(data, source).items():
        table = dict(table)
        if "env" in table:
            table["env"] = _env_table(table["env"], source, f"services.{name}.env")
        services[name] = _convert(table, ServiceOverride, source, f"services.{name}")
    rest = {k: v for k, v in data.items() if k not in ("env", "services")}
    config = _convert(rest, UserConfig, source, "")
    return msgspec.structs.replace(config, path=path, env=env, services=services)
