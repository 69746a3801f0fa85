"""The cold phase's no-cgroup variant of the daemon bench (scripts/bench_daemon_nocg.py): the
configuration it writes, the check that fails a launch whose setting did not apply, how its
figures become Runyard's informational rows, and real cold launches of a few sleepers whose
containment is read back from the daemon and /proc. Nothing here is timed."""

from __future__ import annotations

import contextlib
import sys
import tomllib
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_daemon as bd
import bench_daemon_nocg as nocg
import bench_daemon_start as bs

pytestmark = pytest.mark.timeout(120)


def cold_phase(base: Path, n: int) -> bd.Phase:
    bins = bd.build_tree(base / "cold" / "rt", {f"s{i}": bd.SLEEPER for i in range(n)})
    programs = tuple(bd.Program(name, path, autostart=True) for name, path in bins.items())
    return bd.Phase("cold", base / "cold" / "rt", programs)


def written(contender: bd.Runyard, ph: bd.Phase) -> dict:
    contender.configure(ph)
    return tomllib.loads((contender.workdir(ph) / "runyard.toml").read_text())["services"]


def test_the_variant_sets_subreaper_for_every_service_and_the_default_sets_none(
    tmp_path: Path,
) -> None:
    programs = tuple(bd.Program(f"s{i}", tmp_path / f"s{i}", autostart=True) for i in range(3))
    ph = bd.Phase("cold", tmp_path / "cold" / "rt", programs)
    ph.tree_root.mkdir(parents=True)
    variant = written(nocg.RunyardSubreaper(tmp_path, sys.executable), ph)
    assert {s["containment"] for s in variant.values()} == {"subreaper"}
    assert len(variant) == 3
    default = written(bd.Runyard(tmp_path, sys.executable), ph)
    assert not any("containment" in s for s in default.values())
    assert bd.APIS["runyard@subreaper"] is bd.RunyardAPI


def test_a_variant_launch_whose_services_got_cgroups_fails_loudly(tmp_path: Path) -> None:
    variant = nocg.RunyardSubreaper(tmp_path, sys.executable)
    ok = {"contained": {"a": ["subreaper", "/"], "b": ["subreaper", "/x"]}}
    assert nocg.check_contained(variant, ok, 2) == "services: 2 subreaper, 0 in a runyard-* cgroup"
    for bad, expect in (
        ({"a": ["cgroup", "/runyard-abc/a"], "b": ["subreaper", "/"]}, 2),
        ({"a": ["subreaper", "/runyard-abc/a"], "b": ["subreaper", "/"]}, 2),  # status lied
        ({"a": ["subreaper", "/"]}, 2),  # a service missing
        ({"a": ["", "/"], "b": ["", "/"]}, 2),  # a daemon that does not say
        ({}, 2),  # nothing reported at all
    ):
        with pytest.raises(bd.BenchError, match="did not apply"):
            nocg.check_contained(variant, {"contained": bad}, expect)
    # the default Runyard and the anchors are only described, never failed
    unsaid = {"contained": {"a": ["", "/"], "b": ["", "/"]}}
    said = nocg.check_contained(bd.Runyard(tmp_path, sys.executable), unsaid, 2)
    assert said == "services: 2 unknown, 0 in a runyard-* cgroup"
    assert nocg.check_contained(bd.Supervisord(tmp_path, sys.executable), {"secs": 1.0}, 2) == ""


def test_fold_moves_the_variant_into_runyards_info_rows_and_copies_the_anchors_cold() -> None:
    colds = {
        "runyard": {"cold_s": [0.3, 0.31], "cold500_s": [2.5], "loads": {"cold_s": ["l1"]}},
        "runyard@subreaper": {
            "cold_s": [0.2, 0.21],
            "cold500_s": "n/a (BenchError)",
            "cold_cpu_s": [0.1],
            "loads": {"cold_s": ["v1", "v2"]},
        },
        "supervisord": {"cold_s": [0.22, 0.23], "loads": {"cold_s": ["s1"]}},
        "circus": {"cold_s": "n/a (BenchError)", "loads": {}},
    }
    out = nocg.fold_subreaper(colds)
    assert set(out) == {"runyard", "supervisord", "circus"}
    assert out["runyard"]["cold_s"] == [0.3, 0.31]  # the goal's figure is untouched
    assert out["runyard"]["cold_nocg_s"] == [0.2, 0.21]
    assert out["runyard"]["cold500_nocg_s"] == "n/a (BenchError)"
    assert out["runyard"]["loads"]["cold_nocg_s"] == ["v1", "v2"]
    assert out["supervisord"]["cold_nocg_s"] == [0.22, 0.23]
    assert out["circus"]["cold_nocg_s"] == "n/a (BenchError)"
    assert "cold500_nocg_s" not in out["supervisord"]


def rendered(runyard: dict, supervisord: dict) -> tuple[dict[str, list[str]], bool]:
    lines, ok = bd.render({"runyard": runyard, "supervisord": supervisord})
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows, ok


def test_the_info_rows_show_a_ratio_are_never_judged_but_fail_when_the_variant_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the cold rows only: a skipped row elsewhere counts as not passed (--only-phase)
    monkeypatch.setattr(bd, "METRICS", tuple(m for m in bd.METRICS if m.key.startswith("cold")))
    runyard = {"cold_s": [0.26], "cold500_s": [1.5], "cold_nocg_s": [0.2], "cold500_nocg_s": [1.4]}
    anchor = {"cold_s": [0.22], "cold500_s": "skipped", "cold_nocg_s": [0.22]}
    rows, ok = rendered(runyard, anchor)
    label = "cold start: launch -> 50 running, no cgroup (containment = subreaper)"
    # figure, unit, runyard, supervisord, ratio, target, verdict
    assert rows[label][2:] == ["0.20", "0.22", "0.91", "info, not a goal", "info"]
    assert rows["cold start: launch -> 50 running"][-1] == "FAIL"  # the goal's row still judges
    assert not ok
    runyard["cold_s"], runyard["cold_nocg_s"] = [0.2], [0.3]
    rows, ok = rendered(runyard, anchor)
    assert rows[label][-1] == "info"
    assert ok  # a Runyard with no cgroup slower than the anchor does not fail the bench
    runyard["cold_nocg_s"] = "n/a (BenchError)"
    rows, ok = rendered(runyard, anchor)
    assert rows[label][-1] == "FAIL (no figure)" and not ok
    runyard["cold_nocg_s"] = runyard["cold500_nocg_s"] = "skipped (no cold phase)"
    _, ok = rendered(runyard, anchor)
    assert ok
    assert nocg.subreaper_note({"runyard": runyard}) == []
    assert "containment" in nocg.subreaper_note({"runyard": {"cold_nocg_s": [0.2]}})[0]


@pytest.fixture
def bench_base(tmp_path_factory: pytest.TempPathFactory):
    """A short base (ipc socket paths); afterwards no daemon or sleeper of ours on it."""
    from daemonkit import short_root

    base = short_root().parent
    yield base
    ours = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(base) in arg for arg in p.info["cmdline"] or ())
    ]
    for proc in ours:  # a daemon a failed test left: it and its sleepers
        with contextlib.suppress(psutil.Error):
            for child in [*proc.children(recursive=True), proc]:
                child.kill()


def test_cold_launches_report_their_containment_and_the_variant_runs_without_cgroups(
    bench_base: Path,
) -> None:
    ph = cold_phase(bench_base, 3)
    secs, loads, _ = bs.fig_cold(nocg.RunyardSubreaper(bench_base, sys.executable), ph, 1)
    assert len(secs) == 1
    assert loads[0].endswith("services: 3 subreaper, 0 in a runyard-* cgroup")
    _, loads, _ = bs.fig_cold(bd.Runyard(bench_base, sys.executable), ph, 1)
    if "services: 3 cgroup, 3 in a runyard-* cgroup" not in loads[0]:
        assert loads[0].endswith("services: 3 subreaper, 0 in a runyard-* cgroup")
        pytest.skip("no cgroups here: a variant whose setting did not apply would look the same")

    class Forgot(nocg.RunyardSubreaper):
        service_settings = ""  # the setting silently not written

    with pytest.raises(bd.BenchError, match="did not apply"):
        bs.fig_cold(Forgot(bench_base, sys.executable), ph, 1)
    # the failed launch was still shut down: the next one on the same tree runs
    secs, _, _ = bs.fig_cold(nocg.RunyardSubreaper(bench_base, sys.executable), ph, 1)
    assert len(secs) == 1


def test_a_contender_whose_cold_launch_failed_is_launched_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: after one failed launch a contender stayed in the rotation (each later
    launch could wait 180 s), and its later figures were thrown away anyway."""
    calls: list[str] = []

    def fig_cold(contender: bd.Contender, phase: bd.Phase, launches: int):
        calls.append(contender.name)
        if contender.name == "supervisord":
            raise bd.BenchError("no socket")
        return [0.25], ["load 0.1"], [0.18]

    monkeypatch.setattr(bs, "fig_cold", fig_cold)
    settings = bd.Settings(3, 10, 1, 1.0, 1.0, 1, 1, sessions=3, launches=3)
    ph = bd.Phase("cold", tmp_path / "rt", ())
    contenders = [bd.Runyard(tmp_path, sys.executable), bd.Supervisord(tmp_path, sys.executable)]
    out = bs.alternate_cold(contenders, (ph, ph), settings)
    assert calls.count("supervisord") == 1
    assert calls.count("runyard") == 18  # 9 rounds of 50 and 500
    assert out["supervisord"]["cold_s"] == "n/a (BenchError)"
    assert out["runyard"]["cold_s"] == [0.25] * 9
