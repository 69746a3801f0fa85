"""Chains through outputs: an upstream run's RUN_OUTPUT.json routed with role ``output``.

A test-only engine ``rgsr`` (RGSR 1.0.0, requires_input_artifacts) reads only the upstream
RUN_OUTPUT.json files its RUN_INPUT lists and refuses anything else; it is packed here into its
own archive and catalog and installed for real beside heat1d, heatstats and chaos.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_runs_kit import (
    ALL_ENGINES,
    SAMPLE,
    build_catalogs,
    cli,
    install,
    isolate_user_config,
)

from archives import archive_record, make_tar, write_catalog
from runyard.runtime.acquisition.ensure import ensure_service
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs import execute_and_seal, replay_run, verify_run
from runyard.runtime.runs.model import RunRejected

RGSR = r'''#!/usr/bin/env python3
"""rgsr: a test-only engine that reads only upstream RUN_OUTPUT.json files."""
import hashlib, json, os, sys

doc = json.loads(sys.stdin.buffer.read())
folder = os.environ.get("RUNYARD_INPUTS_DIR", "")
upstream = []
for entry in doc.get("input_artifact_index", []):
    if entry["path"] != "RUN_OUTPUT.json":
        sys.stderr.write(f"rgsr: reads only RUN_OUTPUT.json, got {entry['path']}\n")
        sys.exit(1)
    data = open(os.path.join(folder, entry["sha256"]), "rb").read()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        sys.stderr.write("rgsr: digest mismatch\n")
        sys.exit(1)
    out = json.loads(data)
    temps = out["outputs"].get("temperatures_decimal") or []
    upstream.append({
        "engine_code": entry["engine_code"],
        "outputs_hash": out["outputs_hash"],
        "peak": max(temps, key=float) if temps else None,
        "run_id": out["run_id"],
    })
sys.stdout.write(json.dumps({"outputs": {"upstream": upstream}, "metrics": {}}))
'''

RGSR_DEFINITIONS = {
    "ENGINE_MANIFEST.json": {
        "engine_code": "RGSR",
        "engine_version": "1.0.0",
        "description": "test-only engine: summarizes upstream RUN_OUTPUT.json files",
        "requires_input_artifacts": True,
    },
    "INPUT_SCHEMA.json": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["run_id", "engine_code", "input_artifact_index"],
        "properties": {
            "engine_code": {"const": "RGSR"},
            "input_artifact_index": {
                "type": "array",
                "items": {"properties": {"path": {"const": "RUN_OUTPUT.json"}}},
            },
        },
    },
    "OUTPUT_SCHEMA.json": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["outputs", "outputs_hash"],
    },
    "COUPLING_RULES.json": {
        "accepts": [
            {"engine_code": "CHAOS"},
            {"engine_code": "HEAT1D", "artifacts": ["RUN_OUTPUT.json"]},
        ]
    },
}


@pytest.fixture(scope="session")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    found = build_catalogs(tmp_path_factory)
    dist = tmp_path_factory.mktemp("rgsr")
    files = {"bin/rgsr": RGSR.encode()}
    for name, doc in RGSR_DEFINITIONS.items():
        files[f"definitions/{name}"] = json.dumps(doc, indent=2).encode()
    for name in ("SEALING_SPEC.md", "ENGINE_GOVERNANCE.md", "PHYSICS_CAPABILITIES.md"):
        files[f"definitions/{name}"] = f"# {name} of the test engine RGSR\n".encode()
    archive = make_tar(dist / "rgsr-1.0.0.tar.gz", files)
    record = archive_record(archive, "rgsr", "1.0.0", kind="engine")
    found["rgsr"] = str(write_catalog(dist / "rgsr-catalog.json", [record]))
    return found


@pytest.fixture
def engines(tree: RuntimeTree, catalogs: dict[str, str]) -> RuntimeTree:
    install(tree, catalogs, *ALL_ENGINES)
    ensure_service("rgsr", root=tree.root, catalog=catalogs["rgsr"], progress=False)
    return tree


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_user_config(tmp_path, monkeypatch)


def output_entry(run_dir: str | Path, engine_code: str) -> dict[str, str]:
    run_dir = Path(run_dir)
    data = (run_dir / "RUN_OUTPUT.json").read_bytes()
    return {
        "engine_code": engine_code,
        "path": "RUN_OUTPUT.json",
        "run_id": run_dir.name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.timeout(60)
def test_rgsr_requires_input_artifacts_but_input_artifact_index_would_be_empty(
    engines: RuntimeTree,
) -> None:
    """The finding: a run that writes only JSON outputs could not feed a downstream engine."""
    up = execute_and_seal(engines, "chaos", {"mode": "ok", "echo": "hi"})
    assert not (Path(up.run_dir) / "artifacts").exists() or not any(
        (Path(up.run_dir) / "artifacts").iterdir()
    )
    down = execute_and_seal(engines, "rgsr", {}, from_runs=[up.run_id])
    run_dir = Path(down.run_dir)
    entry = output_entry(up.run_dir, "CHAOS")
    assert json.loads((run_dir / "RUN_INPUT.json").read_bytes())["input_artifact_index"] == [entry]
    upstream_bytes = (Path(up.run_dir) / "RUN_OUTPUT.json").read_bytes()
    assert (run_dir / "inputs" / entry["sha256"]).read_bytes() == upstream_bytes
    roles = {
        e["path"]: e["role"]
        for e in json.loads((run_dir / "ARTIFACT_INDEX.json").read_bytes())["files"]
    }
    assert roles[f"inputs/{entry['sha256']}"] == "input"
    outputs = json.loads((run_dir / "RUN_OUTPUT.json").read_bytes())["outputs"]
    assert outputs["upstream"] == [
        {"engine_code": "CHAOS", "outputs_hash": up.outputs_hash, "peak": None, "run_id": up.run_id}
    ]
    assert verify_run(run_dir).ok and verify_run(up.run_dir).ok


@pytest.mark.timeout(90)
def test_chain_heat1d_to_an_engine_that_reads_only_its_run_output(
    engines: RuntimeTree, tmp_path: Path
) -> None:
    up = execute_and_seal(engines, "heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
    # RGSR's rule names RUN_OUTPUT.json exactly: heat1d's profile.csv is not taken.
    down = execute_and_seal(engines, "rgsr", {}, from_runs=[up.run_id])
    run_input = json.loads((Path(down.run_dir) / "RUN_INPUT.json").read_bytes())
    assert run_input["input_artifact_index"] == [output_entry(up.run_dir, "HEAT1D")]
    outputs = json.loads((Path(down.run_dir) / "RUN_OUTPUT.json").read_bytes())["outputs"]
    assert outputs["upstream"][0]["peak"] == "5.000"
    assert outputs["upstream"][0]["outputs_hash"] == up.outputs_hash
    assert verify_run(up.run_dir).ok and verify_run(down.run_dir).ok
    assert replay_run(engines, down.run_dir).replayable

    # The same chain through the command line, selecting the output by name.
    (tmp_path / "in.json").write_text('{"inputs": {}}')
    args = ["--root", str(engines.root), "--local", "--json"]
    proc = cli(
        "run", "rgsr", "--input", "in.json", "--from-run", f"{up.run_id}:RUN_OUTPUT.json", *args,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cli_run = Path(json.loads(proc.stdout)["run_dir"])
    index = json.loads((cli_run / "RUN_INPUT.json").read_bytes())["input_artifact_index"]
    assert index == [output_entry(up.run_dir, "HEAT1D")]
    proc = cli("verify", str(cli_run), "--root", str(engines.root), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(60)
def test_coupling_rules_accept_or_refuse_the_upstream_output(engines: RuntimeTree) -> None:
    up = execute_and_seal(engines, "heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
    # HEATSTATS accepts only *.csv from HEAT1D: the output is refused by name...
    with pytest.raises(RunRejected) as err:
        execute_and_seal(engines, "heatstats", {}, from_runs=[f"{up.run_id}:RUN_OUTPUT.json"])
    assert err.value.stage == "chain"
    assert "does not accept RUN_OUTPUT.json from HEAT1D (accepted: *.csv)" in err.value.reason
    # ...and never taken by default, where the csv still is.
    down = execute_and_seal(engines, "heatstats", {"column": "final"}, from_runs=[up.run_id])
    index = json.loads((Path(down.run_dir) / "RUN_INPUT.json").read_bytes())
    assert [e["path"] for e in index["input_artifact_index"]] == ["artifacts/profile.csv"]
    # RGSR accepts only the output of HEAT1D: selecting the csv is refused.
    with pytest.raises(RunRejected, match=r"does not accept artifacts/profile\.csv from HEAT1D"):
        execute_and_seal(engines, "rgsr", {}, from_runs=[f"{up.run_id}:*.csv"])
    # A selection that matches nothing names what the run offers.
    with pytest.raises(RunRejected, match=r"routable: artifacts/profile\.csv, RUN_OUTPUT\.json"):
        execute_and_seal(engines, "rgsr", {}, from_runs=[f"{up.run_id}:nope.json"])
