"""A name means one thing across the repository: a class name is defined once in the five
packages, except the wire form of a runtime struct (``protocol/payloads.py``), which carries
the runtime struct's fields (``payloads.from_runtime`` matches them by name).

Regression: there were two ``NotFound`` (the daemon's unknown service, the client's not_found
reply), two ``RunEvent`` (the ``on_event`` record, the wire event), a doctor ``Check`` beside
the verification ``Check``, and two ``VerifyReport`` (an installed tree, a sealed run)."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "protocol", "runtime", "schemas", "tui")
WIRE = "protocol/payloads.py"


def _module(path: str) -> str:
    return "runyard." + path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _class_definers() -> dict[str, list[str]]:
    definers: dict[str, list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    definers[node.name].append(rel)
    return definers


def test_each_class_name_is_defined_once_or_is_a_wire_mirror() -> None:
    twice = {name: paths for name, paths in _class_definers().items() if len(paths) > 1}
    not_mirrors = {
        name: paths
        for name, paths in twice.items()
        if len(paths) != 2 or WIRE not in paths or not any(p.startswith("runtime/") for p in paths)
    }
    assert not not_mirrors, f"one name, two concepts: {not_mirrors}"
    payloads = importlib.import_module(_module(WIRE))
    for name, paths in twice.items():
        (runtime_path,) = (p for p in paths if p != WIRE)
        wire = getattr(payloads, name)
        runtime_cls = getattr(importlib.import_module(_module(runtime_path)), name)
        runtime_names = set(getattr(runtime_cls, "__struct_fields__", ())) | set(dir(runtime_cls))
        assert set(wire.__struct_fields__) <= runtime_names, (
            f"{name}: the wire form has fields its runtime struct lacks"
        )


def test_the_duplicates_the_issue_named_are_gone() -> None:
    definers = _class_definers()
    assert definers["NotFound"] == ["runtime/core/errors.py"]
    assert definers["UnknownService"] == ["runtime/core/errors.py"]
    assert definers["RunEvent"] == ["protocol/messages.py"]
    assert definers["RunMilestone"] == ["runtime/runs/model.py"]
    assert sorted(definers["Check"]) == [WIRE, "runtime/core/checks.py"]
    assert definers["StartupCheck"] == ["runtime/ops/doctor.py"]
    assert sorted(definers["VerifyReport"]) == [WIRE, "runtime/runs/model.py"]
    assert definers["DriftReport"] == ["runtime/acquisition/drift.py"]
