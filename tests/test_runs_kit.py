"""Shared fixtures for the sealed-run tests (imported by tests/test_runs*.py; holds no test).

Real engines, installed for real: the examples catalog (heat1d, heatstats) is built with
examples/build_catalog.py, and a test-only engine ``chaos`` (CHAOS 1.0.0, deliberately
nondeterministic and able to misbehave on request) is packed here into its own archive and
catalog. Each test gets a fresh tree with the engines ensured through runtime.acquisition.ensure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archives import archive_record, make_tar, write_catalog
from runyard.runtime.acquisition.ensure import ensure_service
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs.jsonio import canonical
from runyard.runtime.runs.sealing import list_files, role_of, sums_bytes

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SAMPLE = json.loads((EXAMPLES / "engines" / "heat1d" / "sample-input.json").read_bytes())

#: The files every sealed run must hold (sealed-run spec §3), spelled out here rather than taken
#: from runtime.runs so that the tests catch the code drifting from the spec.
REQUIRED = (
    "RUN_INPUT.json",
    "RUN_OUTPUT.json",
    "RUN_META.json",
    "RUN_CONDITIONS.json",
    "ARTIFACT_INDEX.json",
    "SHA256SUMS.txt",
    "ENGINE_MANIFEST.json",
    "INPUT_SCHEMA.json",
    "OUTPUT_SCHEMA.json",
    "COUPLING_RULES.json",
    "SEALING_SPEC.md",
    "ENGINE_GOVERNANCE.md",
    "PHYSICS_CAPABILITIES.md",
)

# What heat1d computes for the sample (examples/README.md).
SAMPLE_OUTPUTS = {
    "alpha": "1/4",
    "boundary": "fixed",
    "cells": 5,
    "steps": 3,
    "temperatures": ["0", "7/2", "5", "7/2", "0"],
    "temperatures_decimal": ["0.000", "3.500", "5.000", "3.500", "0.000"],
}
SAMPLE_PROFILE = (
    b"cell,initial,final,final_exact\n"
    b"0,0.000,0.000,0\n"
    b"1,0.000,3.500,7/2\n"
    b"2,16.000,5.000,5\n"
    b"3,0.000,3.500,7/2\n"
    b"4,0.000,0.000,0\n"
)

CHAOS = r'''#!/usr/bin/env python3
"""chaos: a test-only engine. inputs.mode picks what it does."""
import json, os, random, subprocess, sys, time

doc = json.loads(sys.stdin.buffer.read())
inputs = doc.get("inputs", {})
mode = inputs.get("mode", "ok")
arts = os.environ.get("RUNYARD_ARTIFACTS_DIR", "")
out = sys.stdout.buffer


def emit(outputs, metrics=None):
    out.write(json.dumps({"outputs": outputs, "metrics": metrics or {}}).encode() + b"\n")


if inputs.get("pidfile"):
    with open(inputs["pidfile"] + ".tmp", "w") as fh:
        fh.write(str(os.getpid()))
    os.rename(inputs["pidfile"] + ".tmp", inputs["pidfile"])
if mode == "ok":
    emit({"value": 1, "echo": inputs.get("echo")}, {"n": 1})
elif mode == "random":
    with open(os.path.join(arts, "noise.txt"), "w") as fh:
        fh.write(str(random.random()))
    emit({"value": random.random(), "stable": 7}, {"token": os.urandom(4).hex()})
elif mode == "exit1":
    sys.stderr.write("chaos: deliberate failure\n")
    emit({"value": 1})
    sys.exit(1)
elif mode == "nan":
    out.write(b'{"outputs": {"value": NaN}, "metrics": {}}')
elif mode == "inf":
    out.write(b'{"outputs": {"value": 1e400}, "metrics": {}}')
elif mode == "bigint":
    out.write(b'{"outputs": {"value": 9007199254740993}, "metrics": {}}')
elif mode == "array":
    out.write(b"[1, 2, 3]")
elif mode == "two":
    out.write(b'{"outputs": {}, "metrics": {}}\n{"outputs": {}, "metrics": {}}\n')
elif mode == "extra":
    out.write(b'{"outputs": {}, "metrics": {}, "debug": 1}')
elif mode == "missing":
    out.write(b'{"outputs": {}}')
elif mode == "duplicate":
    out.write(b'{"outputs": {"value": 1, "value": 2}, "metrics": {}}')
elif mode == "badutf8":
    out.write(b'{"outputs": {"value": "\xff\xfe"}, "metrics": {}}')
elif mode == "surrogate":
    out.write(b'{"outputs": {"value": "\\ud800"}, "metrics": {}}')
elif mode == "nothing":
    pass
elif mode == "schema":
    emit({"value": "not a number"})
elif mode == "symlink":
    os.symlink("/etc/hostname", os.path.join(arts, "link"))
    emit({"value": 1})
elif mode == "inputs":
    folder = os.environ["RUNYARD_INPUTS_DIR"]
    for name in os.listdir(folder):
        os.chmod(folder, 0o755)
        os.chmod(os.path.join(folder, name), 0o644)
        with open(os.path.join(folder, name), "ab") as fh:
            fh.write(b"tampered")
    emit({"value": 1})
elif mode == "env":
    for key, value in sorted(os.environ.items()):
        sys.stderr.write(f"{key}={value}\n")
    names = sorted(k for k in os.environ if k.upper().startswith("RUNYARD_"))
    emit({"runyard_vars": names, "context": doc.get("context")})
elif mode == "leak":
    emit({"value": 1, "leaked": os.environ.get("LEAK_TOKEN")})
elif mode == "sleep":
    time.sleep(float(inputs.get("seconds", 60)))
    emit({"value": 1})
elif mode == "child":
    child = subprocess.Popen(["sleep", "300"])
    with open(inputs["childfile"] + ".tmp", "w") as fh:
        fh.write(str(child.pid))
    os.rename(inputs["childfile"] + ".tmp", inputs["childfile"])
    emit({"value": 1})
elif mode == "artifacts":
    os.makedirs(os.path.join(arts, "sub dir"), exist_ok=True)
    with open(os.path.join(arts, "sub dir", "a b.txt"), "w") as fh:
        fh.write("x")
    with open(os.path.join(arts, "big.bin"), "wb") as fh:
        fh.write(bytes(range(256)) * 4096)
    emit({"value": 1})
else:
    sys.stderr.write(f"chaos: unknown mode {mode}\n")
    sys.exit(2)
sys.stdout.flush()
'''

CHAOS_DEFINITIONS = {
    "ENGINE_MANIFEST.json": {
        "engine_code": "CHAOS",
        "engine_version": "1.0.0",
        "description": "test-only engine: nondeterministic and misbehaving on request",
        "requires_input_artifacts": False,
    },
    "INPUT_SCHEMA.json": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["run_id", "engine_code", "inputs", "parameters", "context"],
        "properties": {
            "engine_code": {"const": "CHAOS"},
            "inputs": {"type": "object", "properties": {"mode": {"type": "string"}}},
        },
    },
    "OUTPUT_SCHEMA.json": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["run_id", "engine", "outputs", "metrics", "inputs_hash", "outputs_hash"],
        "properties": {
            "outputs": {"type": "object", "properties": {"value": {"type": "number"}}},
        },
    },
    "COUPLING_RULES.json": {"accepts": [{"engine_code": "HEAT1D", "artifacts": ["*.txt"]}]},
}


def chaos_archive(folder: Path) -> dict:
    files = {"bin/chaos": CHAOS.encode()}
    for name, doc in CHAOS_DEFINITIONS.items():
        files[f"definitions/{name}"] = json.dumps(doc, indent=2).encode()
    for name in ("SEALING_SPEC.md", "ENGINE_GOVERNANCE.md", "PHYSICS_CAPABILITIES.md"):
        files[f"definitions/{name}"] = f"# {name} of the test engine CHAOS\n".encode()
    archive = make_tar(folder / "chaos-1.0.0.tar.gz", files)
    return archive_record(archive, "chaos", "1.0.0", kind="engine")


_CATALOGS: dict[str, str] = {}


def build_catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The examples catalog and the chaos catalog, built once per test session."""
    if not _CATALOGS:
        dist = tmp_path_factory.mktemp("dist")
        subprocess.run(
            [sys.executable, str(EXAMPLES / "build_catalog.py"), "--out", str(dist), "--quiet"],
            check=True,
            timeout=60,
        )
        write_catalog(dist / "chaos-catalog.json", [chaos_archive(dist)])
        _CATALOGS["examples"] = str(dist / "catalog.json")
        _CATALOGS["chaos"] = str(dist / "chaos-catalog.json")
    return dict(_CATALOGS)


def install(tree: RuntimeTree, catalogs: dict[str, str], *names: str) -> None:
    for name in names:
        which = "chaos" if name == "chaos" else "examples"
        ensure_service(name, root=tree.root, catalog=catalogs[which], progress=False)


ALL_ENGINES = ("heat1d", "heatstats", "chaos")

# Each test module declares its fixtures from these (so ruff sees where each name comes from):
#
#   @pytest.fixture(scope="session")
#   def catalogs(tmp_path_factory): return build_catalogs(tmp_path_factory)
#
#   @pytest.fixture
#   def engines(tree, catalogs): install(tree, catalogs, *ALL_ENGINES); return tree
#
#   @pytest.fixture(autouse=True)
#   def _no_user_config(tmp_path, monkeypatch): isolate_user_config(tmp_path, monkeypatch)


def isolate_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own env.toml must not leak into the engines' env."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# --- helpers ---------------------------------------------------------------------------------


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 + mode of every entry under ``folder`` (files, dirs, links)."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[rel] = f"{st.st_mode:o}:{hashlib.sha256(data).hexdigest()}"
    return out


def run_dirs(tree: RuntimeTree, engine: str) -> list[Path]:
    """Run directories of ``engine`` (staging dirs excluded)."""
    runs = tree.data_dir / engine / "runs"
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if not p.name.startswith("."))


def writable(folder: Path) -> None:
    """Sealed runs are read-only; tamper tests make them writable first."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def reseal(folder: Path, key=None) -> None:
    """Recompute ARTIFACT_INDEX.json and SHA256SUMS.txt as a forger would (and re-sign); the
    forger drops RUN_ATTESTATION.intoto.jsonl (tests/test_attestation.py forges that one)."""
    writable(folder)
    for name in (
        "ARTIFACT_INDEX.json",
        "SHA256SUMS.txt",
        "SHA256SUMS.txt.sig",
        "RUN_ATTESTATION.intoto.jsonl",
    ):
        (folder / name).unlink(missing_ok=True)
    entries = []
    for rel in list_files(folder):
        data = (folder / rel).read_bytes()
        entries.append(
            {
                "path": rel,
                "role": role_of(rel),
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }
        )
    run_id = json.loads((folder / "RUN_INPUT.json").read_bytes())["run_id"]
    index = canonical({"files": entries, "run_id": run_id})
    (folder / "ARTIFACT_INDEX.json").write_bytes(index)
    hashes = {e["path"]: e["sha256"] for e in entries}
    hashes["ARTIFACT_INDEX.json"] = hashlib.sha256(index).hexdigest()
    sums = sums_bytes(hashes)
    (folder / "SHA256SUMS.txt").write_bytes(sums)
    if key is not None:
        (folder / "SHA256SUMS.txt.sig").write_bytes(key.sign(sums))


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


def kill_if_alive(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, 9)
        wait_gone(pid)


def clean_cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env.update(extra)
    return env


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=env or clean_cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def copy_run_dir(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    writable(dest)
    return dest
