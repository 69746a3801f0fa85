"""How the bench times a log flood (scripts/bench_daemon.py ``Flood``, ``watch_flood``): from
the child's first write (its own clock, in its DONE line) to the first poll that finds the DONE
line, read back only below the size that poll saw. A window that cannot be timed is ``n/a
(why)``, never a number.

The bugs: the DONE poll read the tail with ``seek(size - 64); read()``, which reads on to the
end of a file that is still growing; under a flood that read could last until the flood was
over, and the DONE line was then credited to a poll made early in the flood (23246 MB/s for one
block flood; "the flood was over before two polls saw it" for the block child's ``| cat``
reference). The race itself cannot be replayed on demand, so the first test gives the reader
what the race gave it: a file that already holds more than the size the poll saw."""

from __future__ import annotations

import dataclasses
import subprocess
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


def _block_child(tmp_path: Path, secs: float) -> bd.Phase:
    child = tmp_path / "blockflood"
    child.write_bytes(bd.flood_program(secs, 10**12, bd.BLOCK))
    child.chmod(0o755)
    return bd.Phase("flood", tmp_path / "rt", (bd.Program("blockflood", child, autostart=False),))


def _ours() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_the_done_poll_reads_only_below_the_size_it_polled(tmp_path: Path) -> None:
    log = tmp_path / "flood.log"
    earlier = bd.LINE * 10 + b"DONE 10 1000 2000\n"  # an earlier flood, below size0
    flood = bd.LINE * 50
    log.write_bytes(earlier + flood + b"DONE 50 3000000000 4000000000\n")
    size0 = len(earlier)
    polled = size0 + len(flood)  # what stat() said; the DONE line came after it
    assert bd.read_done(log, size0, polled) is None
    done = bd.read_done(log, size0, log.stat().st_size)
    assert done is not None and done.groups() == (b"50", b"3000000000", b"4000000000")
    # the earlier flood's DONE line is below size0: never this flood's
    assert bd.read_done(log, size0, size0 + 5) is None


def test_a_window_under_twenty_polls_is_no_figure() -> None:
    short = bd.Flood(lines=10**6, start=100.0, wrote=100.05, end=100.06, asked=99.9)
    assert short.invalid is not None and "under 20 polls" in short.invalid
    with pytest.raises(bd.BenchError, match="under 20 polls"):
        _ = short.rate
    fine = dataclasses.replace(short, wrote=101.9, end=102.0)
    assert fine.invalid is None
    assert fine.rate == fine.payload / 2.0


def test_a_window_out_of_order_or_from_an_earlier_flood_is_no_figure() -> None:
    # the DONE line seen before the child says it was written: two clocks, or a wrong file
    early = bd.Flood(lines=10**6, start=100.0, wrote=102.0, end=101.0, asked=99.9)
    assert early.invalid is not None and "out of order" in early.invalid
    # a DONE line whose child began before this flood was asked for: an earlier flood's
    stale = bd.Flood(lines=10**6, start=50.0, wrote=52.0, end=101.0, asked=99.9)
    assert stale.invalid is not None and "before this one was asked for" in stale.invalid


def test_a_median_leaves_out_the_floods_that_gave_no_figure() -> None:
    why = "n/a (its window, 0.050 s, is under 20 polls)"
    assert bd.median_rate([800.0, why, 780.0, 900.0]) == 800.0
    assert bd.median_rate([why, why]) == why


def test_the_block_child_through_cat_gives_a_figure_within_its_own_rate(tmp_path: Path) -> None:
    """The block flood's ``| cat`` reference (the n/a of both quiet runs): a figure, and by
    construction never above the child's own rate, payload over its own writing time."""
    ph = _block_child(tmp_path, 0.3)
    before = _ours()
    log = tmp_path / "reference.log"
    asked = bd.time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f"exec '{ph.programs[0].path}' | cat > '{log}'"],
        start_new_session=True,
    )
    try:
        run = bd.watch_flood(log, 0, 60.0, asked=asked)
    finally:
        bd.os.killpg(proc.pid, bd.signal.SIGKILL)
        proc.wait(timeout=10)
    assert asked <= run.start <= run.wrote <= run.end
    assert run.invalid is None, run.invalid
    assert 0 < run.rate <= run.payload / (run.wrote - run.start)
    assert bd.count_lines(log, 0) == run.lines + 1  # every line and the DONE line, no more
    log.unlink()
    assert bd.pipe_reference(ph, tmp_path, _Settings(flood_secs=0.3), "blockflood") > 0
    assert not log.exists()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, left  # killed and reaped


def test_an_untimed_busy_flood_is_n_a_and_leaves_the_quiet_figures_standing() -> None:
    """Finding (review of stop 23's bench fix): a busy flood whose window could not be timed
    raised, and the phase's quiet floods' figures went with it. Now its status p99 alone is
    ``n/a (why)``."""
    early = bd.Flood(lines=10, start=1.0, wrote=2.0, end=3.0, asked=5.0)  # began before asked
    assert early.invalid is not None
    got = bd.calls_within(early, [(2.0, 1000)] * 50)
    assert got.startswith("n/a (the busy flood: its DONE line is from a flood that began")
    timed = bd.Flood(lines=10, start=10.0, wrote=11.0, end=12.0, asked=9.0)
    assert timed.invalid is None
    samples = [(9.5, 1)] + [(10.0 + i / 100, 1000 + i) for i in range(30)] + [(12.5, 2)]
    assert bd.calls_within(timed, samples) == [1000 + i for i in range(30)]
    assert bd.calls_within(timed, samples[:5]).startswith("n/a (only 4 status calls")
