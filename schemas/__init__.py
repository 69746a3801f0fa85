"""JSON Schemas of the files Runyard owns, generated from the msgspec Structs.

The ``*.schema.json`` files beside this module are shipped as package data and written by
``scripts/gen-schemas``; a test fails when one of them is stale. Never edit them by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["SCHEMA_DIR", "render", "schema_sources", "write_all"]

SCHEMA_DIR = Path(__file__).parent


def schema_sources() -> dict[str, tuple[type, str]]:
    """File name -> (Struct type, title)."""
    from runtime.catalog import Catalog
    from runtime.manifest import RuntimeManifest

    return {
        "manifest.schema.json": (
            RuntimeManifest,
            "Runyard runtime manifest (runtime/manifest.json)",
        ),
        "catalog.schema.json": (Catalog, "Runyard archive catalog"),
    }


def _hook(tp: type) -> dict[str, Any]:
    raise NotImplementedError(f"no JSON Schema for {tp!r}")


def render(name: str, schema_hook: Callable[[type], dict[str, Any]] = _hook) -> bytes:
    """The exact bytes ``scripts/gen-schemas`` writes for ``name``."""
    tp, title = schema_sources()[name]
    schema = msgspec.json.schema(tp, schema_hook=schema_hook)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}
    return (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()


def write_all() -> list[Path]:
    """(Re)write every schema file; returns the files that changed."""
    changed = []
    for name in schema_sources():
        path = SCHEMA_DIR / name
        data = render(name)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
            changed.append(path)
    return changed
