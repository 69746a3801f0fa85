"""The bench's reference for line-buffered capture (scripts/bench_daemon.py ``pipe_ceiling``):
the real line flood child into a 1 MiB pipe the bench drains and discards. It must count the
child's own lines (its DONE line), and leave no child behind (the child sleeps after DONE)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench_daemon as bd

pytestmark = pytest.mark.timeout(60)


@dataclasses.dataclass
class _Settings:
    flood_secs: float


def test_the_pipe_ceiling_times_the_flood_child_and_kills_it(tmp_path: Path) -> None:
    child = tmp_path / "flood"
    child.write_bytes(bd.flood_program(0.3, 10**12))
    child.chmod(0o755)
    ph = bd.Phase("flood", tmp_path / "rt", (bd.Program("flood", child, autostart=False),))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    rate = bd.pipe_ceiling(ph, _Settings(flood_secs=0.3))
    assert 1 < rate < 10_000, rate  # MB/s: 0.3 s of 100-byte lines, over the child's own count
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, left  # killed and reaped
