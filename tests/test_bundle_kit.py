"""Shared helpers for the runtime-bundle tests (imported by tests/test_bundle_*.py; no test).

Trees are real: services installed through runtime.acquire (tests/daemonkit.build_tree), config
files written as a user would. Tampered bundles are rewritten member by member with
tests/archives.py, keeping manifest.json first, so each test shows exactly what it changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from daemonkit import build_tree, program

from archives import Raw, make_raw_archive, read_raw_archive
from runyard.runtime.core.tree import RuntimeTree

REPO = Path(__file__).resolve().parent.parent

#: A service that prints its version, then idles until SIGTERM.
SERVICE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("{name} {version} up", flush=True)
while True:
    time.sleep(0.05)
"""


def service_source(name: str, version: str) -> str:
    return SERVICE.replace("{name}", name).replace("{version}", version)


def make_tree(
    base: Path, version: str = "1.0.0", services: tuple[str, ...] = ("web", "worker")
) -> RuntimeTree:
    """A tree under ``base`` with ``services`` (each installed as service 1.0.0, its program
    saying ``version``) and a config surface for each."""
    tree = build_tree(base / "rt", {name: service_source(name, version) for name in services})
    for name in services:
        conf = tree.config_dir / name
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "env.toml").write_text(f'GREETING = "hello from {name}"\n')
        (conf / "settings.json").write_text(json.dumps({"workers": 2, "password": ""}) + "\n")
        (conf / "schemas").mkdir(exist_ok=True)
        (conf / "schemas" / "input.schema.json").write_text('{"type": "object"}\n')
    return tree


def bin_file(root: Path, name: str) -> Path:
    """The program of service ``name`` (1.0.0) under a tree root or a version dir."""
    found = list((root / "bin" / name / "1.0.0").glob(f"*/bin/{name}"))
    assert len(found) == 1, found
    return found[0]


def rewrite(src: Path, dst: Path, change: Callable[[list[Raw]], list[Raw]]) -> Path:
    """``dst``: ``src``'s members, in order, after ``change`` (same format)."""
    return make_raw_archive(dst, change(read_raw_archive(src)))


def edit_manifest(members: list[Raw], edit: Callable[[dict], None]) -> list[Raw]:
    """Members with manifest.json (first) replaced by ``edit`` applied to its JSON."""
    assert members[0].name == "manifest.json"
    doc = json.loads(members[0].data)
    edit(doc)
    members[0].data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    return members


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``runyard ARGS`` as a real subprocess, with no RUNYARD_ variable of ours leaking in."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    full.pop("SOURCE_DATE_EPOCH", None)
    full["XDG_CONFIG_HOME"] = str(cwd / "xdg")
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


__all__ = [
    "REPO",
    "SERVICE",
    "Raw",
    "bin_file",
    "cli",
    "edit_manifest",
    "make_tree",
    "program",
    "rewrite",
    "service_source",
]
