"""``execute_and_seal``: one engine run, from inputs to a sealed run or a rejection record.

Order (each step fails before the next starts):

    select the engine entry (kind engine) · load the signing key · definitions (config/{engine}/,
    installed lazily) · merged env · run id + staging dir data/{engine}/runs/.tmp-{run_id}/ ·
    upstream artifacts (chain.py) · RUN_INPUT (context sanitized) canonical + INPUT_SCHEMA ·
    requires_input_artifacts · event "started" · execute (engine.py) · RUN_OUTPUT canonical +
    OUTPUT_SCHEMA · run/ assembled · hashed + fsynced · ARTIFACT_INDEX, SHA256SUMS, .sig ·
    RUN_ATTESTATION.intoto.jsonl (attestation.py) ·
    one rename to data/{engine}/runs/{run_id}/ · event "sealed"

A rejection moves what the run produced to data/{engine}/rejected/{run_id}/ with REJECTION.json
(never a SHA256SUMS.txt: it is not a sealed run), emits "rejected" and raises RunRejected.

Thread-safe: a daemon calls it from a worker thread; ``on_event`` is called in that thread and
an exception it raises is swallowed (a broken subscriber never breaks a run); ``cancel`` (a
threading.Event) kills the engine and rejects the run.

Each run is appended once to the tree's audit trail (runtime/ops/audit_action.py) as
``run.sealed`` / ``run.rejected``, with ids, hashes and the reason, never inputs or context (or
``run`` with the error when it could not be attempted); the actor is the daemon's client when a
daemon runs it, else this process (``cli``). A failed append is a warning on the
``runyard.audit`` logger: the run stands.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from runyard.runtime.config.project import Project
from runyard.runtime.core.manifest import ServiceEntry, load_manifest
from runyard.runtime.core.own_version import runyard_version
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.audit_action import AuditedAction, audited
from runyard.runtime.runs.rejection import file_rejection
from runyard.runtime.signing.keys import load_signing_key

from .attestation import ATTESTATION_FILE, attest_run
from .chain import FromRun, UpstreamArtifact, copy_inputs, resolve_from_runs
from .definitions import EngineDefinitions, engine_definitions
from .engine import (
    DEFAULT_MAX_STDOUT,
    DEFAULT_TIMEOUT,
    EngineRun,
    build_run_output,
    engine_env,
    execute_engine,
    run_conditions,
)
from .jsonio import canonical, strict_loads
from .layout import (
    INDEX_FILE,
    INPUTS_DIR,
    RUN_CONDITIONS,
    RUN_INPUT,
    RUN_META,
    RUN_OUTPUT,
    SIG_FILE,
    STDERR_LOG,
    SUMS_FILE,
    Staging,
    new_run_id,
    now_rfc3339,
    runs_dir,
)
from .model import RunError, RunMilestone, RunRejected, RunResult
from .sanitize import sanitize_context
from .sealing import (
    SealedFileError,
    make_read_only,
    seal_run,
    signer_identity,
    write_synced,
)

__all__ = ["EventCallback", "execute_and_seal"]

EventCallback = Callable[[RunMilestone], None]


def emit(on_event: EventCallback | None, kind: Any, run_id: str, engine: str, **data: Any) -> None:
    if on_event is None:
        return
    # A subscriber's bug must not break a run.
    with contextlib.suppress(Exception):
        on_event(RunMilestone(kind=kind, run_id=run_id, engine=engine, at=now_rfc3339(), data=data))


def select_engine(tree: RuntimeTree, engine: str, project: Project | None) -> ServiceEntry:
    from runyard.runtime.config.env import select_entry

    entry = select_entry(load_manifest(tree), engine, project)
    if entry.kind != "engine":
        raise RunError(f"{engine} is a {entry.kind}, not an engine (manifest kind)")
    return entry


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RunError(f"{what} must be a JSON object, got {type(value).__name__}")
    return dict(value)


def write_run_files(
    run_dir: Path, files: Mapping[str, bytes], known: dict[str, tuple[str, int]]
) -> None:
    """Write (and fsync) files we produced, recording their digests in ``known``."""
    for rel, data in files.items():
        write_synced(run_dir / rel, data)
        known[rel] = (hashlib.sha256(data).hexdigest(), len(data))


def move_outputs_into(staging: Staging, run_dir: Path) -> None:
    """artifacts/, inputs/ (when used) and the stderr log go into the run directory."""
    run_dir.mkdir(exist_ok=True)
    os.rename(staging.artifacts, run_dir / "artifacts")
    if any(staging.inputs.iterdir()):
        os.rename(staging.inputs, run_dir / INPUTS_DIR)
    if staging.stderr.exists():
        (run_dir / "logs").mkdir(exist_ok=True)
        os.rename(staging.stderr, run_dir / STDERR_LOG)


def execute_and_seal(
    tree: RuntimeTree,
    engine: str,
    inputs: Mapping[str, Any],
    *,
    parameters: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    project_id: str = "default",
    from_runs: Iterable[str | FromRun] = (),
    sign_key: str | os.PathLike[str] | None = None,
    on_event: EventCallback | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    project: Project | None = None,
    cancel: threading.Event | None = None,
    max_stdout: int = DEFAULT_MAX_STDOUT,
) -> RunResult:
    """Execute ``engine`` on ``inputs`` and seal the run into data/{engine}/runs/{run_id}/.

    RunRejected when the run is refused (see the module doc); RunError (or another
    RunyardError) when it cannot be attempted. Recorded once in the audit trail:
    ``run.sealed``, ``run.rejected``, or ``run`` with the error when it could not be attempted.
    """
    tree.require()
    detail = {"engine": engine, "project_id": project_id, "signed": sign_key is not None}
    with audited(tree.logs_dir, "run", target=engine, detail=detail) as act:
        return _execute_and_seal(
            act,
            tree,
            engine,
            inputs,
            parameters=parameters,
            context=context,
            project_id=project_id,
            from_runs=from_runs,
            sign_key=sign_key,
            on_event=on_event,
            timeout=timeout,
            project=project,
            cancel=cancel,
            max_stdout=max_stdout,
        )


def _execute_and_seal(
    act: AuditedAction,
    tree: RuntimeTree,
    engine: str,
    inputs: Mapping[str, Any],
    *,
    parameters: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    project_id: str,
    from_runs: Iterable[str | FromRun],
    sign_key: str | os.PathLike[str] | None,
    on_event: EventCallback | None,
    timeout: float,
    project: Project | None,
    cancel: threading.Event | None,
    max_stdout: int,
) -> RunResult:
    """The run itself; ``act`` is its audit entry, filled in as it ends."""
    request = _check_request(inputs, parameters, context, project_id, timeout)
    entry = select_engine(tree, engine, project)
    signer = load_signing_key(sign_key) if sign_key is not None else None
    defs = engine_definitions(tree, entry)
    env = engine_env(tree, entry, project)
    from_runs = list(from_runs)
    run_id = new_run_id()
    with Staging(runs_dir(tree, engine), run_id) as staging:
        run_input: dict[str, Any] | None = None
        try:
            upstream = resolve_from_runs(tree, defs, from_runs) if from_runs else []
            run_input = _run_input(
                run_id, defs, request, env.secrets, upstream if from_runs else None
            )
            input_bytes = _check_input(defs, run_input, upstream)
            copy_inputs(upstream, staging.inputs)
            emit(on_event, "started", run_id, engine, engine_version=entry.version)
            result = execute_engine(
                tree,
                entry,
                staging,
                input_bytes,
                env,
                input_hashes={a.sha256 for a in upstream},
                timeout=timeout,
                max_stdout=max_stdout,
                cancel=cancel,
            )
            output_bytes = _check_output(defs, run_input, input_bytes, result)
            sealed = _seal(
                tree, entry, defs, staging, run_input, input_bytes, output_bytes, result, signer
            )
        except RunRejected as rej:
            record = file_rejection(tree, engine, staging, run_id, rej, run_input, defs)
            raise _rejected(act, engine, run_id, rej, record, on_event) from None
    _audit_sealed(act, sealed)
    emit(
        on_event, "sealed", run_id, engine, run_dir=sealed.run_dir, outputs_hash=sealed.outputs_hash
    )
    return sealed


def _check_request(
    inputs: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    project_id: str,
    timeout: float,
) -> dict[str, Any]:
    """The caller's part of RUN_INPUT, checked before anything is loaded."""
    request = {
        "inputs": _object(inputs, "inputs"),
        "parameters": _object(parameters, "parameters"),
        "context": _object(context, "context"),
    }
    if not isinstance(project_id, str) or not project_id:
        raise RunError("project_id must be a non-empty string")
    if timeout <= 0:
        raise RunError("timeout must be > 0 seconds")
    return {**request, "project_id": project_id}


def _run_input(
    run_id: str,
    defs: EngineDefinitions,
    request: dict[str, Any],
    secrets: Iterable[str],
    upstream: list[UpstreamArtifact] | None,
) -> dict[str, Any]:
    """RUN_INPUT as the engine reads it (context sanitized); ``upstream`` is None without
    --from-run."""
    run_input: dict[str, Any] = {
        "context": sanitize_context(request["context"], secrets),
        "engine_code": defs.engine_code,
        "engine_version": defs.engine_version,
        "inputs": request["inputs"],
        "parameters": request["parameters"],
        "project_id": request["project_id"],
        "run_id": run_id,
    }
    if upstream is not None:
        run_input["input_artifact_index"] = [a.index_entry() for a in upstream]
    return run_input


def _check_output(
    defs: EngineDefinitions, run_input: dict[str, Any], input_bytes: bytes, result: EngineRun
) -> bytes:
    """RUN_OUTPUT canonical bytes, once they pass OUTPUT_SCHEMA."""
    run_output, output_bytes = build_run_output(
        run_input, input_bytes, result.outputs, result.metrics
    )
    problem = defs.output_problem(run_output)
    if problem:
        raise RunRejected(problem, stage="output")
    return output_bytes


def _rejected(
    act: AuditedAction,
    engine: str,
    run_id: str,
    rej: RunRejected,
    record: str | None,
    on_event: EventCallback | None,
) -> RunRejected:
    """Audit and announce a rejection already filed at ``record``; the exception to raise."""
    act.action, act.target, act.result = "run.rejected", f"{engine}/{run_id}", "rejected"
    act.detail = {
        "run_id": run_id,
        "engine": engine,
        "stage": rej.stage,
        "reason": rej.reason[:300],
    }
    emit(on_event, "rejected", run_id, engine, reason=rej.reason, stage=rej.stage)
    return rej.with_record(run_id, engine, record)


def _audit_sealed(act: AuditedAction, sealed: RunResult) -> None:
    act.action, act.target = "run.sealed", f"{sealed.engine}/{sealed.run_id}"
    act.detail = {
        "run_id": sealed.run_id,
        "engine": sealed.engine,
        "engine_version": sealed.engine_version,
        "project_id": sealed.project_id,
        "inputs_hash": sealed.inputs_hash,
        "outputs_hash": sealed.outputs_hash,
        "signed_by": sealed.signed_by,
    }


def _check_input(
    defs: EngineDefinitions, run_input: dict[str, Any], upstream: list[UpstreamArtifact]
) -> bytes:
    try:
        input_bytes = canonical(run_input)
    except (ValueError, TypeError) as exc:
        raise RunRejected(f"RUN_INPUT cannot be canonicalized: {exc}", stage="input") from None
    if defs.requires_input_artifacts and not upstream:
        raise RunRejected(
            f"{defs.engine_code} requires input artifacts (ENGINE_MANIFEST.json "
            "requires_input_artifacts) but input_artifact_index would be empty: "
            "give --from-run RUN_ID of an accepted upstream run",
            stage="input",
        )
    # Validate exactly what the engine will read (3.0 is 3, a tuple is an array...).
    problem = defs.input_problem(strict_loads(input_bytes))
    if problem:
        raise RunRejected(problem, stage="input")
    return input_bytes


def _seal(
    tree: RuntimeTree,
    entry: ServiceEntry,
    defs: EngineDefinitions,
    staging: Staging,
    run_input: dict[str, Any],
    input_bytes: bytes,
    output_bytes: bytes,
    result: EngineRun,
    signer: Any,
) -> RunResult:
    run_id = run_input["run_id"]
    meta = _run_meta(entry, defs, run_input, result, signer)
    conditions = run_conditions(tree, entry, result.env, result.binary_sha256)
    run_dir = staging.run_dir
    move_outputs_into(staging, run_dir)
    known: dict[str, tuple[str, int]] = {}
    files = {
        RUN_INPUT: input_bytes,
        RUN_OUTPUT: output_bytes,
        RUN_META: canonical(meta),
        RUN_CONDITIONS: canonical(conditions),
        **defs.files,
    }
    write_run_files(run_dir, files, known)
    try:
        entries, sums = seal_run(run_dir, known, run_id=run_id, signer=signer)
    except SealedFileError as exc:
        raise RunRejected(f"cannot seal: {exc}", stage="seal") from None
    attest_run(run_dir, sums, signer, tree, write_synced)
    make_read_only(run_dir)
    dest = staging.publish(runs_dir(tree, entry.name) / run_id)
    extra = [INDEX_FILE, SUMS_FILE, ATTESTATION_FILE] + ([SIG_FILE] if signer is not None else [])
    total = sum(e["size"] for e in entries) + sum((dest / n).stat().st_size for n in extra)
    return RunResult(
        run_id=run_id,
        engine=entry.name,
        engine_code=defs.engine_code,
        engine_version=defs.engine_version,
        project_id=run_input["project_id"],
        run_dir=str(dest),
        inputs_hash=hashlib.sha256(input_bytes).hexdigest(),
        outputs_hash=strict_loads(output_bytes)["outputs_hash"],
        files=len(entries) + len(extra),
        bytes=total,
        duration=meta["duration"],
        signed_by=meta.get("signing_key_fingerprint"),
    )


def _run_meta(
    entry: ServiceEntry,
    defs: EngineDefinitions,
    run_input: dict[str, Any],
    result: EngineRun,
    signer: Any,
) -> dict[str, Any]:
    """RUN_META: who ran what, where and when (and the signer, when there is one)."""
    meta: dict[str, Any] = {
        "duration": round(result.exit.duration, 6),
        "engine": entry.name,
        "engine_code": defs.engine_code,
        "engine_pid": result.exit.pid,
        "engine_version": defs.engine_version,
        "exit_code": result.exit.returncode,
        "finished_at": result.finished_at,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "project_id": run_input["project_id"],
        "replay_of": None,
        "run_id": run_input["run_id"],
        "runyard_version": runyard_version(),
        "started_at": result.started_at,
    }
    if signer is not None:
        meta.update(signer_identity(signer))
    return meta
