"""Log capture without a page fault per buffer page (issue 16): glibc served each ~1 MiB buffer
of a read (the bytes read, the prefixed lines) with a fresh mmap and gave it back at once, so
every MiB captured faulted ~425 pages in anew. Counted, not timed: minor faults per MiB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc"),
]

#: Capture 64 reads of 1 MiB of 100-byte lines through a spool, each read ending mid-line,
#: and print the minor page faults per MiB (after one warm-up read).
CAPTURE = r"""
import os, resource, sys
from pathlib import Path
from runyard.daemon.logs import ServiceLog
from runyard.daemon.logs.heap import keep_read_buffers
if sys.argv[2] == "tuned":
    assert keep_read_buffers()
base = Path(sys.argv[1])
line = b"flood " + b"x" * 93 + b"\n"
chunk = (line * 10486)[: 1 << 20]
r, w = os.pipe()
import fcntl; fcntl.fcntl(w, 1031, 1 << 20)
os.set_blocking(r, False)
log = ServiceLog("svc", base / "logs", max_bytes=1 << 40, spool_dir=base / "spool")
def one():
    os.write(w, chunk)
    log.take("out", r, 1 << 20)
one()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(64):
    one()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 64)
log.close()
"""


def faults_per_mib(tmp_path: Path, how: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CAPTURE, str(tmp_path / how), how],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(out.stdout)


def test_capture_reuses_its_read_buffers_instead_of_faulting_them_in(tmp_path: Path) -> None:
    tuned = faults_per_mib(tmp_path, "tuned")
    untuned = faults_per_mib(tmp_path, "untuned")
    # A MiB is 256 pages: the untuned heap faults in every buffer of every read.
    assert untuned > 256, untuned
    assert tuned < 32, (tuned, untuned)


def test_the_daemon_tunes_its_heap_before_it_serves() -> None:
    """run_daemon calls keep_read_buffers (read from its source: starting a daemon to look
    at its malloc state would tell less)."""
    import inspect

    from runyard.daemon import main

    assert "keep_read_buffers()" in inspect.getsource(main.run_daemon)


def test_a_flooding_log_drops_what_it_wrote_from_the_page_cache(
    tmp_path: Path, monkeypatch
) -> None:
    """A flood's log filled the page cache with fresh pages, dear to fill in a VM (47% of the
    daemon's CPU under scripts/bench). Every 8 MiB written the last two windows are advised
    DONTNEED (the first advice starts their writeback, the second drops them): every byte but
    the newest window is covered, and the file is intact. The real call is made (a spy)."""
    import os

    from runyard.daemon.logs import ServiceLog
    from runyard.daemon.logs.logfile import DROP_EVERY

    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((offset, length, advice))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    line = b"flood " + b"x" * 93 + b"\n"
    chunk = line * 10485
    log = ServiceLog("svc", tmp_path / "logs", max_bytes=1 << 40)
    try:
        for _ in range(40):
            log.feed("out", chunk, ts=0.0)
    finally:
        log.close()
    size = (tmp_path / "logs" / "svc" / "svc.log").stat().st_size
    assert {a for _, _, a in calls} == {os.POSIX_FADV_DONTNEED}
    write = size // 40  # one read's lines with their prefixes
    ends = [o + n for o, n, _ in calls]
    windows = [b - a for a, b in zip([0, *ends], ends, strict=False)]
    assert len(calls) >= 4 and all(DROP_EVERY <= w < DROP_EVERY + write for w in windows)
    # Each advice starts where the one before it started: every window is advised twice.
    assert [o for o, _, _ in calls] == [0, 0, *ends[:-2]]
    assert size - ends[-1] < DROP_EVERY
    assert log.ring.last_seq == 40 * 10485
