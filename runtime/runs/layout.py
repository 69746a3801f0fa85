"""Where runs live, what a sealed run holds, run ids, and the staging dirs runs are sealed in.

    data/{engine}/runs/{run_id}/          a sealed run's directory (appears only when complete)
    data/{engine}/runs/.tmp-{run_id}/     one being built: .lock, run/, work/, stdout
    data/{engine}/rejected/{run_id}/      REJECTION.json + whatever the run produced
    data/{engine}/replays/{replay_id}/    the record of one replay (REPLAY.json, ...)

A run directory:

    RUN_INPUT.json RUN_OUTPUT.json RUN_META.json RUN_CONDITIONS.json          role "run"
    ENGINE_MANIFEST.json INPUT_SCHEMA.json OUTPUT_SCHEMA.json COUPLING_RULES.json
    SEALING_SPEC.md ENGINE_GOVERNANCE.md PHYSICS_CAPABILITIES.md               role "definition"
    artifacts/...      what the engine wrote under $RUNYARD_ARTIFACTS_DIR      role "artifact"
    inputs/{sha256}    upstream artifacts, content-addressed ($RUNYARD_INPUTS_DIR) role "input"
    logs/engine.stderr the engine's stderr                                     role "log"
    ARTIFACT_INDEX.json  every file above: path, sha256, size, role
    SHA256SUMS.txt       every file but itself and the signature, `sha256sum -c --strict` format
    SHA256SUMS.txt.sig   optional: raw Ed25519 signature of SHA256SUMS.txt
    RUN_ATTESTATION.intoto.jsonl  DSSE envelope of an in-toto Statement naming every file above
                         but the .sig (attestation.py); written last, so SHA256SUMS omits it

A staging dir holds an flock on ``.lock`` while its builder lives (it is made as ``.new-*``,
locked, then renamed to ``.tmp-*``, so no ``.tmp-*`` dir is ever unlocked while its builder
lives); any later build sweeps the ``.tmp-*`` dirs whose lock is free (their builder died) and
``.new-*`` dirs older than a minute, so a kill mid-run leaves nothing that looks like a sealed run,
and no garbage for long.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.locking import FileLock
from runyard.runtime.core.tree import RuntimeTree

from .model import RunError

__all__ = [
    "ARTIFACTS_DIR",
    "DEFINITION_FILES",
    "INDEX_FILE",
    "INPUTS_DIR",
    "REQUIRED_FILES",
    "RUN_FILES",
    "RUN_ID_RE",
    "SIG_FILE",
    "STDERR_LOG",
    "SUMS_FILE",
    "Staging",
    "find_run",
    "new_run_id",
    "now_rfc3339",
    "rejected_dir",
    "replays_dir",
    "runs_dir",
]

RUN_INPUT = "RUN_INPUT.json"
RUN_OUTPUT = "RUN_OUTPUT.json"
RUN_META = "RUN_META.json"
RUN_CONDITIONS = "RUN_CONDITIONS.json"
RUN_FILES = (RUN_INPUT, RUN_OUTPUT, RUN_META, RUN_CONDITIONS)

ENGINE_MANIFEST = "ENGINE_MANIFEST.json"
INPUT_SCHEMA = "INPUT_SCHEMA.json"
OUTPUT_SCHEMA = "OUTPUT_SCHEMA.json"
COUPLING_RULES = "COUPLING_RULES.json"
DEFINITION_FILES = (
    ENGINE_MANIFEST,
    INPUT_SCHEMA,
    OUTPUT_SCHEMA,
    COUPLING_RULES,
    "SEALING_SPEC.md",
    "ENGINE_GOVERNANCE.md",
    "PHYSICS_CAPABILITIES.md",
)

INDEX_FILE = "ARTIFACT_INDEX.json"
SUMS_FILE = "SHA256SUMS.txt"
SIG_FILE = "SHA256SUMS.txt.sig"
REQUIRED_FILES = (*RUN_FILES, INDEX_FILE, SUMS_FILE, *DEFINITION_FILES)

ARTIFACTS_DIR = "artifacts"
INPUTS_DIR = "inputs"
STDERR_LOG = "logs/engine.stderr"
REJECTION_FILE = "REJECTION.json"
REPLAY_FILE = "REPLAY.json"

ROLES = ("run", "definition", "artifact", "input", "log", "replay")

#: A staging dir without a lock file is left alone this long (its builder may be starting).
_UNLOCKED_GRACE = 60.0

#: 20260521T101112.123456Z-3f9a1c2b: UTC time to the microsecond, then 32 random bits.
RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}$")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_run_id() -> str:
    """Sortable by time, unique by its random suffix; a safe path component."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def runs_dir(tree: RuntimeTree, engine: str) -> Path:
    return tree.data_dir / engine / "runs"


def rejected_dir(tree: RuntimeTree, engine: str) -> Path:
    return tree.data_dir / engine / "rejected"


def replays_dir(tree: RuntimeTree, engine: str) -> Path:
    return tree.data_dir / engine / "replays"


def find_run(tree: RuntimeTree, run_id: str) -> Path:
    """The sealed run ``data/*/runs/{run_id}``; RunError when there is none."""
    if not RUN_ID_RE.match(run_id):
        raise RunError(f"{run_id!r} is not a run id (like 20260521T101112.123456Z-3f9a1c2b)")
    found = sorted(tree.data_dir.glob(f"*/runs/{run_id}"))
    found = [p for p in found if p.is_dir()]
    if not found:
        rejected = sorted(tree.data_dir.glob(f"*/rejected/{run_id}"))
        if rejected:
            raise RunError(
                f"run {run_id} was rejected (record: {rejected[0]}); it was never sealed"
            )
        raise RunError(f"no sealed run {run_id} under {tree.data_dir}/*/runs/")
    if len(found) > 1:
        raise RunError(f"run {run_id} exists under several engines: {', '.join(map(str, found))}")
    return found[0]


def _try_lock(path: Path) -> FileLock | None:
    """An exclusive flock held on ``path``, or None when someone else holds it (or the file
    cannot be opened: a dir being removed)."""
    lock = FileLock(path)
    try:
        return lock if lock.try_acquire() else None
    except OSError:
        return None


def sweep_stale(parent: Path) -> list[Path]:
    """Remove the ``.tmp-*`` dirs under ``parent`` whose builder is gone; returns them."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.glob(".new-*")):
        # A builder killed before its staging dir was locked and renamed: only by age.
        with contextlib.suppress(OSError):
            if entry.is_dir() and time.time() - entry.stat().st_mtime >= _UNLOCKED_GRACE:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    for entry in sorted(parent.glob(".tmp-*")):
        if not entry.is_dir() or entry.is_symlink():
            continue
        lock = entry / ".lock"
        if not lock.exists():
            # A builder between mkdir and creating its lock, or one killed right there.
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime < _UNLOCKED_GRACE:
                    continue
        held = _try_lock(lock)
        if held is None:
            continue  # a live builder holds it
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            held.release()
    return removed


class Staging:
    """A ``.tmp-{id}`` dir next to where the result will land, locked while we live.

    While the engine runs it sees only ``work/`` (its cwd), ``artifacts/`` and ``inputs/``;
    ``run/`` is made after it exited (so it never had a path to it), filled, sealed and
    renamed into place by ``publish``.
    """

    def __init__(self, parent: Path, ident: str) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(parent)
        self.parent = parent
        self.ident = ident
        self.root = parent / f".tmp-{ident}"
        # Locked before it is visible as .tmp-*: a sweeper in another run could otherwise take
        # the lock between our open and our flock and remove the dir under us.
        pending = parent / f".new-{ident}"
        pending.mkdir(mode=0o755)
        lock = _try_lock(pending / ".lock")
        if lock is None:  # pragma: no cover - the name is fresh
            raise RunError(f"{pending}: cannot lock the staging dir")
        os.rename(pending, self.root)  # the lock is on the file, not its name: still ours
        self._lock: FileLock | None = lock
        self.run_dir = self.root / "run"
        self.work = self.root / "work"
        self.artifacts = self.root / "artifacts"
        self.inputs = self.root / "inputs"
        self.stdout = self.root / "stdout"
        self.stderr = self.root / "stderr"
        self.work.mkdir()
        self.artifacts.mkdir()
        self.inputs.mkdir()

    def publish(self, dest: Path) -> Path:
        """Rename ``run/`` to ``dest`` (fsynced by the caller) and fsync the parent."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            raise RunError(f"{dest}: already exists")
        os.rename(self.run_dir, dest)
        fsync_dir(dest.parent)
        return dest

    def close(self) -> None:
        """Remove what is left of the staging dir and release the lock."""
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
