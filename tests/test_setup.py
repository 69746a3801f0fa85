"""The development set-up installs what the locks say, and nothing the locks do not pin.

A fresh clone once failed its own tests because ``scripts/bootstrap`` installed the newest
msgspec instead of the locked one, and a CI machine with an older ``.venv`` hid it. These tests
fail on any venv that differs from ``requirements-dev.lock``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re
from pathlib import Path

import msgspec

from runyard import schemas

ROOT = Path(__file__).resolve().parent.parent
#: Installed by venv itself or the project: not pinned by a lock.
NOT_LOCKED = {"pip", "setuptools", "wheel", "runyard"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", line)
        if m:
            pins[_normal(m.group(1))] = m.group(2)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed() -> dict[str, str]:
    return {_normal(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def test_bootstrap_installs_the_locked_msgspec_not_the_newest() -> None:
    locked = _pins(ROOT / "requirements.lock")["msgspec"]
    assert msgspec.__version__ == locked, (
        f"msgspec {msgspec.__version__} in the venv, {locked} in requirements.lock: "
        "run ./scripts/bootstrap"
    )


def test_venv_matches_the_dev_lock() -> None:
    pins = _pins(ROOT / "requirements-dev.lock")
    installed = _installed()
    wrong = {n: (installed.get(n), v) for n, v in pins.items() if installed.get(n) != v}
    assert not wrong, f"installed vs locked: {wrong}: run ./scripts/bootstrap"
    extra = sorted(set(installed) - set(pins) - NOT_LOCKED)
    assert not extra, f"installed but not locked: {extra}"


def test_dev_lock_keeps_the_runtime_lock_versions() -> None:
    runtime = _pins(ROOT / "requirements.lock")
    dev = _pins(ROOT / "requirements-dev.lock")
    assert runtime, "requirements.lock pins nothing"
    moved = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert not moved, f"requirements-dev.lock moves runtime pins: {moved}: run scripts/lock"


def test_every_lock_line_has_a_hash() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text()
        for block in re.split(r"\n(?=[A-Za-z0-9])", text):
            if re.match(r"^[A-Za-z0-9]", block):
                assert "--hash=sha256:" in block, f"{name}: no hash for {block.splitlines()[0]}"


def test_schema_descriptions_do_not_depend_on_docstring_rendering() -> None:
    # As a docstring in source code reads before the formatter or the interpreter dedents it.
    Indented = msgspec.defstruct("Indented", [("x", int, 0)])
    Indented.__doc__ = "First line.\n\n        An indented second paragraph.\n    "
    rendered = schemas._clean_descriptions(msgspec.json.schema(Indented))
    description = rendered["$defs"]["Indented"]["description"]
    assert description == inspect.cleandoc(Indented.__doc__ or "")
    for name in schemas.schema_sources():
        doc = json.loads((schemas.SCHEMA_DIR / name).read_bytes())
        for text in _descriptions(doc):
            assert text == inspect.cleandoc(text), f"{name}: a description is not normalized"


def _descriptions(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "description" and isinstance(v, str)]
        for value in node.values():
            found.extend(_descriptions(value))
        return found
    if isinstance(node, list):
        return [text for item in node for text in _descriptions(item)]
    return []
