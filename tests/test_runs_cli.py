"""``runyard run | verify | replay | runs`` as real subprocesses, on a real tree."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool
from test_runs_kit import (
    ALL_ENGINES,
    EXAMPLES,
    REPO,
    build_catalogs,
    clean_cli_env,
    cli,
    install,
    kill_if_alive,
    run_dirs,
    wait_for_file,
    wait_gone,
)

from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

SAMPLE_FILE = EXAMPLES / "engines" / "heat1d" / "sample-input.json"


@pytest.fixture(scope="session")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_catalogs(tmp_path_factory)


@pytest.fixture
def work(tmp_path: Path, catalogs: dict[str, str]) -> Path:
    """A working dir whose ./runtime tree has every engine installed."""
    tree = RuntimeTree(tmp_path / "runtime")
    init_tree(tree)
    install(tree, catalogs, *ALL_ENGINES)
    return tmp_path


def write_input(work: Path, doc: dict, name: str = "input.json") -> str:
    (work / name).write_text(json.dumps(doc))
    return name


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("runyard: ")
    return lines[0]


@pytest.mark.timeout(120)
def test_run_verify_replay_and_list(work: Path) -> None:
    out = cli(
        "run", "heat1d", "--input", str(SAMPLE_FILE), "--context", "who=ada",
        "--project-id", "demo", "--json", cwd=work,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    sealed = json.loads(out.stdout)
    assert sealed["status"] == "sealed" and sealed["engine_code"] == "HEAT1D"
    run_dir = Path(sealed["run_dir"])
    assert run_dir.parent == work / "runtime" / "data" / "heat1d" / "runs"
    assert sealed["bundle"] == sealed["run_dir"]  # the deprecated alias older scripts read
    run_input = json.loads((run_dir / "RUN_INPUT.json").read_bytes())
    assert run_input["project_id"] == "demo" and run_input["context"] == {"who": "ada"}
    assert run_input["parameters"] == {"boundary": "fixed", "decimals": 3}

    out = cli("run", "heat1d", "--input", str(SAMPLE_FILE), "--param", "decimals=5", cwd=work)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("sealed heat1d run ")
    second = out.stdout.split()[3]
    doc = json.loads((run_dirs_of(work, "heat1d")[-1] / "RUN_INPUT.json").read_bytes())
    assert doc["parameters"]["decimals"] == 5 and doc["run_id"] == second

    out = cli("verify", str(run_dir), cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["OK", "required-files"]
    assert any(ln.split()[:2] == ["OK", "schemas-current"] for ln in lines)
    assert any(ln.split()[:2] == ["SKIPPED", "signature"] for ln in lines)
    assert lines[-1] == f"sealed run OK: {run_dir}"
    out = cli("verify", sealed["run_id"], "--json", cwd=work)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"] is True
    assert (
        Path(report["run_dir"]).name == sealed["run_id"] and report["bundle"] == report["run_dir"]
    )

    out = cli("replay", str(run_dir), cwd=work)
    assert out.returncode == 0, out.stderr
    assert "replayable: " in out.stdout and "identical canonical RUN_OUTPUT.json" in out.stdout
    out = cli("replay", sealed["run_id"], "--json", cwd=work)
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["replayable"] is True
    assert (
        Path(report["run_dir"]).name == sealed["run_id"] and report["bundle"] == report["run_dir"]
    )
    assert report["verify"]["bundle"] == report["verify"]["run_dir"] == report["run_dir"]

    out = cli("runs", cwd=work)
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].split()[:3] == ["RUN_ID", "ENGINE", "VERSION"]
    assert sealed["run_id"] in out.stdout and second in out.stdout
    out = cli("runs", "--engine", "heat1d", "--json", cwd=work)
    listed = json.loads(out.stdout)
    assert [r["run_id"] for r in listed] == [sealed["run_id"], second]
    assert cli("runs", "--engine", "heatstats", cwd=work).stdout.strip() == "no runs of heatstats"

    proc = subprocess.run(
        [require_tool("sha256sum"), "-c", "--strict", "SHA256SUMS.txt"],
        cwd=run_dir,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0


def run_dirs_of(work: Path, engine: str) -> list[Path]:
    return run_dirs(RuntimeTree(work / "runtime"), engine)


@pytest.mark.timeout(120)
def test_signed_chain_verifies_with_pubkey_and_openssl(work: Path) -> None:
    assert cli("keys", "gen", "--out", "keys/signer", cwd=work).returncode == 0
    assert cli("keys", "gen", "--out", "keys/other", cwd=work).returncode == 0
    out = cli(
        "run", "heat1d", "--input", str(SAMPLE_FILE), "--sign", "keys/signer.key", "--json",
        cwd=work,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    up = json.loads(out.stdout)
    assert up["signed_by"]
    stats_input = write_input(work, {"inputs": {"column": "final"}, "parameters": {}})
    out = cli(
        "run", "heatstats", "--input", stats_input, "--from-run", f"{up['run_id']}:profile.csv",
        "--sign", "keys/signer.key", "--json", cwd=work,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    down = Path(json.loads(out.stdout)["run_dir"])
    index = json.loads((down / "RUN_INPUT.json").read_bytes())["input_artifact_index"]
    assert index[0]["run_id"] == up["run_id"] and index[0]["path"] == "artifacts/profile.csv"

    out = cli("verify", str(down), "--pubkey", "keys/signer.pub", cwd=work)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(ln.split()[:2] == ["OK", "signature"] for ln in out.stdout.splitlines())
    out = cli("verify", str(down), "--pubkey", "keys/other.pub", cwd=work)
    assert out.returncode == 1
    assert any(ln.split()[:2] == ["FAILED", "signature"] for ln in out.stdout.splitlines())
    # signature and attestation-signature: the attestation is signed by the same key
    assert "sealed run INVALID: 2 check(s) failed" in out.stderr

    proc = subprocess.run(
        [
            require_tool("openssl"), "pkeyutl", "-verify", "-pubin",
            "-inkey", str(work / "keys" / "signer.pub"), "-rawin",
            "-in", "SHA256SUMS.txt", "-sigfile", "SHA256SUMS.txt.sig",
        ],
        cwd=down, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
def test_rejections_exit_1_with_the_reason_and_seal_nothing(work: Path) -> None:
    nan = write_input(work, {"mode": "nan"}, "nan.json")
    out = cli("run", "chaos", "--input", nan, cwd=work)
    assert out.returncode == 1
    line = one_line_error(out)
    assert "rejected: stdout: not exactly one JSON object: NaN is not JSON" in line
    assert "(record: " in line
    out = cli("run", "chaos", "--input", nan, "--json", cwd=work)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["status"] == "rejected" and doc["stage"] == "output"
    assert Path(doc["record"], "REJECTION.json").is_file()

    out = cli("run", "heatstats", "--input", write_input(work, {"column": "final"}), cwd=work)
    assert out.returncode == 1
    assert "requires input artifacts" in one_line_error(out)
    out = cli("run", "heat1d", "--input", str(SAMPLE_FILE), "--param", "cells=2", cwd=work)
    assert out.returncode == 1
    assert "INPUT_SCHEMA.json: $.parameters.cells: 2 is less than the minimum of 3" in out.stderr
    assert run_dirs_of(work, "chaos") == run_dirs_of(work, "heatstats") == []
    assert run_dirs_of(work, "heat1d") == []

    out = cli("run", "heat1d", "--input", str(SAMPLE_FILE), "--param", "novalue", cwd=work)
    assert out.returncode == 2 and "expected KEY=VALUE" in one_line_error(out)
    (work / "bad.json").write_text("{not json")
    out = cli("run", "heat1d", "--input", "bad.json", cwd=work)
    assert out.returncode == 2 and "not JSON" in one_line_error(out)
    out = cli("run", "nosuch", "--input", str(SAMPLE_FILE), cwd=work)
    assert out.returncode == 1 and "'nosuch' is not installed" in one_line_error(out)
    out = cli("verify", "no/such/dir", cwd=work)
    assert out.returncode == 1  # not found (issue 15: anything not found is 1)


@pytest.mark.timeout(120)
def test_verify_names_the_tampered_file_and_replay_the_differing_paths(work: Path) -> None:
    out = cli("run", "heat1d", "--input", str(SAMPLE_FILE), "--json", cwd=work)
    run_dir = Path(json.loads(out.stdout)["run_dir"])
    profile = run_dir / "artifacts" / "profile.csv"
    profile.chmod(0o644)
    profile.write_bytes(profile.read_bytes().replace(b"3.500", b"3.501", 1))
    out = cli("verify", str(run_dir), cwd=work)
    assert out.returncode == 1
    failed = [ln for ln in out.stdout.splitlines() if ln.startswith("FAILED")]
    assert any(
        ln.split()[1] == "hashes" and "artifacts/profile.csv: expected" in ln and ", got " in ln
        for ln in failed
    ), failed
    out = cli("replay", str(run_dir), cwd=work)
    assert out.returncode == 1 and "NOT replayable" in out.stderr

    out = cli("run", "chaos", "--input", write_input(work, {"mode": "random"}), "--json", cwd=work)
    assert out.returncode == 0, out.stderr
    random_run_dir = json.loads(out.stdout)["run_dir"]
    out = cli("replay", random_run_dir, cwd=work)
    assert out.returncode == 1
    assert "NOT replayable" in out.stderr
    assert "  differs: $.outputs.value" in out.stderr.splitlines()
    assert "replay record: " in out.stdout


@pytest.mark.timeout(120)
def test_secrets_from_context_and_env_never_reach_the_sealed_run(work: Path) -> None:
    env_secret = "envsecret-cli-5d1c0a77"
    ctx_secret = "ctxsecret-cli-8e4b2f19"
    env = clean_cli_env(work, GITHUB_TOKEN=env_secret)
    out = cli(
        "run", "chaos", "--input", write_input(work, {"mode": "env"}),
        "--context", f"password={ctx_secret}", "--context", f"note=see {env_secret}",
        "--context", "who=ada", "--json", cwd=work, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert env_secret not in out.stdout and ctx_secret not in out.stdout
    run_dir = Path(json.loads(out.stdout)["run_dir"])
    seen = 0
    for path in run_dir.rglob("*"):
        if path.is_file():
            seen += 1
            data = path.read_bytes()
            if path.name.endswith(".intoto.jsonl"):  # its statement is base64 in the envelope
                data = base64.b64decode(json.loads(data)["payload"])
            assert env_secret.encode() not in data, path
            assert ctx_secret.encode() not in data, path
    assert seen == 15  # 13 required files + logs/engine.stderr + RUN_ATTESTATION.intoto.jsonl
    context = json.loads((run_dir / "RUN_INPUT.json").read_bytes())["context"]
    assert context == {"note": "[redacted]", "password": "[redacted]", "who": "ada"}


KILL_INPUT = {"mode": "sleep", "seconds": 60}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "interrupt"])
def test_stopping_the_cli_mid_run_leaves_no_partial_run_dir(
    work: Path, sig: signal.Signals
) -> None:
    pidfile = work / "engine.pid"
    name = write_input(work, {**KILL_INPUT, "pidfile": str(pidfile)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", "run", "chaos", "--input", name],
        cwd=work,
        env={**clean_cli_env(work), "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engine_pid = None
    try:
        engine_pid = int(wait_for_file(pidfile))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        runs = work / "runtime" / "data" / "chaos" / "runs"
        assert run_dirs_of(work, "chaos") == []
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and "interrupted" in err
            assert wait_gone(engine_pid), "the engine outlived an interrupted CLI"
            assert list(runs.iterdir()) == []  # staging removed on the way out
        else:
            assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
        if engine_pid is not None:
            kill_if_alive(engine_pid)
