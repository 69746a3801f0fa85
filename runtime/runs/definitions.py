"""Engine definitions: the seven files of ``config/{engine}/`` that say what an engine is.

    ENGINE_MANIFEST.json     engine_code, engine_version, description, requires_input_artifacts
    INPUT_SCHEMA.json        JSON Schema of the whole RUN_INPUT.json
    OUTPUT_SCHEMA.json       JSON Schema of the whole RUN_OUTPUT.json
    COUPLING_RULES.json      {"accepts": [{"engine_code": "HEAT1D", "artifacts": ["*.csv"]}]}
    SEALING_SPEC.md  ENGINE_GOVERNANCE.md  PHYSICS_CAPABILITIES.md

An engine's archive ships them under ``definitions/``; ``install_definitions`` copies the missing
ones into ``config/{engine}/`` (a file already there is the operator's and is kept). The JSON
files go into a sealed run as canonical bytes, the Markdown files as they are.

Schemas are validated with the ``jsonschema`` library, Draft 2020-12 unless a schema names
another ``$schema``. Remote ``$ref``s are never fetched.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.manifest import ServiceEntry
from runyard.runtime.core.tree import RuntimeTree

from .jsonio import JSONInputError, canonical, make_validator, schema_problem, strict_loads
from .layout import (
    COUPLING_RULES,
    DEFINITION_FILES,
    ENGINE_MANIFEST,
    INPUT_SCHEMA,
    OUTPUT_SCHEMA,
)
from .model import RunError

__all__ = [
    "EngineDefinitions",
    "definitions_for_version",
    "engine_definitions",
    "install_definitions",
    "load_definitions",
]

_ENGINE_MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["engine_code", "engine_version", "description", "requires_input_artifacts"],
    "properties": {
        "engine_code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]{0,63}$"},
        "engine_version": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": "string"},
        "requires_input_artifacts": {"type": "boolean"},
    },
}

_COUPLING_SCHEMA = {
    "type": "object",
    "required": ["accepts"],
    "properties": {
        "accepts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["engine_code"],
                "additionalProperties": False,
                "properties": {
                    "engine_code": {"type": "string", "minLength": 1},
                    "artifacts": {"type": "array", "items": {"type": "string", "minLength": 1}},
                },
            },
        }
    },
}

_manifest_validator = jsonschema.Draft202012Validator(_ENGINE_MANIFEST_SCHEMA)
_coupling_validator = jsonschema.Draft202012Validator(_COUPLING_SCHEMA)


@dataclass
class EngineDefinitions:
    """The loaded definitions of one engine, from a config dir or a run directory."""

    directory: Path
    manifest: dict[str, Any]
    input_schema: Any
    output_schema: Any
    coupling: dict[str, Any]
    #: name -> the bytes that go into a sealed run (JSON canonical, Markdown as read).
    files: dict[str, bytes]
    input_validator: Any = field(repr=False, default=None)
    output_validator: Any = field(repr=False, default=None)

    @property
    def engine_code(self) -> str:
        return str(self.manifest["engine_code"])

    @property
    def engine_version(self) -> str:
        return str(self.manifest["engine_version"])

    @property
    def requires_input_artifacts(self) -> bool:
        return bool(self.manifest["requires_input_artifacts"])

    def accepted_patterns(self, engine_code: str) -> list[str] | None:
        """The artifact patterns accepted from ``engine_code`` (``["*"]`` when the rule names
        none), or None when COUPLING_RULES.json does not accept that engine at all."""
        patterns: list[str] | None = None
        for rule in self.coupling["accepts"]:
            if rule["engine_code"] == engine_code:
                patterns = (patterns or []) + list(rule.get("artifacts", ["*"]))
        return patterns

    def accepted_codes(self) -> list[str]:
        return sorted({rule["engine_code"] for rule in self.coupling["accepts"]})

    def input_problem(self, doc: Any) -> str | None:
        return schema_problem(self.input_validator, doc, INPUT_SCHEMA)

    def output_problem(self, doc: Any) -> str | None:
        return schema_problem(self.output_validator, doc, OUTPUT_SCHEMA)


def artifact_accepted(patterns: list[str], path: str) -> bool:
    """Whether a path in a run directory (``artifacts/profile.csv``) matches one of ``patterns``.

    A pattern is an fnmatch glob matched against the path below ``artifacts/`` (``*.csv``)
    or against the whole path (``artifacts/*.csv``).
    """
    rel = path.removeprefix("artifacts/")
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(path, p) for p in patterns)


def _read(directory: Path, name: str, follow_symlinks: bool = True) -> bytes:
    path = directory / name
    try:
        return read_capped(path, SMALL_FILE, follow_symlinks=follow_symlinks)
    except FileRefused as exc:
        raise RunError(str(exc)) from None
    except FileNotFoundError:
        raise RunError(f"{path}: missing engine definition file") from None
    except OSError as exc:
        raise RunError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _json(directory: Path, name: str, data: bytes) -> Any:
    try:
        value = strict_loads(data)
        canonical(value)
    except (JSONInputError, ValueError, TypeError) as exc:
        raise RunError(f"{directory / name}: {exc}") from None
    return value


def load_definitions(directory: str | Path, *, follow_symlinks: bool = True) -> EngineDefinitions:
    """Read and check the seven definition files of ``directory``; RunError names the file.

    Each is capped (``runtime.core.capped``); ``follow_symlinks`` False (a sealed run) refuses
    a definition file that is a symlink.
    """
    directory = Path(directory)
    raw = {name: _read(directory, name, follow_symlinks) for name in DEFINITION_FILES}
    values = {
        name: _json(directory, name, data) for name, data in raw.items() if name.endswith(".json")
    }
    manifest = values[ENGINE_MANIFEST]
    problem = schema_problem(_manifest_validator, manifest, str(directory / ENGINE_MANIFEST))
    if problem:
        raise RunError(problem)
    coupling = values[COUPLING_RULES]
    problem = schema_problem(_coupling_validator, coupling, str(directory / COUPLING_RULES))
    if problem:
        raise RunError(problem)
    try:
        input_validator = make_validator(values[INPUT_SCHEMA], str(directory / INPUT_SCHEMA))
        output_validator = make_validator(values[OUTPUT_SCHEMA], str(directory / OUTPUT_SCHEMA))
    except ValueError as exc:
        raise RunError(str(exc)) from None
    files = {
        name: canonical(values[name]) if name in values else data for name, data in raw.items()
    }
    return EngineDefinitions(
        directory=directory,
        manifest=manifest,
        input_schema=values[INPUT_SCHEMA],
        output_schema=values[OUTPUT_SCHEMA],
        coupling=coupling,
        files=files,
        input_validator=input_validator,
        output_validator=output_validator,
    )


def shipped_definitions_dir(tree: RuntimeTree, entry: ServiceEntry) -> Path:
    """``definitions/`` of the engine's install dir (what its archive shipped)."""
    return tree.root / entry.install_rel / "definitions"


def install_definitions(tree: RuntimeTree, entry: ServiceEntry) -> list[str]:
    """Copy each definition file the install dir ships and ``config/{engine}/`` lacks.

    Returns the names copied. A file already in ``config/{engine}/`` is never replaced.
    """
    source = shipped_definitions_dir(tree, entry)
    target = tree.config_dir / entry.name
    copied: list[str] = []
    if not source.is_dir():
        return copied
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        dest = target / path.name
        if dest.exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, read_capped(path, SMALL_FILE, follow_symlinks=False), 0o644)
        copied.append(path.name)
    return copied


def engine_definitions(tree: RuntimeTree, entry: ServiceEntry) -> EngineDefinitions:
    """The definitions a run of ``entry`` executes with: ``config/{engine}/``, filled lazily
    from the install dir, and naming the installed version."""
    config = tree.config_dir / entry.name
    if any(not (config / name).is_file() for name in DEFINITION_FILES):
        install_definitions(tree, entry)
        missing = [name for name in DEFINITION_FILES if not (config / name).is_file()]
        if missing:
            raise RunError(
                f"{config}: engine definitions missing ({', '.join(missing)}) and "
                f"{entry.name} {entry.version} ships no definitions/ to install them from"
            )
    defs = load_definitions(config)
    if defs.engine_version != entry.version:
        raise RunError(
            f"{config / ENGINE_MANIFEST}: engine_version is {defs.engine_version} but "
            f"{entry.name} {entry.version} is the version that would run; update the "
            f"definitions (remove the config files to reinstall those {entry.version} ships)"
        )
    return defs


def definitions_for_version(
    tree: RuntimeTree, engine: str, version: str, entries: list[ServiceEntry]
) -> tuple[EngineDefinitions | None, str]:
    """The engine's current definitions for ``version``: config/{engine}/ when it names that
    version, else those the installed ``version`` ships. (None, why) when there are none."""
    config = tree.config_dir / engine
    notes: list[str] = []
    if (config / ENGINE_MANIFEST).is_file():
        try:
            defs = load_definitions(config)
        except RunError as exc:
            notes.append(str(exc))
        else:
            if defs.engine_version == version:
                return defs, str(config)
            notes.append(f"{config} describes {engine} {defs.engine_version}, not {version}")
    for entry in entries:
        if entry.version == version:
            shipped = shipped_definitions_dir(tree, entry)
            if (shipped / ENGINE_MANIFEST).is_file():
                try:
                    return load_definitions(shipped), str(shipped)
                except RunError as exc:
                    notes.append(str(exc))
    if not notes:
        notes.append(f"no definitions of {engine} {version} in {tree.root}")
    return None, "; ".join(notes)
