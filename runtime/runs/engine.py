"""One execution of an engine under the contract, shared by a run and a replay.

Contract (ENGINE side):

- stdin: the canonical RUN_INPUT.json bytes, then EOF.
- stdout: exactly one JSON object ``{"outputs": {...}, "metrics": {...}}`` (whitespace around
  it is allowed, nothing else; no other member; no duplicate keys; UTF-8).
- stderr: free text, sealed as ``logs/engine.stderr``, scrubbed: every value of a
  secret-looking env variable (runtime.runs.sanitize) is replaced by ``[redacted]``.
  On stdout such a value rejects the run (an engine must not output secrets).
- files: whatever the engine writes under ``$RUNYARD_ARTIFACTS_DIR`` becomes an artifact
  (regular files only); ``$RUNYARD_INPUTS_DIR`` (set only when it consumes upstream artifacts)
  holds ``{sha256}`` files, read-only. The cwd is a scratch dir that is thrown away.
- exit status 0.
- env: the engine's merged env and scoped PATH (runtime.config.env.resolve_service_env) with no
  ``RUNYARD_*`` variable except those two: no control endpoint, so no engine can call another.

Outputs must canonicalize (RFC 8785): no NaN/Infinity, integers within ±(2**53-1), no lone
surrogates; whatever does not is a rejection, never a sealed run.
"""

from __future__ import annotations

import hashlib
import locale
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from runyard.runtime.config.env import RESERVED_PREFIX, resolve_service_env
from runyard.runtime.config.project import Project
from runyard.runtime.core.capped import read_capped
from runyard.runtime.core.manifest import ServiceEntry
from runyard.runtime.core.platform import current_arch, current_os
from runyard.runtime.core.tree import RuntimeTree

from .jsonio import JSONInputError, canonical, strict_loads
from .layout import Staging, now_rfc3339
from .model import RunError, RunRejected
from .process import EngineCall, EngineExit, exit_description, run_engine
from .sanitize import scrub_file, secret_values
from .sealing import SealedFileError, file_digest, list_files

__all__ = [
    "ARTIFACTS_VAR",
    "INPUTS_VAR",
    "EngineEnv",
    "EngineRun",
    "build_run_output",
    "engine_env",
    "execute_engine",
    "parse_stdout",
    "run_conditions",
]

ARTIFACTS_VAR = "RUNYARD_ARTIFACTS_DIR"
INPUTS_VAR = "RUNYARD_INPUTS_DIR"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_STDOUT = 256 * 1024 * 1024


@dataclass
class EngineEnv:
    env: dict[str, str]
    #: Values of the env's secret-looking variables (for sanitizing and scrubbing).
    secrets: list[str]


@dataclass
class EngineRun:
    exit: EngineExit
    outputs: dict[str, Any]
    metrics: dict[str, Any]
    started_at: str
    finished_at: str
    binary_sha256: str
    #: The environment the engine got (RUN_CONDITIONS records its names only).
    env: dict[str, str]


def pin_version(project: Project | None, name: str, version: str) -> Project:
    """``project`` with ``[services.NAME] version`` pinned to exactly ``version``."""
    base = project if project is not None else Project()
    service = msgspec.structs.replace(base.service(name), version=version)
    return msgspec.structs.replace(base, services={**base.services, name: service})


def engine_env(tree: RuntimeTree, entry: ServiceEntry, project: Project | None) -> EngineEnv:
    """The merged env of exactly ``entry`` (its version pinned) without any RUNYARD_* variable
    (the two allowed ones are added per execution)."""
    pinned = pin_version(project, entry.name, entry.version)
    resolved = resolve_service_env(tree, entry.name, project=pinned)
    env = {k: v for k, v in resolved.env.items() if not k.upper().startswith(RESERVED_PREFIX)}
    return EngineEnv(env=env, secrets=secret_values(env))


def engine_binary(tree: RuntimeTree, entry: ServiceEntry) -> tuple[str, str]:
    """(absolute path, sha256) of the engine program; RunError when it drifted since install."""
    path = tree.root / entry.bin_path
    if not path.is_file():
        raise RunError(f"{path}: engine program missing (runyard runtime verify)")
    sha, _ = file_digest(path)
    rel = os.path.relpath(path, tree.root / entry.install_rel)
    recorded = entry.files.get(rel)
    if recorded and recorded != sha:
        raise RunError(
            f"{path}: the engine program changed since install (sha256 {sha}, "
            f"installed {recorded}); reinstall it: runyard runtime ensure {entry.name} "
            f"{entry.version}"
        )
    return str(path), sha


def parse_stdout(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs, metrics) of the engine's stdout; RunRejected (stage ``output``) otherwise."""

    def reject(why: str) -> RunRejected:
        return RunRejected(f"stdout: {why}", stage="output")

    if not data.strip():
        raise reject("empty (expected one JSON object {outputs, metrics})")
    try:
        doc = strict_loads(data)
    except JSONInputError as exc:
        raise reject(f"not exactly one JSON object: {exc}") from None
    if not isinstance(doc, dict):
        raise reject(f"a JSON {type(doc).__name__}, not an object {{outputs, metrics}}")
    if set(doc) != {"outputs", "metrics"}:
        got = ", ".join(sorted(doc)) or "no members"
        raise reject(f"the object must have exactly the members outputs and metrics (got {got})")
    for member in ("outputs", "metrics"):
        if not isinstance(doc[member], dict):
            raise reject(f"{member} must be an object")
    return doc["outputs"], doc["metrics"]


def build_run_output(
    run_input: dict[str, Any], input_bytes: bytes, outputs: dict[str, Any], metrics: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """RUN_OUTPUT.json and its canonical bytes.

    outputs_hash = sha256 over the canonical RUN_OUTPUT.json with the outputs_hash member
    removed; inputs_hash = sha256 over the canonical RUN_INPUT.json bytes.
    """
    doc: dict[str, Any] = {
        "engine": {
            "engine_code": run_input["engine_code"],
            "engine_version": run_input["engine_version"],
        },
        "inputs_hash": hashlib.sha256(input_bytes).hexdigest(),
        "metrics": metrics,
        "outputs": outputs,
        "run_id": run_input["run_id"],
    }
    try:
        doc["outputs_hash"] = hashlib.sha256(canonical(doc)).hexdigest()
    except (ValueError, TypeError) as exc:
        raise RunRejected(f"outputs cannot be canonicalized: {exc}", stage="output") from None
    return doc, canonical(doc)


def _check_artifacts(staging: Staging) -> None:
    try:
        list_files(staging.artifacts)
    except SealedFileError as exc:
        raise RunRejected(f"artifacts: {exc}", stage="artifacts") from None


def _check_inputs(staging: Staging, expected: set[str]) -> None:
    os.chmod(staging.inputs, 0o755)
    try:
        present = set(list_files(staging.inputs))
    except SealedFileError as exc:
        raise RunRejected(f"inputs: {exc}", stage="artifacts") from None
    if present != expected:
        raise RunRejected("the engine changed $RUNYARD_INPUTS_DIR", stage="artifacts")
    for name in expected:
        if file_digest(staging.inputs / name)[0] != name:
            raise RunRejected(f"the engine modified its input artifact {name}", stage="artifacts")


def execute_engine(
    tree: RuntimeTree,
    entry: ServiceEntry,
    staging: Staging,
    input_bytes: bytes,
    env: EngineEnv,
    *,
    input_hashes: set[str],
    timeout: float = DEFAULT_TIMEOUT,
    max_stdout: int = DEFAULT_MAX_STDOUT,
    cancel: threading.Event | None = None,
) -> EngineRun:
    """Run the engine once in ``staging``; RunRejected for anything but a valid result.

    ``input_hashes`` are the files already in ``staging.inputs`` (none: no inputs dir var).
    """
    program, binary_sha256 = engine_binary(tree, entry)
    child_env = _child_env(env, staging, input_hashes)
    if input_hashes:
        os.chmod(staging.inputs, 0o555)  # read-only for the engine; restored once it exits
    started_at = now_rfc3339()
    call = EngineCall(
        argv=[program, *entry.args],
        env=child_env,
        cwd=staging.work,
        stdin=input_bytes,
        stdout_path=staging.stdout,
        stderr_path=staging.stderr,
        timeout=timeout,
        max_stdout=max_stdout,
        cancel=cancel,
    )
    try:
        result = run_engine(call)
    except OSError as exc:
        raise RunRejected(
            f"cannot execute {program}: {exc.strerror or exc}", stage="engine"
        ) from None
    finally:
        os.chmod(staging.inputs, 0o755)
        leaked = {
            p: scrub_file(p, env.secrets) if p.exists() else 0
            for p in (staging.stdout, staging.stderr)
        }
    finished_at = now_rfc3339()
    _check_exit(staging, result, leaked[staging.stdout], timeout, max_stdout)
    # exit_description refused more than max_stdout; the cap holds the read to that too.
    outputs, metrics = parse_stdout(read_capped(staging.stdout, max_stdout))
    _check_artifacts(staging)
    if input_hashes:
        _check_inputs(staging, input_hashes)
    return EngineRun(
        exit=result,
        outputs=outputs,
        metrics=metrics,
        started_at=started_at,
        finished_at=finished_at,
        binary_sha256=binary_sha256,
        env=child_env,
    )


def _child_env(env: EngineEnv, staging: Staging, input_hashes: set[str]) -> dict[str, str]:
    """The engine's env plus the two RUNYARD_* variables it may see (inputs only when it has
    some)."""
    child_env = dict(env.env)
    child_env[ARTIFACTS_VAR] = str(staging.artifacts)
    if input_hashes:
        child_env[INPUTS_VAR] = str(staging.inputs)
    return child_env


def _check_exit(
    staging: Staging, result: EngineExit, stdout_leaks: int, timeout: float, max_stdout: int
) -> None:
    """RunRejected unless the engine exited 0 in time, within its stdout cap, and printed no
    secret value on stdout (``stdout_leaks`` values were scrubbed from it)."""
    problem = exit_description(result, timeout, max_stdout)
    if problem:
        raise RunRejected(problem + _last_stderr_line(staging), stage="engine")
    if stdout_leaks:
        raise RunRejected(
            "stdout holds the value of a secret-looking environment variable "
            f"({stdout_leaks} time(s), replaced by [redacted] in the record); "
            "an engine must not output secrets",
            stage="output",
        )


def _last_stderr_line(staging: Staging) -> str:
    try:
        with open(staging.stderr, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
            lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    last = lines[-1].strip()
    return f"; stderr: {last[:200]}"


def run_conditions(
    tree: RuntimeTree, entry: ServiceEntry, env: dict[str, str], binary_sha256: str
) -> dict[str, Any]:
    """RUN_CONDITIONS.json: where it ran. Env variable names only, never values."""
    return {
        "arch": current_arch(),
        "cpu_count": os.cpu_count(),
        "engine_archive_sha256": entry.checksum,
        "engine_argv": [entry.bin_path, *entry.args],
        "engine_binary_sha256": binary_sha256,
        "env_names": sorted(env),
        "locale": {
            "LANG": env.get("LANG"),
            "LC_ALL": env.get("LC_ALL"),
            "LC_CTYPE": env.get("LC_CTYPE"),
            "preferred_encoding": locale.getpreferredencoding(False),
        },
        "machine": platform.machine(),
        "os": current_os(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "python": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "executable": sys.executable,
        },
        "timezone": {"TZ": env.get("TZ"), "local": list(time.tzname)},
    }
