"""The bench's pm2 contender (scripts/bench_daemon_pm2.py) without pm2: the configuration it
writes for each phase, the log truncation that stands in for rotation, and the CPU of reaped
children it counts. pm2 itself (npm) is only ever run by ``scripts/bench daemon``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from daemonkit import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_daemon as bd
import bench_daemon_pm2 as bp

pytestmark = pytest.mark.timeout(60)


def phase(tmp_path: Path, name: str, autostart: dict[str, bool], rotate: bool = False) -> bd.Phase:
    """A phase of programs that are never run: configure() only names their paths."""
    limits = (50_000_000, 2) if rotate else None
    programs = tuple(
        bd.Program(n, tmp_path / "bin" / n, autostart=a, rotate=limits)
        for n, a in autostart.items()
    )
    return bd.Phase(name, tmp_path / name / "rt", programs)


def configured(tmp_path: Path, ph: bd.Phase) -> tuple[list[str], list[dict], list[dict]]:
    pm2 = bp.PM2(tmp_path, "node")
    argv = pm2.configure(ph)
    home = pm2.home(ph)
    apps = json.loads((home / "ecosystem.json").read_text())["apps"]
    boot = json.loads((home / "boot.json").read_text())["apps"]
    return argv, apps, boot


def test_flood_phase_boots_the_sleepers_and_logs_where_the_bench_polls(tmp_path: Path) -> None:
    ph = phase(tmp_path, "flood", {"s00": True, "s01": True, "flood": False, "blockflood": False})
    argv, apps, boot = configured(tmp_path, ph)
    assert argv[-1] == "--boot"
    assert [a["name"] for a in boot] == ["s00", "s01"]
    assert [a["name"] for a in apps] == ["s00", "s01", "flood", "blockflood"]
    pm2 = bp.PM2(tmp_path, "node")
    for app in apps:
        # the DONE poll reads Contender.log_path; pm2 adds no prefix (its default)
        assert app["out_file"] == str(pm2.log_path(ph, app["name"]))
        assert app["error_file"] == str(pm2.log_path(ph, app["name"]).with_suffix(".err"))
        assert app["interpreter"] == "none"
        assert app["time"] is False
        assert app["autorestart"] is False
        assert not {"log_date_format", "log_type", "autostart", "merge_logs"} & set(app)


def test_fleet_and_cold_phases_load_nothing_at_boot(tmp_path: Path) -> None:
    fleet = phase(tmp_path, "fleet", {"s00": False, "s01": False})
    cold = phase(tmp_path, "cold50", {"s00": True, "s01": True})
    for ph in (fleet, cold):
        argv, apps, _ = configured(tmp_path, ph)
        assert "--boot" not in argv
        assert len(apps) == 2


def test_log_keeper_truncates_the_rotated_logs_only_while_inside(tmp_path: Path) -> None:
    ph = phase(tmp_path, "scale", {"w0": True, "s000": True}, rotate=True)
    pm2 = bp.PM2(tmp_path, "node")
    pm2.configure(ph)
    big, small = pm2.log_path(ph, "w0"), pm2.log_path(ph, "s000").with_suffix(".err")
    big.write_bytes(b"x" * 1000)
    small.write_bytes(b"y" * 10)
    with bp.truncating([big, small], limit=100, every=0.01):
        wait_for(lambda: big.stat().st_size == 0, what="the big log truncated")
        assert small.stat().st_size == 10
    assert not any(t.name == "pm2-log-truncation" for t in threading.enumerate())
    big.write_bytes(b"x" * 1000)  # nothing truncates after the way out
    assert big.stat().st_size == 1000

    with pm2.log_keeper(ph):  # 50 MB: the scale phase's rotation size
        assert any(t.name == "pm2-log-truncation" for t in threading.enumerate())
    unrotated = phase(tmp_path, "flood", {"flood": False})
    with pm2.log_keeper(unrotated):
        assert not any(t.name == "pm2-log-truncation" for t in threading.enumerate())


def test_pm2_cpu_counts_reaped_children(tmp_path: Path) -> None:
    """pm2's God daemon spawns `df` every 30 s: its CPU per GB counts its reaped children."""
    me = psutil.Process()
    with_children = bd.Session(None, None, me, children=True)  # type: ignore[arg-type]
    without = bd.Session(None, None, me)  # type: ignore[arg-type]
    gap0 = with_children.cpu_secs() - without.cpu_secs()
    subprocess.run([sys.executable, "-c", "sum(range(3 * 10**7))"], check=True)
    assert with_children.cpu_secs() - without.cpu_secs() > gap0
    assert bp.PM2.cpu_of_children and not bd.Runyard.cpu_of_children
