"""JSON Schemas of the files Runyard owns, generated from the msgspec Structs.

The ``*.schema.json`` files beside this module are shipped as package data and written by
``scripts/gen-schemas``; a test fails when one of them is stale. Never edit them by hand.

Descriptions come from the Structs' docstrings. How msgspec turns a docstring into a description
changed between releases (0.22 keeps the source indentation, 0.23 dedents), so every description
is normalized here with ``inspect.cleandoc``: the shipped bytes depend on our docstrings, not on
the msgspec version that rendered them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["SCHEMA_DIR", "render", "schema_sources", "write_all"]

SCHEMA_DIR = Path(__file__).parent


def schema_sources() -> dict[str, tuple[type, str]]:
    """File name -> (Struct type, title)."""
    from runyard.runtime.acquisition.catalog import Catalog
    from runyard.runtime.core.manifest import RuntimeManifest

    return {
        "manifest.schema.json": (
            RuntimeManifest,
            "Runyard runtime manifest (runtime/manifest.json)",
        ),
        "catalog.schema.json": (Catalog, "Runyard archive catalog"),
    }


def _hook(tp: type) -> dict[str, Any]:
    raise NotImplementedError(f"no JSON Schema for {tp!r}")


def _clean_descriptions(node: Any) -> Any:
    """The schema with every ``description`` string passed through ``inspect.cleandoc``."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def render(name: str, schema_hook: Callable[[type], dict[str, Any]] = _hook) -> bytes:
    """The exact bytes ``scripts/gen-schemas`` writes for ``name``."""
    tp, title = schema_sources()[name]
    schema = _clean_descriptions(msgspec.json.schema(tp, schema_hook=schema_hook))
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}
    return (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()


def write_all() -> list[Path]:
    """(Re)write every schema file; returns the files that changed."""
    from runyard.runtime.core.atomic import atomic_write_bytes

    changed = []
    for name in schema_sources():
        path = SCHEMA_DIR / name
        data = render(name)
        if not path.exists() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
            changed.append(path)
    return changed
