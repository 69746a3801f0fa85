"""Log capture at pipe speed (issue 16): a read's whole lines get their prefix in one C-level
pass, no Python object per line; the same lines, stamps and tags as before, with the spool."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_logs import procs, read_entries, spawn, wait_for  # noqa: F401 (procs: a fixture)

from runyard.daemon.logs import (
    LineSplitter,
    LogLine,
    LogPipes,
    LogReader,
    LogRing,
    ReaderState,
    ServiceLog,
)
from runyard.daemon.logs.ring import LazyLines

pytestmark = pytest.mark.timeout(60)

LINE = b"flood " + b"x" * 93 + b"\n"  # 100 bytes


def test_block_output_costs_about_one_c_pass_per_read(tmp_path: Path) -> None:
    """Finding: block output paid per-line Python work (a bytes object per line to split and
    join, a LogLine per ring slot): 3.9 s of daemon CPU per GB, 3x supervisord. Now a read of
    whole lines is a handful of calls, whatever its number of lines: counted, not timed (the
    speed itself is measured by ``scripts/bench daemon``)."""
    chunk = LINE * (1024 * 1024 // len(LINE))  # 10,485 lines
    log = ServiceLog("svc", tmp_path / "logs", max_bytes=1 << 40)
    calls = 0

    def count(frame, event, arg) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    try:
        log.feed("out", chunk)  # the first read opens the file: not counted
        sys.setprofile(count)
        try:
            for _ in range(4):
                log.feed("out", chunk)
        finally:
            sys.setprofile(None)
    finally:
        log.close()
    assert calls < 4 * 200, f"{calls} calls for 4 reads of {len(chunk) // len(LINE)} lines"
    assert log.ring.last_seq == 5 * len(chunk) // len(LINE)


def reference(chunks: list[bytes], max_line: int) -> list[bytes]:
    """The lines LineSplitter.feed makes of ``chunks`` (with the unterminated tail at EOF)."""
    sp = LineSplitter(max_line)
    lines = [line for chunk in chunks for line in sp.feed(chunk)]
    tail = sp.flush()
    return lines + ([tail] if tail is not None else [])


@pytest.mark.parametrize("seed", range(6))
def test_block_path_cuts_lines_exactly_as_the_splitter(tmp_path: Path, seed: int) -> None:
    """Partial lines across reads, empty lines, lines longer than max_line, \\r, invalid UTF-8:
    the file and the ring hold what the per-line splitter made, every line stamped."""
    rnd = random.Random(seed)
    pieces = [b"", b"a", b"\r", b"\xff\xfe", b"caf\xc3\xa9", b"x" * 50, b"y" * 300]
    data = b"".join(
        rnd.choice(pieces) + (b"\n" if rnd.random() < 0.6 else b"") for _ in range(3000)
    )
    cuts = sorted(rnd.sample(range(1, len(data)), 60))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    log = ServiceLog(
        "svc", tmp_path / "logs", max_line=128, ring_lines=200, max_bytes=40_000, backups=40
    )
    got = []
    for chunk in chunks:
        got.extend(line.line for line in log.feed("out", chunk, ts=1e9))
    got.extend(line.line for line in log.eof("out"))
    log.close()
    want = reference(chunks, 128)
    assert [line for _, _, line in read_entries(tmp_path / "logs", "svc")] == want
    decoded = [line.decode("utf-8", "replace") for line in want]
    assert [line.line for line in log.ring.tail()] == decoded[-200:]
    assert log.ring.last_seq == len(want)
    assert got[-50:] == decoded[-50:]


def test_lazy_lines_make_only_what_is_read() -> None:
    ring = LogRing(5)
    lines = ring.append_chunk("out", 2.0, b"a\nb\nc\n", 3)
    more = ring.append_chunk("err", 3.0, b"".join(b"%d\n" % i for i in range(100)), 100)
    assert isinstance(more, LazyLines) and len(more) == 5 and more.last_seq == 103
    assert more[-1].seq == 103 and more[-1].line == "99"
    assert [line.line for line in more[-2:]] == ["98", "99"]
    assert [line.seq for line in more] == [99, 100, 101, 102, 103]
    assert lines == [
        LogLine(1, 2.0, "out", "a"),
        LogLine(2, 2.0, "out", "b"),
        LogLine(3, 2.0, "out", "c"),
    ]
    assert ring.append_many("out", 4.0, [b"d", b"e", b"f"])[0] == LogLine(104, 4.0, "out", "d")
    assert [line.seq for line in ring.tail(3, after_seq=100)] == [104, 105, 106]
    assert len(ring) == 5 and ring.last_seq == 106


BLOCKS = r"""
import os, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
os.set_blocking(1, True)
buf = b"".join(b"%08d " % i + b"." * 90 + b"\n" for i in range(n))
for at in range(0, len(buf), size):  # blocks that end mid-line
    os.write(1, buf[at : at + size])
os.write(2, b"done\n")
"""


async def test_block_writes_through_the_spool_keep_every_numbered_line(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """A child writing 64 KiB blocks (lines cut across writes and reads) through the FIFOs and
    the spool: every numbered line once, in order, whole, stamped and tagged; rotation exact."""
    n = 60_000  # 6 MB: the pipe fills, the reader takes full reads and comes straight back
    fifo_dir, logs_dir = tmp_path / "temp" / "fifo", tmp_path / "logs"
    pipes = LogPipes(fifo_dir, "blocks")
    fds = pipes.prepare()
    proc = spawn(procs, BLOCKS, fds, str(n), str(65536 + 7))
    pipes.close_child_fds()
    log = ServiceLog("blocks", logs_dir, spool_dir=fifo_dir, max_bytes=2_000_000, backups=9)
    seqs: list[int] = []
    reader = LogReader().attach(
        asyncio.get_running_loop(), pipes, log, lambda lines: seqs.append(lines[-1].seq)
    )
    try:
        await wait_for(lambda: proc.poll() is not None, timeout=40, what="child exit")
        assert await reader.drain(timeout=10)
        assert reader.state is ReaderState.EOF
    finally:
        reader.detach()
        log.close()
        pipes.close()
        pipes.remove()
    entries = read_entries(logs_dir, "blocks")
    assert [line for _, s, line in entries if s == "out"] == [
        b"%08d " % i + b"." * 90 for i in range(n)
    ]
    assert [line for _, s, line in entries if s == "err"] == [b"done"]
    files = sorted((logs_dir / "blocks").iterdir())
    assert len(files) >= 4 and all(p.stat().st_size <= 2_000_000 for p in files)
    assert seqs == sorted(seqs) and seqs[-1] == n + 1


def test_the_ring_keeps_about_its_lines_of_a_flood_not_the_whole_read() -> None:
    """A quiet service after one flood must not hold its last 1 MiB read for ever."""
    ring = LogRing(100)
    blob = b"".join(b"%05d\n" % i for i in range(20_000))
    new = ring.append_chunk("out", 1.0, blob, 20_000)
    assert [line.line for line in new] == [f"{i:05d}" for i in range(19_900, 20_000)]
    assert [line.seq for line in ring.tail()] == list(range(19_901, 20_001))
    assert sum(len(chunk.blob) for chunk in ring._chunks) < 2 * 100 * 6
    ring.append_chunk("err", 2.0, b"x\n", 1)
    assert [line.seq for line in ring.tail(2)] == [20_000, 20_001]
