"""``replay_bundle``: verify a bundle, re-execute its engine on the bundled RUN_INPUT.json and
demand byte-identical canonical RUN_OUTPUT.json (the spec's replay rule).

The engine version recorded in RUN_INPUT.json must be installed in the tree for this os/arch
(else RunError naming it and ``runyard runtime ensure ENGINE VERSION``). The engine runs under
the same contract as a run: the bundled RUN_INPUT bytes on stdin, the bundled ``inputs/`` as
``$RUNYARD_INPUTS_DIR``, a fresh ``$RUNYARD_ARTIFACTS_DIR``.

Every replay that executes writes its own record, sealed like a bundle (ARTIFACT_INDEX.json,
SHA256SUMS.txt) but not one:

    data/{engine}/replays/{replay_id}/
        REPLAY.json          verdict: replay_of, replayable, identical, differences, reason, hashes
        RUN_INPUT.json       the bundled bytes it ran with
        RUN_OUTPUT.json      what the replay produced (absent when the engine was rejected)
        RUN_META.json        times, host, pids, exit code, replay_of = the original run id
        RUN_CONDITIONS.json  artifacts/  logs/engine.stderr

The original bundle is only read, never written.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from runyard.runtime.config.project import Project
from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused, RunyardError
from runyard.runtime.core.manifest import ServiceEntry, load_manifest
from runyard.runtime.core.own_version import runyard_version
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree

from .chain import UpstreamArtifact, copy_inputs
from .engine import (
    DEFAULT_TIMEOUT,
    EngineRun,
    build_run_output,
    engine_env,
    execute_engine,
    run_conditions,
)
from .jsonio import JSONInputError, canonical, diff_paths, strict_loads
from .layout import (
    INDEX_FILE,
    REPLAY_FILE,
    RUN_CONDITIONS,
    RUN_INPUT,
    RUN_META,
    RUN_OUTPUT,
    SUMS_FILE,
    Staging,
    new_run_id,
    now_rfc3339,
    replays_dir,
)
from .model import ReplayReport, RunError, RunRejected
from .run import EventCallback, emit, move_outputs_into, write_bundle_files
from .sealing import BundleFileError, file_digest, list_files, make_read_only, seal_bundle
from .verify import verify_bundle

__all__ = ["replay_bundle"]


def installed_entry(tree: RuntimeTree, engine: str, version: str) -> ServiceEntry:
    found = [
        e
        for e in load_manifest(tree).find(engine)
        if e.version == version and e.os == current_os() and e.arch == current_arch()
    ]
    if not found:
        have = sorted({e.version for e in load_manifest(tree).find(engine)})
        installed = f"installed: {', '.join(have)}" if have else "not installed at all"
        raise RunError(
            f"{engine} {version} is not installed in {tree.root} for "
            f"{current_os()}-{current_arch()} ({installed}); replaying needs that exact "
            f"version: runyard runtime ensure {engine} {version}"
        )
    if found[0].kind != "engine":
        raise RunError(f"{engine} {version} is a {found[0].kind}, not an engine")
    return found[0]


def _load(bundle: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    try:
        data = read_capped(bundle / name, RUN_FILE, follow_symlinks=False)
        doc = strict_loads(data)
    except (OSError, FileRefused, JSONInputError) as exc:
        raise RunyardError(f"{bundle / name}: {exc}") from None
    if not isinstance(doc, dict):
        raise RunyardError(f"{bundle / name}: not a JSON object")
    return data, doc


def replay_bundle(
    tree: RuntimeTree,
    path: str | os.PathLike[str],
    *,
    pubkey: Any = None,
    on_event: EventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    project: Project | None = None,
    cancel: threading.Event | None = None,
) -> ReplayReport:
    """Verify, re-execute, compare; see the module doc. A failed verification or a differing
    output is a report with ``replayable`` False, not an exception."""
    tree.require()
    bundle = Path(path)
    report = verify_bundle(bundle, pubkey, tree=tree)
    _, meta = _load(bundle, RUN_META) if (bundle / RUN_META).is_file() else (b"", {})
    input_bytes, run_input = _load(bundle, RUN_INPUT)
    engine = str(meta.get("engine") or bundle.resolve().parent.parent.name)
    version = str(run_input.get("engine_version", ""))
    run_id = str(run_input.get("run_id", ""))
    verdict = ReplayReport(
        bundle=str(bundle),
        run_id=run_id,
        engine=engine,
        engine_version=version,
        verify=report,
        replayable=False,
        reason="",
    )
    if not report.ok:
        first = report.failed[0]
        verdict.reason = f"the bundle fails verification: {first.name}: {first.detail}"
        return verdict
    entry = installed_entry(tree, engine, version)
    env = engine_env(tree, entry, project)
    original_output = read_capped(bundle / RUN_OUTPUT, RUN_FILE, follow_symlinks=False)
    index = run_input.get("input_artifact_index") or []
    replay_id = new_run_id()
    verdict.replay_id = replay_id
    with Staging(replays_dir(tree, engine), replay_id) as staging:
        inputs = [
            UpstreamArtifact(
                run_id=e["run_id"],
                engine_code=e["engine_code"],
                path=e["path"],
                sha256=e["sha256"],
                size=0,
                source=bundle / "inputs" / e["sha256"],
            )
            for e in index
        ]
        copy_inputs(inputs, staging.inputs)
        emit(on_event, "replay_started", run_id, engine, replay_id=replay_id)
        result: EngineRun | None = None
        replay_output: bytes | None = None
        try:
            result = execute_engine(
                tree,
                entry,
                staging,
                input_bytes,
                env,
                input_hashes={a.sha256 for a in inputs},
                timeout=timeout,
                cancel=cancel,
            )
            _, replay_output = build_run_output(
                run_input, input_bytes, result.outputs, result.metrics
            )
        except RunRejected as rej:
            verdict.reason = f"the replayed engine run was rejected: {rej.reason}"
        if replay_output is not None:
            if replay_output == original_output:
                verdict.replayable = True
                verdict.reason = "identical canonical RUN_OUTPUT.json bytes"
            else:
                verdict.differences = diff_paths(
                    strict_loads(original_output), strict_loads(replay_output)
                )
                verdict.reason = (
                    "RUN_OUTPUT.json differs at " + ", ".join(verdict.differences[:10])
                    if verdict.differences
                    else "RUN_OUTPUT.json bytes differ"
                )
        verdict.artifact_differences = _artifact_differences(bundle, staging)
        record = _write_record(
            tree, entry, staging, verdict, meta, input_bytes, replay_output, result
        )
        verdict.record = str(record)
    emit(
        on_event,
        "replayed",
        run_id,
        engine,
        replay_id=replay_id,
        replayable=verdict.replayable,
        reason=verdict.reason,
    )
    return verdict


def _artifact_differences(bundle: Path, staging: Staging) -> list[str]:
    def hashes(root: Path) -> dict[str, str]:
        if not root.is_dir():
            return {}
        try:
            return {rel: file_digest(root / rel)[0] for rel in list_files(root)}
        except (OSError, ValueError):
            return {}

    old = hashes(bundle / "artifacts")
    new = hashes(staging.artifacts)
    return sorted(f"artifacts/{p}" for p in set(old) | set(new) if old.get(p) != new.get(p))


def _write_record(
    tree: RuntimeTree,
    entry: ServiceEntry,
    staging: Staging,
    verdict: ReplayReport,
    original_meta: dict[str, Any],
    input_bytes: bytes,
    replay_output: bytes | None,
    result: EngineRun | None,
) -> Path:
    original_output = strict_loads(
        read_capped(Path(verdict.bundle) / RUN_OUTPUT, RUN_FILE, follow_symlinks=False)
    )
    replay_doc = {
        "differences": verdict.differences,
        "artifact_differences": verdict.artifact_differences,
        "engine": entry.name,
        "engine_version": entry.version,
        "original_outputs_hash": original_output.get("outputs_hash"),
        "reason": verdict.reason,
        "replay_id": verdict.replay_id,
        "replay_of": verdict.run_id,
        "replay_outputs_hash": (
            strict_loads(replay_output).get("outputs_hash") if replay_output else None
        ),
        "replayable": verdict.replayable,
    }
    meta: dict[str, Any] = {
        "engine": entry.name,
        "engine_code": original_meta.get("engine_code"),
        "engine_version": entry.version,
        "finished_at": result.finished_at if result else now_rfc3339(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "replay_id": verdict.replay_id,
        "replay_of": verdict.run_id,
        "run_id": verdict.run_id,
        "runyard_version": runyard_version(),
    }
    if result is not None:
        meta.update(
            duration=round(result.exit.duration, 6),
            engine_pid=result.exit.pid,
            exit_code=result.exit.returncode,
            started_at=result.started_at,
        )
    files = {
        REPLAY_FILE: canonical(replay_doc),
        RUN_INPUT: input_bytes,
        RUN_META: canonical(meta),
    }
    if replay_output is not None:
        files[RUN_OUTPUT] = replay_output
    if result is not None:
        files[RUN_CONDITIONS] = canonical(
            run_conditions(tree, entry, result.env, result.binary_sha256)
        )
    bundle = staging.bundle
    move_outputs_into(staging, bundle)
    if staging.stdout.exists() and result is None:
        (bundle / "logs").mkdir(exist_ok=True)
        os.rename(staging.stdout, bundle / "logs" / "engine.stdout")
    known: dict[str, tuple[str, int]] = {}
    write_bundle_files(bundle, files, known)
    try:
        seal_bundle(bundle, known, run_id=str(verdict.replay_id))
    except BundleFileError:
        # A rejected replay may have left artifacts a record cannot hold: drop them.
        shutil.rmtree(bundle / "artifacts", ignore_errors=True)
        for name in (INDEX_FILE, SUMS_FILE):
            (bundle / name).unlink(missing_ok=True)
        seal_bundle(bundle, known, run_id=str(verdict.replay_id))
    make_read_only(bundle)
    return staging.publish(replays_dir(tree, entry.name) / str(verdict.replay_id))
