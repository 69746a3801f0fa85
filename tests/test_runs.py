"""Sealed runs through the library: seal, verify, replay, chains, rejections, secrets, kills.

Every engine runs for real as a subprocess (heat1d and heatstats from the examples catalog,
the test-only ``chaos`` engine from tests/test_runs_kit.py); every process a test starts is
stopped by that test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import require_tool
from test_runs_kit import (
    ALL_ENGINES,
    REPO,
    REQUIRED,
    SAMPLE,
    SAMPLE_OUTPUTS,
    SAMPLE_PROFILE,
    build_catalogs,
    install,
    isolate_user_config,
    kill_if_alive,
    pid_alive,
    run_dirs,
    tree_digest,
    wait_for_file,
    wait_gone,
)

from runyard.runtime.core.canonical import canonical_bytes
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs import (
    RunError,
    RunRejected,
    execute_and_seal,
    list_runs,
    replay_run,
    show_run,
    verify_run,
)
from runyard.runtime.runs.sanitize import REDACTED, looks_secret, sanitize_context
from runyard.runtime.signing.keys import SigningKeyFiles, generate_signing_key


@pytest.fixture(scope="session")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_catalogs(tmp_path_factory)


@pytest.fixture
def engines(tree: RuntimeTree, catalogs: dict[str, str]) -> RuntimeTree:
    install(tree, catalogs, *ALL_ENGINES)
    return tree


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_user_config(tmp_path, monkeypatch)


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKeyFiles:
    return generate_signing_key(tmp_path / "keys" / "signer")


def heat1d_run(tree: RuntimeTree, **kw):
    return execute_and_seal(tree, "heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"], **kw)


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# --- sealing ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_heat1d_run_is_sealed_canonical_and_passes_gnu_sha256sum(engines: RuntimeTree) -> None:
    events = []
    result = heat1d_run(engines, context={"user": "ada"}, on_event=events.append)
    run_dir = Path(result.run_dir)
    assert run_dir == engines.data_dir / "heat1d" / "runs" / result.run_id
    assert files_of(run_dir) == set(REQUIRED) | {
        "artifacts/profile.csv",
        "logs/engine.stderr",
        "RUN_ATTESTATION.intoto.jsonl",
    }
    assert (run_dir / "artifacts" / "profile.csv").read_bytes() == SAMPLE_PROFILE
    assert [e.kind for e in events] == ["started", "sealed"]
    assert all(e.run_id == result.run_id for e in events)

    for name in [p for p in files_of(run_dir) if p.endswith(".json")]:
        data = (run_dir / name).read_bytes()
        assert canonical_bytes(json.loads(data)) == data, name

    run_input = json.loads((run_dir / "RUN_INPUT.json").read_bytes())
    assert run_input == {
        "context": {"user": "ada"},
        "engine_code": "HEAT1D",
        "engine_version": "1.0.0",
        "inputs": SAMPLE["inputs"],
        "parameters": SAMPLE["parameters"],
        "project_id": "default",
        "run_id": result.run_id,
    }
    out = json.loads((run_dir / "RUN_OUTPUT.json").read_bytes())
    assert set(out) == {"run_id", "engine", "outputs", "metrics", "inputs_hash", "outputs_hash"}
    assert out["engine"] == {"engine_code": "HEAT1D", "engine_version": "1.0.0"}
    assert out["outputs"] == SAMPLE_OUTPUTS
    assert out["metrics"]["total_heat_final"] == "12"
    assert (
        out["inputs_hash"] == hashlib.sha256((run_dir / "RUN_INPUT.json").read_bytes()).hexdigest()
    )
    without = {k: v for k, v in out.items() if k != "outputs_hash"}
    assert out["outputs_hash"] == hashlib.sha256(canonical_bytes(without)).hexdigest()
    assert result.outputs_hash == out["outputs_hash"]

    meta = json.loads((run_dir / "RUN_META.json").read_bytes())
    assert meta["replay_of"] is None and meta["exit_code"] == 0
    assert {"started_at", "finished_at", "duration", "host", "pid", "runyard_version"} <= set(meta)
    cond = json.loads((run_dir / "RUN_CONDITIONS.json").read_bytes())
    assert {
        "os",
        "arch",
        "python",
        "engine_binary_sha256",
        "env_names",
        "locale",
        "timezone",
    } <= set(cond)
    binary = engines.root / "bin/heat1d/1.0.0" / f"{cond['os']}-{cond['arch']}" / "bin/heat1d"
    assert cond["engine_binary_sha256"] == hashlib.sha256(binary.read_bytes()).hexdigest()

    index = json.loads((run_dir / "ARTIFACT_INDEX.json").read_bytes())
    indexed = {e["path"]: e for e in index["files"]}
    # RUN_ATTESTATION.intoto.jsonl lists SHA256SUMS.txt, so neither lists it (SEALING_SPEC.md).
    outer = {"ARTIFACT_INDEX.json", "SHA256SUMS.txt", "RUN_ATTESTATION.intoto.jsonl"}
    assert set(indexed) == files_of(run_dir) - outer
    assert indexed["artifacts/profile.csv"]["role"] == "artifact"
    assert indexed["logs/engine.stderr"]["role"] == "log"
    assert indexed["RUN_META.json"]["role"] == "run"
    assert indexed["SEALING_SPEC.md"]["role"] == "definition"
    for rel, e in indexed.items():
        data = (run_dir / rel).read_bytes()
        assert (e["sha256"], e["size"]) == (hashlib.sha256(data).hexdigest(), len(data))

    sums = (run_dir / "SHA256SUMS.txt").read_text()
    lines = sums.splitlines()
    assert [ln.split("  ", 1)[1] for ln in lines] == sorted(
        files_of(run_dir) - {"SHA256SUMS.txt", "RUN_ATTESTATION.intoto.jsonl"}, key=str.encode
    )
    sha256sum = require_tool("sha256sum")
    proc = subprocess.run(
        [sha256sum, "-c", "--strict", "SHA256SUMS.txt"],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": OK\n") == len(lines)

    report = verify_run(run_dir)
    assert report.ok, report.failed
    names = {c.name for c in report.checks}
    assert {"required-files", "hashes", "schemas-current", "outputs-hash", "signature"} <= names
    assert not any(p.name.startswith(".tmp-") for p in run_dir.parent.iterdir())


@pytest.mark.timeout(60)
def test_definitions_are_installed_lazily_and_operator_edits_are_kept(
    engines: RuntimeTree,
) -> None:
    config = engines.config_dir / "heat1d"
    assert not config.exists()
    result = heat1d_run(engines)
    assert {p.name for p in config.iterdir()} == {
        "ENGINE_MANIFEST.json",
        "INPUT_SCHEMA.json",
        "OUTPUT_SCHEMA.json",
        "COUPLING_RULES.json",
        "SEALING_SPEC.md",
        "ENGINE_GOVERNANCE.md",
        "PHYSICS_CAPABILITIES.md",
    }
    sealed_bytes = (Path(result.run_dir) / "INPUT_SCHEMA.json").read_bytes()
    assert sealed_bytes == canonical_bytes(json.loads((config / "INPUT_SCHEMA.json").read_bytes()))
    (config / "ENGINE_GOVERNANCE.md").write_text("# edited by the operator\n")
    second = heat1d_run(engines)
    assert (config / "ENGINE_GOVERNANCE.md").read_text() == "# edited by the operator\n"
    assert (Path(second.run_dir) / "ENGINE_GOVERNANCE.md").read_text() == (
        "# edited by the operator\n"
    )


@pytest.mark.timeout(60)
def test_definitions_naming_another_version_refuse_to_run(engines: RuntimeTree) -> None:
    heat1d_run(engines)
    manifest = engines.config_dir / "heat1d" / "ENGINE_MANIFEST.json"
    doc = json.loads(manifest.read_bytes())
    doc["engine_version"] = "9.9.9"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(RunError, match=r"engine_version is 9\.9\.9 but heat1d 1\.0\.0"):
        heat1d_run(engines)


@pytest.mark.timeout(60)
def test_heavier_artifacts_with_odd_names_are_sealed(engines: RuntimeTree) -> None:
    result = execute_and_seal(engines, "chaos", {"mode": "artifacts"})
    run_dir = Path(result.run_dir)
    assert "artifacts/sub dir/a b.txt" in files_of(run_dir)
    assert (run_dir / "artifacts" / "big.bin").stat().st_size == 1024 * 1024
    assert verify_run(run_dir).ok
    proc = subprocess.run(
        [require_tool("sha256sum"), "-c", "--strict", "--quiet", "SHA256SUMS.txt"],
        cwd=run_dir,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- replay -------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_replay_of_heat1d_and_heatstats_is_identical_and_never_touches_the_original(
    engines: RuntimeTree,
) -> None:
    up = heat1d_run(engines)
    down = execute_and_seal(engines, "heatstats", {"column": "final_exact"}, from_runs=[up.run_id])
    for result in (up, down):
        run_dir = Path(result.run_dir)
        before = tree_digest(run_dir)
        events = []
        report = replay_run(engines, run_dir, on_event=events.append)
        assert report.replayable, report.reason
        assert report.differences == [] and report.artifact_differences == []
        assert tree_digest(run_dir) == before
        assert [e.kind for e in events] == ["replay_started", "replayed"]
        record = Path(report.record or "")
        assert record.parent == engines.data_dir / result.engine / "replays"
        assert record.name == report.replay_id != result.run_id
        meta = json.loads((record / "RUN_META.json").read_bytes())
        assert meta["replay_of"] == result.run_id
        verdict = json.loads((record / "REPLAY.json").read_bytes())
        assert verdict["replayable"] is True
        assert verdict["replay_outputs_hash"] == verdict["original_outputs_hash"]
        assert (record / "RUN_OUTPUT.json").read_bytes() == (
            run_dir / "RUN_OUTPUT.json"
        ).read_bytes()
        proc = subprocess.run(
            [require_tool("sha256sum"), "-c", "--strict", "--quiet", "SHA256SUMS.txt"],
            cwd=record,
            capture_output=True,
            timeout=30,
        )
        assert proc.returncode == 0


@pytest.mark.timeout(60)
def test_nondeterministic_engine_replay_is_rejected_with_the_differing_paths(
    engines: RuntimeTree,
) -> None:
    result = execute_and_seal(engines, "chaos", {"mode": "random"})
    run_dir = Path(result.run_dir)
    assert verify_run(run_dir).ok
    before = tree_digest(run_dir)
    report = replay_run(engines, run_dir)
    assert not report.replayable
    assert report.verify.ok
    assert "$.outputs.value" in report.differences
    assert "$.metrics.token" in report.differences
    assert "$.outputs_hash" in report.differences
    assert "$.outputs.stable" not in report.differences
    assert report.artifact_differences == ["artifacts/noise.txt"]
    assert "$.outputs.value" in report.reason
    assert tree_digest(run_dir) == before
    verdict = json.loads((Path(report.record or "") / "REPLAY.json").read_bytes())
    assert verdict["replayable"] is False and "$.outputs.value" in verdict["differences"]


@pytest.mark.timeout(60)
def test_replay_names_the_missing_engine_version_and_how_to_get_it(
    engines: RuntimeTree, tmp_path: Path, catalogs: dict[str, str]
) -> None:
    result = heat1d_run(engines)
    other = RuntimeTree(tmp_path / "other")
    init_tree(other)
    install(other, catalogs, "chaos")
    with pytest.raises(RunError) as err:
        replay_run(other, result.run_dir)
    assert "heat1d 1.0.0 is not installed" in str(err.value)
    assert "runyard runtime ensure heat1d 1.0.0" in str(err.value)


@pytest.mark.timeout(60)
def test_replay_refuses_a_sealed_run_that_fails_verification(engines: RuntimeTree) -> None:
    result = heat1d_run(engines)
    run_dir = Path(result.run_dir)
    (run_dir / "artifacts" / "profile.csv").chmod(0o644)
    (run_dir / "artifacts" / "profile.csv").write_bytes(b"forged\n")
    report = replay_run(engines, run_dir)
    assert not report.replayable and report.record is None
    assert "hashes" in report.reason and "artifacts/profile.csv" in report.reason
    assert not (engines.data_dir / "heat1d" / "replays").exists() or not [
        p for p in (engines.data_dir / "heat1d" / "replays").iterdir() if p.name[0] != "."
    ]


# --- chains -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_heatstats_consumes_heat1d_artifacts_routed_by_the_runtime(engines: RuntimeTree) -> None:
    up = heat1d_run(engines)
    profile_sha = hashlib.sha256(SAMPLE_PROFILE).hexdigest()
    down = execute_and_seal(
        engines,
        "heatstats",
        {"column": "final_exact"},
        parameters={"decimals": 4},
        from_runs=[f"{up.run_id}:*.csv"],
    )
    run_dir = Path(down.run_dir)
    run_input = json.loads((run_dir / "RUN_INPUT.json").read_bytes())
    assert run_input["input_artifact_index"] == [
        {
            "engine_code": "HEAT1D",
            "path": "artifacts/profile.csv",
            "run_id": up.run_id,
            "sha256": profile_sha,
        }
    ]
    assert (run_dir / "inputs" / profile_sha).read_bytes() == SAMPLE_PROFILE
    index = json.loads((run_dir / "ARTIFACT_INDEX.json").read_bytes())
    roles = {e["path"]: e["role"] for e in index["files"]}
    assert roles[f"inputs/{profile_sha}"] == "input"
    assert roles["artifacts/summary.csv"] == "artifact"
    combined = json.loads((run_dir / "RUN_OUTPUT.json").read_bytes())["outputs"]["combined"]
    assert combined == {
        "count": 5,
        "max": "5",
        "mean": "12/5",
        "mean_decimal": "2.4000",
        "median": "7/2",
        "min": "0",
        "range": "5",
        "sum": "12",
        "variance": "207/50",
        "variance_decimal": "4.1400",
    }
    assert verify_run(run_dir).ok
    # The upstream run was only read.
    assert verify_run(up.run_dir).ok


@pytest.mark.timeout(60)
def test_engine_env_holds_no_runyard_variable_but_its_own_dirs(
    engines: RuntimeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_ROOT", str(engines.root))
    monkeypatch.setenv("RUNYARD_CONTROL", "ipc:///nowhere")
    result = execute_and_seal(engines, "chaos", {"mode": "env"})
    outputs = json.loads((Path(result.run_dir) / "RUN_OUTPUT.json").read_bytes())["outputs"]
    assert outputs["runyard_vars"] == ["RUNYARD_ARTIFACTS_DIR"]
    up = heat1d_run(engines)
    # CHAOS accepts only *.txt from HEAT1D: no artifact of the upstream fits, so no inputs.
    result = execute_and_seal(engines, "chaos", {"mode": "env"}, from_runs=[up.run_id])
    run_input = json.loads((Path(result.run_dir) / "RUN_INPUT.json").read_bytes())
    assert run_input["input_artifact_index"] == []
    cond = json.loads((Path(result.run_dir) / "RUN_CONDITIONS.json").read_bytes())
    assert "RUNYARD_ROOT" not in cond["env_names"]
    assert "RUNYARD_ARTIFACTS_DIR" in cond["env_names"]


# --- rejections ---------------------------------------------------------------------------------


CHAOS_REJECTIONS = [
    ("exit1", "engine exited with status 1; stderr: chaos: deliberate failure"),
    ("nan", "NaN is not JSON"),
    ("inf", "Infinity"),
    ("bigint", "9007199254740993 is outside"),
    ("array", "a JSON list, not an object"),
    ("two", "not exactly one JSON object"),
    ("extra", "exactly the members outputs and metrics (got debug, metrics, outputs)"),
    ("missing", "exactly the members outputs and metrics"),
    ("duplicate", "duplicate object key 'value'"),
    ("badutf8", "not UTF-8"),
    ("surrogate", "lone surrogate"),
    ("nothing", "stdout: empty"),
    ("schema", "OUTPUT_SCHEMA.json: $.outputs.value: 'not a number' is not of type 'number'"),
    ("symlink", "artifacts: link is a symlink"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "reason"), CHAOS_REJECTIONS, ids=[m for m, _ in CHAOS_REJECTIONS])
def test_misbehaving_engine_is_rejected_and_nothing_is_sealed(
    engines: RuntimeTree, mode: str, reason: str
) -> None:
    events = []
    with pytest.raises(RunRejected) as err:
        execute_and_seal(engines, "chaos", {"mode": mode}, on_event=events.append)
    rej = err.value
    assert reason in rej.reason
    assert run_dirs(engines, "chaos") == []
    assert [p.name for p in (engines.data_dir / "chaos" / "runs").iterdir()] == []
    record = Path(rej.record or "")
    assert record == engines.data_dir / "chaos" / "rejected" / rej.run_id
    doc = json.loads((record / "REJECTION.json").read_bytes())
    assert doc["reason"] == rej.reason and doc["run_id"] == rej.run_id
    assert not (record / "SHA256SUMS.txt").exists()
    assert (record / "RUN_INPUT.json").is_file()
    assert (record / "logs" / "engine.stdout").is_file()
    assert [e.kind for e in events] == ["started", "rejected"]
    assert rej.run_id in str(rej) and rej.reason in str(rej)


@pytest.mark.timeout(60)
def test_input_schema_failure_is_rejected_before_execution(engines: RuntimeTree) -> None:
    events = []
    with pytest.raises(RunRejected, match=r"INPUT_SCHEMA.json: \$.inputs.cells: 2 is less"):
        execute_and_seal(
            engines, "heat1d", {**SAMPLE["inputs"], "cells": 2}, on_event=events.append
        )
    assert [e.kind for e in events] == ["rejected"]
    assert run_dirs(engines, "heat1d") == []


@pytest.mark.timeout(60)
def test_inputs_that_cannot_be_canonicalized_are_rejected(engines: RuntimeTree) -> None:
    with pytest.raises(RunRejected, match=r"RUN_INPUT cannot be canonicalized: \$.inputs.x"):
        execute_and_seal(engines, "chaos", {"mode": "ok", "x": float("nan")})
    with pytest.raises(RunRejected, match=r"outside"):
        execute_and_seal(engines, "chaos", {"mode": "ok", "x": 2**60})
    assert run_dirs(engines, "chaos") == []


@pytest.mark.timeout(60)
def test_requires_input_artifacts_without_upstream_is_refused(engines: RuntimeTree) -> None:
    with pytest.raises(RunRejected, match="requires input artifacts") as err:
        execute_and_seal(engines, "heatstats", {"column": "final"})
    assert err.value.stage == "input"
    assert run_dirs(engines, "heatstats") == []
    assert Path(err.value.record or "").is_dir()


@pytest.mark.timeout(60)
def test_coupling_rules_refuse_other_engines_and_other_artifacts(engines: RuntimeTree) -> None:
    chaos = execute_and_seal(engines, "chaos", {"mode": "random"})
    with pytest.raises(RunRejected, match="does not accept runs of CHAOS"):
        execute_and_seal(engines, "heatstats", {}, from_runs=[chaos.run_id])
    up = heat1d_run(engines)
    with pytest.raises(RunRejected, match=r"does not accept artifacts/profile.csv from HEAT1D"):
        execute_and_seal(engines, "chaos", {"mode": "ok"}, from_runs=[(up.run_id, "profile.csv")])
    with pytest.raises(RunRejected, match=r"has no artifact matching 'nope\.csv'"):
        execute_and_seal(engines, "heatstats", {}, from_runs=[f"{up.run_id}:nope.csv"])
    with pytest.raises(RunError, match="no sealed run"):
        execute_and_seal(engines, "heatstats", {}, from_runs=["20990101T000000.000000Z-00000000"])
    assert run_dirs(engines, "heatstats") == []


@pytest.mark.timeout(60)
def test_a_tampered_upstream_is_refused(engines: RuntimeTree) -> None:
    up = Path(heat1d_run(engines).run_dir)
    (up / "artifacts" / "profile.csv").chmod(0o644)
    (up / "artifacts" / "profile.csv").write_bytes(b"cell,final_exact\n0,1000\n")
    with pytest.raises(RunRejected, match=r"fails verification: hashes: artifacts/profile.csv"):
        execute_and_seal(engines, "heatstats", {}, from_runs=[up.name])
    assert run_dirs(engines, "heatstats") == []


@pytest.mark.timeout(60)
def test_an_engine_that_modifies_its_inputs_is_rejected(
    engines: RuntimeTree, tmp_path: Path
) -> None:
    # A CHAOS variant accepting all HEAT1D artifacts, through an operator-edited rule.
    execute_and_seal(engines, "chaos", {"mode": "ok"})
    rules = engines.config_dir / "chaos" / "COUPLING_RULES.json"
    rules.write_text(json.dumps({"accepts": [{"engine_code": "HEAT1D"}]}))
    up = heat1d_run(engines)
    with pytest.raises(RunRejected, match=r"modified its input artifact|changed"):
        execute_and_seal(engines, "chaos", {"mode": "inputs"}, from_runs=[up.run_id])
    assert verify_run(up.run_dir).ok


# --- secrets ------------------------------------------------------------------------------------


def test_secret_looking_names() -> None:
    for name in (
        "api_token",
        "GITHUB_TOKEN",
        "apiKey",
        "db-password",
        "PASSWD",
        "clientSecret",
        "aws_secret_access_key",
        "X_AUTH",
        "credentials",
        "private_key",
        "accesskey",
    ):
        assert looks_secret(name), name
    for name in ("user", "host", "monkey", "author", "keyboard_layout", "steps", "passenger"):
        assert not looks_secret(name), name


def test_sanitize_context_is_recursive_and_catches_values() -> None:
    ctx = {
        "user": "ada",
        "nested": {"password": {"a": 1}, "list": [{"apiKey": "k"}, "plain"]},
        "url": "postgres://ada:hunter2@db/x",
        "header": "Bearer abcdefghijklmnop",
        "note": "value is s3cr3t-from-env",
    }
    clean = sanitize_context(ctx, ["s3cr3t-from-env"])
    assert clean == {
        "user": "ada",
        "nested": {"password": REDACTED, "list": [{"apiKey": REDACTED}, "plain"]},
        "url": REDACTED,
        "header": REDACTED,
        "note": REDACTED,
    }
    assert ctx["nested"]["password"] == {"a": 1}  # the input is not modified


@pytest.mark.timeout(60)
def test_a_secret_in_context_or_env_never_reaches_any_file_of_the_sealed_run(
    engines: RuntimeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_secret = "envsecret-7f3a9c1e"
    ctx_secret = "ctxsecret-19b2d4e8"
    monkeypatch.setenv("MY_API_TOKEN", env_secret)
    monkeypatch.setenv("DB_PASSWORD", "pw-" + env_secret)
    result = execute_and_seal(
        engines,
        "chaos",
        {"mode": "env"},
        context={
            "api_key": ctx_secret,
            "deploy": {"password": ctx_secret, "who": "ci"},
            "note": f"copied {env_secret} by mistake",
        },
    )
    run_dir = Path(result.run_dir)
    stderr_log = (run_dir / "logs" / "engine.stderr").read_text()
    assert "MY_API_TOKEN=[redacted]" in stderr_log  # the engine printed its env: scrubbed
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert env_secret.encode() not in data, path
            assert ctx_secret.encode() not in data, path
    run_input = json.loads((run_dir / "RUN_INPUT.json").read_bytes())
    assert run_input["context"] == {
        "api_key": REDACTED,
        "deploy": {"password": REDACTED, "who": "ci"},
        "note": REDACTED,
    }
    names = json.loads((run_dir / "RUN_CONDITIONS.json").read_bytes())["env_names"]
    assert "MY_API_TOKEN" in names  # names only
    assert verify_run(run_dir).ok


@pytest.mark.timeout(60)
def test_an_engine_that_outputs_a_secret_is_rejected_and_the_record_is_scrubbed(
    engines: RuntimeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "leaksecret-0c7e51aa"
    monkeypatch.setenv("LEAK_TOKEN", secret)
    with pytest.raises(RunRejected, match="secret-looking environment variable") as err:
        execute_and_seal(engines, "chaos", {"mode": "leak"})
    assert run_dirs(engines, "chaos") == []
    record = Path(err.value.record or "")
    stdout = (record / "logs" / "engine.stdout").read_bytes()
    assert b'"leaked": "[redacted]"' in stdout
    for path in record.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


# --- processes ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_timeout_kills_the_engine_and_rejects(engines: RuntimeTree, tmp_path: Path) -> None:
    pidfile = tmp_path / "engine.pid"
    with pytest.raises(RunRejected, match=r"timed out after 1 s") as err:
        execute_and_seal(engines, "chaos", {"mode": "sleep", "pidfile": str(pidfile)}, timeout=1.0)
    pid = int(pidfile.read_text())
    try:
        assert wait_gone(pid)
    finally:
        kill_if_alive(pid)
    assert err.value.stage == "engine"
    assert run_dirs(engines, "chaos") == []


@pytest.mark.timeout(60)
def test_processes_an_engine_leaves_behind_are_killed(engines: RuntimeTree, tmp_path: Path) -> None:
    childfile = tmp_path / "child.pid"
    execute_and_seal(engines, "chaos", {"mode": "child", "childfile": str(childfile)})
    pid = int(childfile.read_text())
    try:
        assert wait_gone(pid), "the engine's background child survived the run"
    finally:
        kill_if_alive(pid)


@pytest.mark.timeout(60)
def test_cancel_from_another_thread(engines: RuntimeTree, tmp_path: Path) -> None:
    pidfile = tmp_path / "engine.pid"
    cancel = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            execute_and_seal(
                engines,
                "chaos",
                {"mode": "sleep", "pidfile": str(pidfile)},
                cancel=cancel,
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    pid = int(wait_for_file(pidfile))
    cancel.set()
    thread.join(timeout=30)
    try:
        assert not thread.is_alive()
        assert isinstance(errors[0], RunRejected) and "cancelled" in errors[0].reason
        assert wait_gone(pid)
    finally:
        kill_if_alive(pid)


KILLER = """
import sys
from runyard.runtime.runs import execute_and_seal
from runyard.runtime.core.tree import RuntimeTree
execute_and_seal(RuntimeTree(sys.argv[1]), "chaos", {"mode": "sleep", "pidfile": sys.argv[2]})
"""


@pytest.mark.timeout(60)
def test_killing_the_runner_mid_run_leaves_no_partial_run_dir(
    engines: RuntimeTree, tmp_path: Path
) -> None:
    pidfile = tmp_path / "engine.pid"
    runner = subprocess.Popen(
        [sys.executable, "-c", KILLER, str(engines.root), str(pidfile)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    engine_pid = None
    try:
        engine_pid = int(wait_for_file(pidfile))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        runs = engines.data_dir / "chaos" / "runs"
        assert run_dirs(engines, "chaos") == []
        staging = [p for p in runs.iterdir() if p.name.startswith(".tmp-")]
        assert len(staging) == 1  # what the dead runner left, never renamed into place
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(timeout=10)
        if engine_pid is not None:
            kill_if_alive(engine_pid)
    # The next run sweeps the dead runner's staging dir and seals normally.
    result = execute_and_seal(engines, "chaos", {"mode": "ok"})
    assert [p.name for p in runs.iterdir()] == [result.run_id]


# --- signing ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_signed_run_verifies_with_cryptography_and_openssl(
    engines: RuntimeTree, signing_key: SigningKeyFiles, tmp_path: Path
) -> None:
    result = heat1d_run(engines, sign_key=signing_key.private)
    run_dir = Path(result.run_dir)
    assert result.signed_by == signing_key.fingerprint
    meta = json.loads((run_dir / "RUN_META.json").read_bytes())
    assert meta["signing_key_fingerprint"] == signing_key.fingerprint
    assert len((run_dir / "SHA256SUMS.txt.sig").read_bytes()) == 64
    assert "SHA256SUMS.txt.sig" not in (run_dir / "SHA256SUMS.txt").read_text()
    report = verify_run(run_dir, signing_key.public)
    assert report.ok, report.failed
    assert "valid Ed25519 signature" in next(
        c.detail for c in report.checks if c.name == "signature"
    )

    openssl = require_tool("openssl")
    proc = subprocess.run(
        [
            openssl,
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(signing_key.public),
            "-rawin",
            "-in",
            "SHA256SUMS.txt",
            "-sigfile",
            "SHA256SUMS.txt.sig",
        ],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Signature Verified Successfully" in proc.stdout

    other = generate_signing_key(tmp_path / "other")
    report = verify_run(run_dir, other.public)
    # RUN_ATTESTATION.intoto.jsonl is signed by the same key: it fails with it.
    assert report.failed_names() == {"signature", "attestation-signature"}
    unsigned = heat1d_run(engines)
    failed = verify_run(unsigned.run_dir, signing_key.public).failed_names()
    assert failed == {"signature", "attestation-signature"}


# --- concurrency, listing -----------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_concurrent_runs_in_threads_each_seal_their_own_run_dir(engines: RuntimeTree) -> None:
    heat1d_run(engines)  # definitions installed once, before the race
    results: list = []
    errors: list = []

    def work(i: int) -> None:
        try:
            results.append(execute_and_seal(engines, "heat1d", {**SAMPLE["inputs"], "steps": i}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len({r.run_id for r in results}) == 6
    for r in results:
        assert verify_run(r.run_dir).ok


@pytest.mark.timeout(60)
def test_list_and_show_runs(engines: RuntimeTree) -> None:
    first = heat1d_run(engines, project_id="alpha")
    with pytest.raises(RunRejected):
        execute_and_seal(engines, "chaos", {"mode": "exit1"})
    second = execute_and_seal(engines, "chaos", {"mode": "ok"})
    runs = list_runs(engines)
    assert [r.run_id for r in runs] == [first.run_id, second.run_id]
    assert runs[0].project_id == "alpha" and runs[0].status == "sealed"
    assert [r.status for r in list_runs(engines, include_rejected=True)] == [
        "sealed",
        "rejected",
        "sealed",
    ]
    assert [r.run_id for r in list_runs(engines, "chaos")] == [second.run_id]
    shown = show_run(engines, first.run_id)
    assert shown["run_output"]["outputs"] == SAMPLE_OUTPUTS
    assert pid_alive(os.getpid())


def test_staging_dir_is_never_swept_while_its_builder_lives(tmp_path: Path) -> None:
    """Regression: a sweeper took a new staging dir's lock between the builder's open and flock
    and removed the dir under it (FileNotFoundError in concurrent runs)."""
    from runyard.runtime.runs.layout import Staging, sweep_stale

    parent = tmp_path / "runs"
    with Staging(parent, "live") as staging:
        assert staging.root.name == ".tmp-live"
        assert not list(parent.glob(".new-*"))  # locked first, then made visible
        assert sweep_stale(parent) == []
        assert staging.work.is_dir()
    fresh = parent / ".new-fresh"
    old = parent / ".new-old"
    fresh.mkdir()
    old.mkdir()
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert sweep_stale(parent) == [old]  # a killed builder's leftover goes by age only
    assert fresh.is_dir()
