"""``replay_run``: verify a sealed run, re-execute its engine on its sealed RUN_INPUT.json and
demand byte-identical canonical RUN_OUTPUT.json (the spec's replay rule).

The engine version recorded in RUN_INPUT.json must be installed in the tree for this os/arch
(else RunError naming it and ``runyard runtime ensure ENGINE VERSION``). The engine runs under
the same contract as a run: the sealed RUN_INPUT bytes on stdin, the sealed ``inputs/`` as
``$RUNYARD_INPUTS_DIR``, a fresh ``$RUNYARD_ARTIFACTS_DIR``.

Every replay that executes writes its own record, sealed like a run (ARTIFACT_INDEX.json,
SHA256SUMS.txt) but not one:

    data/{engine}/replays/{replay_id}/
        REPLAY.json          verdict: replay_of, replayable, differences (paths, and values and
                             files side by side), reason, both outputs hashes
        RUN_INPUT.json       the sealed bytes it ran with
        RUN_OUTPUT.json      what the replay produced (absent when the engine was rejected)
        RUN_META.json        times, host, pids, exit code, replay_of = the original run id
        RUN_CONDITIONS.json  artifacts/  logs/engine.stderr

The original run directory is only read, never written.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import msgspec

from runyard.runtime.config.project import Project
from runyard.runtime.core.capped import RUN_FILE, read_capped
from runyard.runtime.core.errors import FileRefused, RunyardError
from runyard.runtime.core.manifest import ServiceEntry, load_manifest
from runyard.runtime.core.own_version import runyard_version
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.audit_action import audited

from .chain import UpstreamArtifact, copy_inputs
from .engine import (
    DEFAULT_TIMEOUT,
    EngineEnv,
    EngineRun,
    build_run_output,
    engine_env,
    execute_engine,
    run_conditions,
)
from .explain import file_differences, value_differences
from .jsonio import JSONInputError, canonical, strict_loads
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
from .run import EventCallback, emit, move_outputs_into, write_run_files
from .sealing import SealedFileError, make_read_only, seal_run
from .verify import verify_run

__all__ = ["replay_run"]


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


def _load(run_dir: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    try:
        data = read_capped(run_dir / name, RUN_FILE, follow_symlinks=False)
        doc = strict_loads(data)
    except (OSError, FileRefused, JSONInputError) as exc:
        raise RunyardError(f"{run_dir / name}: {exc}") from None
    if not isinstance(doc, dict):
        raise RunyardError(f"{run_dir / name}: not a JSON object")
    return data, doc


def replay_run(
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
    output is a report with ``replayable`` False, not an exception. Recorded once in the audit
    trail (``replay``), with the verdict."""
    tree.require()
    with audited(tree.logs_dir, "replay", target=str(path)) as act:
        verdict = _replay(tree, Path(path), pubkey, on_event, timeout, project, cancel)
        act.detail = {
            "run_id": verdict.run_id,
            "engine": verdict.engine,
            "replay_id": verdict.replay_id,
            "replayable": verdict.replayable,
        }
        return verdict


def _replay(
    tree: RuntimeTree,
    run_dir: Path,
    pubkey: Any,
    on_event: EventCallback | None,
    timeout: float,
    project: Project | None,
    cancel: threading.Event | None,
) -> ReplayReport:
    verdict, meta, input_bytes, run_input = _read_sealed(tree, run_dir, pubkey)
    if not verdict.verify.ok:
        first = verdict.verify.failed[0]
        verdict.reason = f"the sealed run fails verification: {first.name}: {first.detail}"
        return verdict
    run_id, engine = verdict.run_id, verdict.engine
    entry = installed_entry(tree, engine, verdict.engine_version)
    env = engine_env(tree, entry, project)
    original_output = read_capped(run_dir / RUN_OUTPUT, RUN_FILE, follow_symlinks=False)
    replay_id = new_run_id()
    verdict.replay_id = replay_id
    with Staging(replays_dir(tree, engine), replay_id) as staging:
        inputs = _sealed_inputs(run_dir, run_input)
        copy_inputs(inputs, staging.inputs)
        emit(on_event, "replay_started", run_id, engine, replay_id=replay_id)
        result, replay_output = _re_execute(
            tree, entry, env, staging, verdict, run_input, input_bytes, inputs, timeout, cancel
        )
        if replay_output is not None:
            _compare_outputs(verdict, original_output, replay_output)
        verdict.file_differences = file_differences(run_dir / "artifacts", staging.artifacts)
        verdict.artifact_differences = [d.path for d in verdict.file_differences]
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


def _read_sealed(
    tree: RuntimeTree, run_dir: Path, pubkey: Any
) -> tuple[ReplayReport, dict[str, Any], bytes, dict[str, Any]]:
    """Verify the sealed run and read what a replay needs from it: (verdict so far, RUN_META,
    RUN_INPUT bytes, RUN_INPUT)."""
    report = verify_run(run_dir, pubkey, tree=tree)
    _, meta = _load(run_dir, RUN_META) if (run_dir / RUN_META).is_file() else (b"", {})
    input_bytes, run_input = _load(run_dir, RUN_INPUT)
    verdict = ReplayReport(
        run_dir=str(run_dir),
        run_id=str(run_input.get("run_id", "")),
        engine=str(meta.get("engine") or run_dir.resolve().parent.parent.name),
        engine_version=str(run_input.get("engine_version", "")),
        verify=report,
        replayable=False,
        reason="",
    )
    return verdict, meta, input_bytes, run_input


def _sealed_inputs(run_dir: Path, run_input: dict[str, Any]) -> list[UpstreamArtifact]:
    """The upstream artifacts the original run read, as the run directory's inputs/ holds them."""
    return [
        UpstreamArtifact(
            run_id=e["run_id"],
            engine_code=e["engine_code"],
            path=e["path"],
            sha256=e["sha256"],
            size=0,
            source=run_dir / "inputs" / e["sha256"],
        )
        for e in run_input.get("input_artifact_index") or []
    ]


def _re_execute(
    tree: RuntimeTree,
    entry: ServiceEntry,
    env: EngineEnv,
    staging: Staging,
    verdict: ReplayReport,
    run_input: dict[str, Any],
    input_bytes: bytes,
    inputs: list[UpstreamArtifact],
    timeout: float,
    cancel: threading.Event | None,
) -> tuple[EngineRun | None, bytes | None]:
    """Run the engine on the sealed input: (its run, its canonical RUN_OUTPUT bytes); a
    rejected engine run has no output, and the reason in ``verdict``."""
    result: EngineRun | None = None
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
        _, replay_output = build_run_output(run_input, input_bytes, result.outputs, result.metrics)
    except RunRejected as rej:
        verdict.reason = f"the replayed engine run was rejected: {rej.reason}"
        return result, None
    return result, replay_output


def _compare_outputs(verdict: ReplayReport, original: bytes, replayed: bytes) -> None:
    """The replay rule: byte-identical canonical RUN_OUTPUT.json, else where it differs (with
    both values, ``explain.py``)."""
    if replayed == original:
        verdict.replayable = True
        verdict.reason = "identical canonical RUN_OUTPUT.json bytes"
        return
    verdict.value_differences = value_differences(strict_loads(original), strict_loads(replayed))
    verdict.differences = [d.path for d in verdict.value_differences]
    verdict.reason = (
        "RUN_OUTPUT.json differs at " + ", ".join(verdict.differences[:10])
        if verdict.differences
        else "RUN_OUTPUT.json bytes differ"
    )


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
    files = {
        REPLAY_FILE: canonical(_replay_doc(entry, verdict, replay_output)),
        RUN_INPUT: input_bytes,
        RUN_META: canonical(_record_meta(entry, verdict, original_meta, result)),
    }
    if replay_output is not None:
        files[RUN_OUTPUT] = replay_output
    if result is not None:
        files[RUN_CONDITIONS] = canonical(
            run_conditions(tree, entry, result.env, result.binary_sha256)
        )
    run_dir = staging.run_dir
    move_outputs_into(staging, run_dir)
    if staging.stdout.exists() and result is None:
        (run_dir / "logs").mkdir(exist_ok=True)
        os.rename(staging.stdout, run_dir / "logs" / "engine.stdout")
    known: dict[str, tuple[str, int]] = {}
    write_run_files(run_dir, files, known)
    try:
        seal_run(run_dir, known, run_id=str(verdict.replay_id))
    except SealedFileError:
        # A rejected replay may have left artifacts a record cannot hold: drop them.
        shutil.rmtree(run_dir / "artifacts", ignore_errors=True)
        for name in (INDEX_FILE, SUMS_FILE):
            (run_dir / name).unlink(missing_ok=True)
        seal_run(run_dir, known, run_id=str(verdict.replay_id))
    make_read_only(run_dir)
    return staging.publish(replays_dir(tree, entry.name) / str(verdict.replay_id))


def _replay_doc(
    entry: ServiceEntry, verdict: ReplayReport, replay_output: bytes | None
) -> dict[str, Any]:
    """REPLAY.json: the verdict with both outputs hashes."""
    original_output = strict_loads(
        read_capped(Path(verdict.run_dir) / RUN_OUTPUT, RUN_FILE, follow_symlinks=False)
    )
    return {
        "differences": verdict.differences,
        "artifact_differences": verdict.artifact_differences,
        "file_differences": [msgspec.to_builtins(d) for d in verdict.file_differences],
        "value_differences": [msgspec.to_builtins(d) for d in verdict.value_differences],
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


def _record_meta(
    entry: ServiceEntry,
    verdict: ReplayReport,
    original_meta: dict[str, Any],
    result: EngineRun | None,
) -> dict[str, Any]:
    """The record's RUN_META; the engine's exit facts only when it ran to an exit."""
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
    return meta
