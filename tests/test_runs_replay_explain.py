"""Replays that explain: a mismatch shows both values and the differing files with their sizes;
``runyard replay RUN --times N`` says whether an engine is deterministic on a sealed input.

Real engines, installed for real (test_runs_kit): heat1d is deterministic, chaos in mode
``random`` is not (a random outputs.value, metrics.token and artifacts/noise.txt).
"""

from __future__ import annotations

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

from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.runs import check_determinism, execute_and_seal, replay_run
from runyard.runtime.runs.explain import show_value
from runyard.runtime.runs.jsonio import ABSENT, diff_values


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


def outputs_of(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "RUN_OUTPUT.json").read_bytes())


def test_values_are_shown_as_compact_json_and_truncated() -> None:
    assert show_value({"b": 1, "a": [1.5, "x"]}) == '{"a":[1.5,"x"],"b":1}'
    assert show_value(ABSENT) == "(absent)"
    long = show_value(list(range(10_000)))
    assert len(long) == 60 and long.startswith("[0,1,2,") and long.endswith("...")
    assert show_value("é" * 100, width=10) == '"éééééé...'
    diffs = diff_values({"a": [1, 2], "b": {"c": "x"}}, {"a": [1], "b": {"c": "y", "d": None}})
    assert diffs == [("$.a[1]", 2, ABSENT), ("$.b.c", "x", "y"), ("$.b.d", ABSENT, None)]


@pytest.mark.timeout(60)
def test_replay_mismatch_shows_the_original_and_the_replayed_value_and_file_sizes(
    engines: RuntimeTree,
) -> None:
    """Finding: a mismatch named the differing paths but not the values side by side."""
    up = execute_and_seal(engines, "chaos", {"mode": "random"})
    original = outputs_of(up.run_dir)
    report = replay_run(engines, up.run_dir)
    assert not report.replayable
    shown = {d.path: d for d in report.value_differences}
    assert [d.path for d in report.value_differences] == report.differences
    value = shown["$.outputs.value"]
    assert value.original == json.dumps(original["outputs"]["value"])
    assert value.replayed == json.dumps(outputs_of(report.record or "")["outputs"]["value"])
    assert value.original != value.replayed
    assert shown["$.metrics.token"].original == json.dumps(original["metrics"]["token"])
    assert "$.outputs.stable" not in shown
    (noise,) = report.file_differences
    assert noise.path == "artifacts/noise.txt" and report.artifact_differences == [noise.path]
    assert noise.original_size == (Path(up.run_dir) / noise.path).stat().st_size
    assert noise.replayed_size == (Path(report.record or "") / noise.path).stat().st_size
    assert noise.original_sha256 != noise.replayed_sha256
    record = json.loads((Path(report.record or "") / "REPLAY.json").read_bytes())
    assert record["value_differences"][0] == {
        "original": report.value_differences[0].original,
        "path": report.value_differences[0].path,
        "replayed": report.value_differences[0].replayed,
    }
    assert record["file_differences"][0]["path"] == "artifacts/noise.txt"


@pytest.mark.timeout(120)
def test_replay_times_5_on_a_deterministic_and_a_nondeterministic_engine(
    engines: RuntimeTree, tmp_path: Path
) -> None:
    steady = execute_and_seal(engines, "heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
    shaky = execute_and_seal(engines, "chaos", {"mode": "random"})
    root = ["--root", str(engines.root)]

    out = cli("replay", steady.run_id, "--times", "5", *root, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines[:5]] == [f"replay {i}/5" for i in range(1, 6)]
    assert all(": identical: " in ln for ln in lines[:5])
    assert lines[5].startswith(f"deterministic: {steady.run_id} (heat1d 1.0.0): ")
    assert "byte-identical RUN_OUTPUT.json and 1 artifact(s)" in lines[5]

    out = cli("replay", shaky.run_id, "--times", "5", *root, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.startswith(f"NOT deterministic: {shaky.run_id} (chaos 1.0.0): ")
    assert "0 of 5 re-execution(s) byte-identical to the sealed run, 6 distinct results" in (
        out.stderr
    )
    err = out.stderr.splitlines()
    at = err.index("  differs: $.outputs.value")
    assert err[at + 1].startswith("    original: ") and err[at + 2].startswith("    replayed: ")
    assert any(ln.startswith("  file differs: artifacts/noise.txt (original ") for ln in err)
    assert out.stdout.count("DIFFERS") == 5

    out = cli("replay", shaky.run_id, "--times", "5", "--json", *root, cwd=tmp_path)
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert doc["deterministic"] is False and doc["identical"] == 0 and doc["variants"] == 6
    assert [a["variant"] for a in doc["attempts"]] == [1, 2, 3, 4, 5]
    assert {d["path"] for d in doc["value_differences"]} >= {"$.outputs.value", "$.metrics.token"}
    records = [Path(a["record"]) for a in doc["attempts"]]
    assert len(set(records)) == 5 and all((r / "REPLAY.json").is_file() for r in records)

    # The library gives the same verdict for the steady engine.
    checked = check_determinism(engines, steady.run_dir, 2)
    assert checked.deterministic and checked.identical == 2 and checked.variants == 1


@pytest.mark.timeout(60)
def test_replay_mismatch_and_bad_times_on_the_command_line(
    engines: RuntimeTree, tmp_path: Path
) -> None:
    shaky = execute_and_seal(engines, "chaos", {"mode": "random"})
    root = ["--root", str(engines.root)]
    out = cli("replay", shaky.run_id, *root, cwd=tmp_path)
    assert out.returncode == 1
    err = out.stderr.splitlines()
    at = err.index("  differs: $.outputs.value")
    original = outputs_of(shaky.run_dir)["outputs"]["value"]
    assert err[at + 1] == f"    original: {json.dumps(original)}"
    assert err[at + 2].startswith("    replayed: ")
    assert any(ln.startswith("  file differs: artifacts/noise.txt (original ") for ln in err)
    out = cli("replay", shaky.run_id, "--json", *root, cwd=tmp_path)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["value_differences"][0]["path"] in doc["differences"]
    assert doc["file_differences"][0]["path"] == "artifacts/noise.txt"
    for bad in ("0", "101"):
        out = cli("replay", shaky.run_id, "--times", bad, *root, cwd=tmp_path)
        assert out.returncode == 2
        assert out.stderr.strip() == f"runyard: --times must be from 1 to 100, got {bad}"
