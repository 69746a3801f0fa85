"""Strict JSON in, canonical JSON out, JSON Schema checks, and JSON-path diffs.

Reading is strict where Python's ``json`` is lenient: the bytes must be UTF-8, ``NaN`` /
``Infinity`` literals and duplicate object keys are refused, and integers stay Python ints of
any size, so that canonicalization (``runtime.core.canonical``) can see and refuse one beyond
±(2**53-1) instead of it being rounded silently. Writing is always ``canonical_bytes``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.core.errors import JSONInputError

__all__ = [
    "ABSENT",
    "JSONInputError",
    "canonical",
    "diff_paths",
    "diff_values",
    "json_path",
    "make_validator",
    "schema_problem",
    "strict_loads",
]


def _no_constants(name: str) -> Any:
    raise JSONInputError(f"{name} is not JSON (NaN and Infinity cannot be canonicalized)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONInputError(f"duplicate object key {key!r}")
        out[key] = value
    return out


def strict_loads(data: bytes) -> Any:
    """One JSON document from ``data``; JSONInputError (one line) when it is not strict JSON."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONInputError(f"not UTF-8 (byte {exc.start}: {exc.reason})") from None
    if text.startswith("\ufeff"):
        raise JSONInputError("starts with a byte order mark")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise JSONInputError("nested too deeply") from None


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (ValueError / TypeError naming the JSON path otherwise)."""
    return canonical_bytes(value)


def json_path(parts: Any) -> str:
    """``$.a[0].b`` from a sequence of keys and indexes."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


def make_validator(schema: Any, source: str) -> jsonschema.protocols.Validator:
    """A validator for ``schema`` (Draft 2020-12 unless it names another ``$schema``).

    ValueError naming ``source`` when the schema itself is not a valid JSON Schema.
    """
    if not isinstance(schema, dict | bool):
        raise ValueError(f"{source}: a JSON Schema must be an object or a boolean")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(
            f"{source}: not a valid JSON Schema: {json_path(exc.path)}: {exc.message}"
        ) from None
    return cls(schema)


def schema_problem(validator: jsonschema.protocols.Validator, doc: Any, what: str) -> str | None:
    """None when ``doc`` is valid, else one line: ``what: $.inputs.cells: 2 is less than ...``."""
    error: ValidationError | None = best_match(validator.iter_errors(doc))
    if error is None:
        return None
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{what}: {json_path(error.absolute_path)}: {message}"


#: The value of a path that one side of a diff lacks.
ABSENT: Any = object()


def diff_paths(a: Any, b: Any, path: str = "$", limit: int = 50) -> list[str]:
    """The JSON paths where ``a`` and ``b`` differ (at most ``limit``), deepest first found."""
    return [p for p, _, _ in diff_values(a, b, path, limit)]


def diff_values(a: Any, b: Any, path: str = "$", limit: int = 50) -> list[tuple[str, Any, Any]]:
    """(path, value in ``a``, value in ``b``) where they differ (at most ``limit``), in the
    order of ``diff_paths``; ``ABSENT`` for a side that lacks the path."""
    out: list[tuple[str, Any, Any]] = []
    _diff(a, b, path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[tuple[str, Any, Any]], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = json_path([key]).replace("$", path, 1)
            if key not in a or key not in b:
                out.append((sub, a.get(key, ABSENT), b.get(key, ABSENT)))
            else:
                _diff(a[key], b[key], sub, out, limit)
            if len(out) >= limit:
                return
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a) or i >= len(b):
                out.append((sub, a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT))
            else:
                _diff(a[i], b[i], sub, out, limit)
            if len(out) >= limit:
                return
        return
    if type(a) is not type(b) or a != b:
        out.append((path, a, b))
