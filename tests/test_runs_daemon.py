"""Runs through the daemon: `run` executes and seals in the daemon, `run.<id>` events tell the
steps, `runs.list` / `runs.show` / `verify` / `replay` answer for the TUI and scripts, and
`runyard run` goes through the daemon when one answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import Daemon, short_root
from test_runs_kit import SAMPLE, SAMPLE_OUTPUTS, build_catalogs, install

from runyard.protocol.client import NotFound
from runyard.protocol.messages import RunEvent
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return build_catalogs(tmp_path_factory)


@pytest.fixture
def daemon(catalogs):
    root = short_root()
    tree = RuntimeTree(root)
    init_tree(tree)
    install(tree, catalogs, "heat1d", "heatstats")
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n')
    d = Daemon(tree).start()
    yield d
    d.stop()
    shutil.rmtree(root.parent, ignore_errors=True)


def test_run_in_the_daemon_with_events_then_chain_list_show_verify_replay(daemon) -> None:
    with daemon.client(timeout=30) as c, c.events(["run."]) as events:
        reply = c.run("heat1d", SAMPLE["inputs"], parameters=SAMPLE["parameters"])
        assert reply.status == "sealed", reply.result
        run_id = reply.result.run_id
        run_dir = reply.result.run_dir
        assert run_dir.startswith(str(daemon.tree.data_dir / "heat1d" / "runs"))
        kinds = []
        while "sealed" not in kinds:
            event = events.get(timeout=10)
            assert event is not None, f"no sealed event (saw {kinds})"
            if isinstance(event, RunEvent) and event.run_id == run_id:
                kinds.append(event.kind)
        assert kinds[0] == "started"
        output = json.loads((Path(run_dir) / "RUN_OUTPUT.json").read_bytes())
        assert output["outputs"] == SAMPLE_OUTPUTS

        down = c.run("heatstats", {"column": "final"}, from_runs=[run_id])
        assert down.status == "sealed", down.result
        listed = [r.run_id for r in c.runs_list().runs]
        assert {run_id, down.result.run_id} <= set(listed)
        shown = c.runs_show(run_id).run
        assert shown.run_input["run_id"] == run_id and shown.summary.status == "sealed"
        assert shown.run_output["outputs"] == SAMPLE_OUTPUTS
        with pytest.raises(NotFound):
            c.runs_show("20200101T000000.000000Z-00000000")

        report = c.verify(run_id).report
        assert report.ok is True and report.checks
        replay = c.replay(run_dir).report
        assert replay.replayable is True and replay.verify.ok


def test_rejected_run_is_a_reply_with_the_reason(daemon) -> None:
    with daemon.client(timeout=30) as c:
        reply = c.run("heatstats", {"column": "final"})  # requires input artifacts
        assert reply.status == "rejected"
        assert "input" in reply.result.reason
        assert not list((daemon.tree.data_dir / "heatstats" / "runs").glob("2*"))


def test_cli_run_goes_through_the_daemon(daemon, tmp_path) -> None:
    request = tmp_path / "in.json"
    request.write_text(json.dumps(SAMPLE))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runyard.daemon",
            "run",
            "heat1d",
            "--input",
            str(request),
            "--json",
            "--root",
            str(daemon.tree.root),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "running in this process" not in out.stderr
    sealed = json.loads(out.stdout)
    assert sealed["status"] == "sealed"
    meta = json.loads((Path(sealed["run_dir"]) / "RUN_META.json").read_bytes())
    assert meta["pid"] == daemon.proc.pid  # sealed by the daemon, not by the CLI process
