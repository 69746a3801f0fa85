"""The shipped JSON Schemas are generated from the Structs and must never go stale."""

from __future__ import annotations

import json

import pytest

from runyard import schemas


@pytest.mark.parametrize("name", sorted(schemas.schema_sources()))
def test_shipped_schema_matches_structs(name: str) -> None:
    shipped = (schemas.SCHEMA_DIR / name).read_bytes()
    assert shipped == schemas.render(name), f"{name} is stale: run ./scripts/gen-schemas"


def test_manifest_schema_names_the_camel_case_fields() -> None:
    schema = json.loads((schemas.SCHEMA_DIR / "manifest.schema.json").read_bytes())
    entry = schema["$defs"]["ServiceEntry"]
    assert {"binPath", "defaultPorts", "checksum", "kind"} <= set(entry["properties"])
    assert entry["additionalProperties"] is False
    assert set(entry["required"]) == {
        "name",
        "version",
        "os",
        "arch",
        "checksum",
        "size",
        "binPath",
    }
