"""Chained runs: upstream products routed by the runtime, never by an engine.

``--from-run RUN_ID[:PATH]`` names a sealed upstream run (``data/*/runs/RUN_ID``) and,
optionally, an fnmatch glob or a path selecting among what it offers (``profile.csv``,
``*.csv``, ``artifacts/profile.csv`` or ``RUN_OUTPUT.json``). A run offers two routable roles:

    artifact   the files under ``artifacts/`` (ARTIFACT_INDEX role ``artifact``)
    output     its RUN_OUTPUT.json (ARTIFACT_INDEX role ``run``): the product of an engine that
               writes only JSON outputs, and the outputs_hash its run is known by

For each ``--from-run``, before the engine runs:

1. the upstream run is verified (``verify_run``); a run that fails is refused;
2. its engine_code must be accepted by this engine's COUPLING_RULES.json, and every selected
   file must match the rule's ``artifacts`` patterns (a rule without them accepts all, so also
   RUN_OUTPUT.json; ``"artifacts": ["*.csv"]`` refuses it). Without PATH, the artifacts the rule
   accepts are taken, and RUN_OUTPUT.json too when the rule names it exactly or when no artifact
   was taken and the rule accepts it (an upstream without artifact files still feeds a run);
3. the selected files are copied into the downstream ``inputs/{sha256}`` (content-addressed;
   the copy is hashed as it is written and must match the upstream index) and listed in
   ``input_artifact_index`` as ``{run_id, engine_code, path, sha256}`` with ``path`` the path in
   the upstream run directory (``artifacts/profile.csv``, ``RUN_OUTPUT.json``).

The engine reads them at ``$RUNYARD_INPUTS_DIR/{sha256}``, with the index in RUN_INPUT.json.
Refusals raise RunRejected (stage ``chain``); an unknown run id is a RunError.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.core.tree import RuntimeTree

from .artifact_index import ArtifactIndexError, read_artifact_index
from .definitions import EngineDefinitions, artifact_accepted
from .jsonio import JSONInputError, strict_loads
from .layout import RUN_INPUT, RUN_OUTPUT, find_run
from .model import RunError, RunRejected

__all__ = [
    "FromRun",
    "UpstreamArtifact",
    "copy_inputs",
    "parse_from_run",
    "resolve_from_runs",
]

FromRun = tuple[str, str | None]


@dataclass(frozen=True)
class UpstreamArtifact:
    run_id: str
    engine_code: str
    path: str
    sha256: str
    size: int
    source: Path

    def index_entry(self) -> dict[str, str]:
        return {
            "engine_code": self.engine_code,
            "path": self.path,
            "run_id": self.run_id,
            "sha256": self.sha256,
        }


def parse_from_run(text: str) -> FromRun:
    """``RUN_ID`` or ``RUN_ID:PATH`` (a run id holds no colon)."""
    run_id, sep, pattern = text.partition(":")
    if sep and not pattern:
        raise RunError(f"--from-run {text!r}: empty PATH after ':'")
    return run_id, pattern if sep else None


def _normalize(items: Iterable[str | FromRun]) -> list[FromRun]:
    out: list[FromRun] = []
    for item in items:
        if isinstance(item, str):
            out.append(parse_from_run(item))
        else:
            run_id, pattern = item
            out.append((run_id, pattern or None))
    return out


def _load(run_dir: Path, name: str) -> dict:
    try:
        value = strict_loads(read_capped(run_dir / name, RUN_FILE, follow_symlinks=False))
    except (OSError, FileRefused, JSONInputError) as exc:
        raise RunRejected(f"upstream {run_dir.name}: {name}: {exc}", stage="chain") from None
    if not isinstance(value, dict):
        raise RunRejected(f"upstream {run_dir.name}: {name} is not an object", stage="chain")
    return value


def resolve_from_runs(
    tree: RuntimeTree, defs: EngineDefinitions, from_runs: Iterable[str | FromRun]
) -> list[UpstreamArtifact]:
    """The upstream artifacts a run consumes, in order; see the module doc."""
    selected: list[UpstreamArtifact] = []
    seen: set[tuple[str, str]] = set()
    for run_id, pattern in _normalize(from_runs):
        run_dir = _verified_upstream(tree, run_id)
        code = str(_load(run_dir, RUN_INPUT).get("engine_code", ""))
        accepted = _accepted_patterns(defs, code, run_id)
        for f in _select_artifacts(defs, run_dir, run_id, code, pattern, accepted):
            key = (run_id, f["path"])
            if key in seen:
                continue
            seen.add(key)
            selected.append(
                UpstreamArtifact(
                    run_id=run_id,
                    engine_code=code,
                    path=f["path"],
                    sha256=f["sha256"],
                    size=int(f["size"]),
                    source=run_dir / f["path"],
                )
            )
    return selected


def _verified_upstream(tree: RuntimeTree, run_id: str) -> Path:
    """Step 1: the run directory of ``run_id``, refused unless it verifies."""
    from .verify import verify_run  # verify imports this package's modules, not chain

    run_dir = find_run(tree, run_id)
    report = verify_run(run_dir, tree=tree)
    if not report.ok:
        first = report.failed[0]
        raise RunRejected(
            f"upstream run {run_id} fails verification: {first.name}: {first.detail}",
            stage="chain",
        )
    return run_dir


def _accepted_patterns(defs: EngineDefinitions, code: str, run_id: str) -> list[str]:
    """Step 2: the artifact patterns COUPLING_RULES.json accepts from ``code``; refused when
    it accepts no run of that engine."""
    accepted = defs.accepted_patterns(code)
    if accepted is None:
        codes = ", ".join(defs.accepted_codes()) or "none"
        raise RunRejected(
            f"COUPLING_RULES.json of {defs.engine_code} does not accept runs of {code} "
            f"(run {run_id}; accepted engine codes: {codes})",
            stage="chain",
        )
    return accepted


def _routable(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The index entries a downstream run may consume: the artifacts, then RUN_OUTPUT.json."""
    artifacts = [f for f in files if f.get("role") == "artifact"]
    output = [f for f in files if f.get("path") == RUN_OUTPUT and f.get("role") == "run"]
    return artifacts + output


def _default_selection(routable: list[dict[str, Any]], accepted: list[str]) -> list[dict[str, Any]]:
    """Without PATH: the accepted artifacts; RUN_OUTPUT.json when the rule names it exactly,
    or when no artifact was taken and the rule accepts it."""
    taken = [
        f for f in routable if f["path"] != RUN_OUTPUT and artifact_accepted(accepted, f["path"])
    ]
    for f in routable:
        if f["path"] == RUN_OUTPUT and (
            RUN_OUTPUT in accepted or (not taken and artifact_accepted(accepted, RUN_OUTPUT))
        ):
            taken.append(f)
    return taken


def _select_artifacts(
    defs: EngineDefinitions,
    run_dir: Path,
    run_id: str,
    code: str,
    pattern: str | None,
    accepted: list[str],
) -> list[dict[str, Any]]:
    """Step 2 (cont.): the index entries of the files taken: those matching ``pattern``
    (every one of which the rule must accept), or without one see ``_default_selection``."""
    try:
        files = read_artifact_index(run_dir)
    except ArtifactIndexError as exc:
        raise RunRejected(f"upstream {run_dir.name}: {exc}", stage="chain") from None
    routable = _routable(files)
    if pattern is None:
        return _default_selection(routable, accepted)
    chosen = [f for f in routable if artifact_accepted([pattern], f["path"])]
    if not chosen:
        names = ", ".join(f["path"] for f in routable) or "none"
        raise RunRejected(
            f"run {run_id} has no artifact matching {pattern!r} (routable: {names})",
            stage="chain",
        )
    refused = [f["path"] for f in chosen if not artifact_accepted(accepted, f["path"])]
    if refused:
        raise RunRejected(
            f"COUPLING_RULES.json of {defs.engine_code} does not accept "
            f"{', '.join(refused)} from {code} (accepted: {', '.join(accepted)})",
            stage="chain",
        )
    return chosen


def copy_inputs(artifacts: list[UpstreamArtifact], inputs_dir: Path) -> None:
    """Copy each artifact to ``inputs_dir/{sha256}``, hashing as it goes; read-only copies."""
    inputs_dir.mkdir(parents=True, exist_ok=True)
    for art in artifacts:
        dest = inputs_dir / art.sha256
        if dest.exists():
            continue
        h = hashlib.sha256()
        tmp = inputs_dir / f".{art.sha256}.part"
        with open(art.source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1024 * 1024):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != art.sha256:
            tmp.unlink()
            raise RunRejected(
                f"upstream {art.run_id}: {art.path} changed while it was copied "
                f"(expected sha256 {art.sha256}, got {h.hexdigest()})",
                stage="chain",
            )
        os.chmod(tmp, 0o444)
        os.rename(tmp, dest)
