"""Log capture: line splitting, the rotated file, the ring, and real children through the FIFOs,
including lines written while the daemon is down."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard.daemon.logs import (
    LineSplitter,
    LogFile,
    LogLine,
    LogPipes,
    LogReader,
    LogRing,
    ReaderState,
    ServiceLog,
    daemon_logger,
    format_stamp,
)

pytestmark = pytest.mark.timeout(30)

LINE_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (out|err) (.*)$")


# --------------------------------------------------------------------------- helpers


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``predicate`` on the running loop until it holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.005)


def log_files(logs_dir: Path, service: str) -> list[Path]:
    """The log file and its backups, oldest first."""
    base = logs_dir / service / f"{service}.log"
    backups = sorted(
        base.parent.glob(f"{service}.log.*"), key=lambda p: int(p.suffix[1:]), reverse=True
    )
    return [*backups, base] if base.exists() else backups


def read_entries(logs_dir: Path, service: str) -> list[tuple[bytes, str, bytes]]:
    """(stamp, stream, line) of every line in every file, oldest first."""
    entries = []
    for path in log_files(logs_dir, service):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends mid-line"
        for raw in data.split(b"\n")[:-1]:
            m = LINE_RE.match(raw)
            assert m, raw
            entries.append((m[1], m[2].decode(), m[3]))
    return entries


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children started by a test; each one's process group is killed at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def spawn(
    procs: list[subprocess.Popen[bytes]], code: str, fds, *args: str, keep: bool = True
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.DEVNULL,
        stdout=fds.stdout,
        stderr=fds.stderr,
        pass_fds=fds.keep if keep else (),
        start_new_session=True,
    )
    procs.append(proc)
    return proc


# --------------------------------------------------------------------------- LineSplitter


def test_splitter_joins_partial_lines_across_chunks() -> None:
    sp = LineSplitter()
    assert sp.feed(b"hel") == []
    assert sp.feed(b"lo\nwor") == [b"hello"]
    assert sp.feed(b"ld\n\nnext") == [b"world", b""]
    assert sp.pending == 4
    assert sp.flush() == b"next"
    assert sp.flush() is None


def test_splitter_keeps_crlf_and_only_splits_on_newline() -> None:
    sp = LineSplitter()
    assert sp.feed(b"a\r\nb\rc\r\n") == [b"a\r", b"b\rc\r"]
    assert sp.flush() is None


def test_splitter_cuts_an_overlong_line_into_pieces() -> None:
    sp = LineSplitter(max_line=4)
    assert sp.feed(b"abcdefghij\nxy") == [b"abcd", b"efgh", b"ij"]
    # A partial line longer than max_line is not held back without bound.
    assert sp.feed(b"z" * 9) == [b"xyzz", b"zzzz"]
    assert sp.pending == 3
    assert sp.feed(b"\n") == [b"zzz"]
    assert sp.feed(b"abcd\n") == [b"abcd"]  # exactly max_line stays whole


@given(
    data=st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    cuts=st.lists(st.integers(0, 300), max_size=12),
    max_line=st.integers(1, 20),
)
def test_splitter_output_does_not_depend_on_chunking(
    data: bytes, cuts: list[int], max_line: int
) -> None:
    """Whatever the chunk boundaries, every byte comes out once, in pieces of <= max_line."""
    expected: list[bytes] = []
    *complete, tail = data.split(b"\n")
    for line in complete:
        expected.extend(line[i : i + max_line] for i in range(0, len(line) or 1, max_line))
    sp = LineSplitter(max_line)
    got: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        got.extend(sp.feed(data[start:cut]))
        start = max(start, cut)
    last = sp.flush()
    if last is not None:
        got.append(last)
    if tail:
        expected.extend(tail[i : i + max_line] for i in range(0, len(tail), max_line))
    assert got == expected


# --------------------------------------------------------------------------- the file


def test_file_lines_carry_timestamp_and_stream(tmp_path: Path) -> None:
    ts = datetime(2026, 11, 21, 23, 53, 11, 123456, tzinfo=UTC).timestamp()
    log = ServiceLog("web", tmp_path)
    log.feed("out", b"hello\nwor", ts=ts)
    log.feed("err", b"oops\n", ts=ts)
    log.feed("out", b"ld\n", ts=ts + 1)
    log.feed("out", b"no newline", ts=ts + 2)
    log.eof("out", ts=ts + 2)
    log.close()
    assert (tmp_path / "web" / "web.log").read_bytes() == (
        b"2026-11-21T23:53:11.123456Z out hello\n"
        b"2026-11-21T23:53:11.123456Z err oops\n"
        b"2026-11-21T23:53:12.123456Z out world\n"
        b"2026-11-21T23:53:13.123456Z out no newline\n"
    )


def test_lines_of_one_chunk_share_one_timestamp(tmp_path: Path) -> None:
    log = ServiceLog("web", tmp_path)
    log.feed("out", b"".join(b"line %d\n" % i for i in range(1000)))
    log.close()
    entries = read_entries(tmp_path, "web")
    assert len(entries) == 1000
    assert len({stamp for stamp, _, _ in entries}) == 1


def test_format_stamp_is_utc_with_microseconds() -> None:
    assert format_stamp(0.0) == b"1970-01-01T00:00:00.000000Z"
    assert format_stamp(1.9999996) == b"1970-01-01T00:00:02.000000Z"


def test_log_file_is_created_0640_and_appended_to(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        log = ServiceLog("web", tmp_path / "logs")
    finally:
        os.umask(old)
    log.feed("out", b"one\n", ts=0.0)
    log.close()
    path = tmp_path / "logs" / "web" / "web.log"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    again = ServiceLog("web", tmp_path / "logs")
    assert again.file.size == path.stat().st_size
    again.feed("out", b"two\n", ts=0.0)
    again.close()
    assert [line for _, _, line in read_entries(tmp_path / "logs", "web")] == [b"one", b"two"]


@pytest.mark.parametrize("chunk_lines", [1, 7, 100])
def test_rotation_keeps_backups_and_loses_no_line(tmp_path: Path, chunk_lines: int) -> None:
    log = ServiceLog("svc", tmp_path, max_bytes=4096, backups=3)
    line_len = len(format_stamp(0)) + len(b" out ") + len(b"line-00000") + 1
    total = 4096 * 7 // 2 // line_len  # about three and a half files: nothing dropped yet
    for start in range(0, total, chunk_lines):
        stop = min(start + chunk_lines, total)
        log.feed("out", b"".join(b"line-%05d\n" % i for i in range(start, stop)))
    log.close()
    files = log_files(tmp_path, "svc")
    assert [f.name for f in files] == ["svc.log.3", "svc.log.2", "svc.log.1", "svc.log"]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert all(f.stat().st_size > 4096 - line_len for f in files[:-1])  # filled, not cut early
    lines = [line for _, _, line in read_entries(tmp_path, "svc")]
    assert lines == [b"line-%05d" % i for i in range(total)]


def test_rotation_drops_the_oldest_backup(tmp_path: Path) -> None:
    log = ServiceLog("svc", tmp_path, max_bytes=2048, backups=2)
    total = 2000
    for i in range(0, total, 10):
        log.feed("out", b"".join(b"line-%05d\n" % j for j in range(i, i + 10)))
    log.close()
    assert [f.name for f in log_files(tmp_path, "svc")] == ["svc.log.2", "svc.log.1", "svc.log"]
    lines = [int(line[5:]) for _, _, line in read_entries(tmp_path, "svc")]
    assert lines == list(range(total - len(lines), total))  # the newest lines, contiguous


def test_rotation_with_no_backups_starts_fresh(tmp_path: Path) -> None:
    log = ServiceLog("svc", tmp_path, max_bytes=1024, backups=0)
    for i in range(500):
        log.feed("out", b"line-%05d\n" % i)
    log.close()
    assert [f.name for f in log_files(tmp_path, "svc")] == ["svc.log"]
    assert (tmp_path / "svc" / "svc.log").stat().st_size <= 1024
    lines = [int(line[5:]) for _, _, line in read_entries(tmp_path, "svc")]
    assert lines and lines == list(range(500 - len(lines), 500))


def test_a_chunk_bigger_than_a_file_is_spread_over_backups(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "x.log", max_bytes=100, backups=9)
    log.write_lines(b"P ", [b"%03d" % i for i in range(100)])  # 600 bytes
    log.write(b"Q" * 250 + b"\n")  # one line bigger than a file goes whole into a file of its own
    log.close()
    sizes = [p.stat().st_size for p in sorted(tmp_path.iterdir())]
    assert sum(sizes) == 600 + 251
    assert sorted(sizes) == [24] + [96] * 6 + [251]
    assert (tmp_path / "x.log").read_bytes() == b"Q" * 250 + b"\n"


def test_file_keeps_raw_bytes_and_the_ring_decodes(tmp_path: Path) -> None:
    log = ServiceLog("svc", tmp_path)
    lines = log.feed("out", b"caf\xc3\xa9\nbad \xff\xfe\ncut \xe2\x82\n")
    log.close()
    assert [line.line for line in lines] == ["café", "bad \ufffd\ufffd", "cut \ufffd"]
    assert [line for _, _, line in read_entries(tmp_path, "svc")] == [
        b"caf\xc3\xa9",
        b"bad \xff\xfe",
        b"cut \xe2\x82",
    ]


# --------------------------------------------------------------------------- the ring


def test_ring_is_bounded_with_monotonic_seq() -> None:
    ring = LogRing(5)
    assert ring.last_seq == 0 and ring.tail() == []
    first = ring.append_many("out", 1.0, [b"a", b"b", b"c"])
    assert first == [
        LogLine(1, 1.0, "out", "a"),
        LogLine(2, 1.0, "out", "b"),
        LogLine(3, 1.0, "out", "c"),
    ]
    ring.append_many("err", 2.0, [b"d", b"e", b"f", b"g"])
    assert len(ring) == 5 and ring.last_seq == 7
    assert [line.seq for line in ring.tail()] == [3, 4, 5, 6, 7]
    assert [line.line for line in ring.tail(2)] == ["f", "g"]
    assert ring.tail(0) == []
    assert [line.seq for line in ring.tail(after_seq=5)] == [6, 7]
    assert [line.seq for line in ring.tail(after_seq=1)] == [3, 4, 5, 6, 7]
    assert [line.seq for line in ring.tail(1, after_seq=4)] == [7]
    assert ring.tail(after_seq=7) == []


def test_ring_lines_are_the_wire_type(tmp_path: Path) -> None:
    import msgspec

    from runyard.protocol.messages import LogLine as WireLogLine

    assert LogLine is WireLogLine
    line = LogRing(3).append_many("err", 1.5, [b"x"])[0]
    assert msgspec.json.decode(msgspec.json.encode(line), type=WireLogLine) == line


def test_a_chunk_bigger_than_the_ring_keeps_the_newest_and_counts_all(tmp_path: Path) -> None:
    log = ServiceLog("svc", tmp_path, ring_lines=100)
    new = log.feed("out", b"".join(b"%d\n" % i for i in range(3000)))
    log.close()
    assert [line.seq for line in new] == list(range(2901, 3001))
    assert [line.line for line in new] == [str(i) for i in range(2900, 3000)]
    assert log.ring.last_seq == 3000 and len(log.ring) == 100
    assert len(read_entries(tmp_path, "svc")) == 3000


# --------------------------------------------------------------------------- FIFOs


def test_prepare_makes_private_fifos_and_replaces_a_stray_file(tmp_path: Path) -> None:
    fifo_dir = tmp_path / "temp" / "fifo"
    fifo_dir.mkdir(parents=True)
    (fifo_dir / "svc.out").write_text("not a fifo")
    pipes = LogPipes(fifo_dir, "svc")
    fds = pipes.prepare()
    try:
        assert stat.S_IMODE(fifo_dir.stat().st_mode) == 0o700
        for path in (pipes.out_path, pipes.err_path):
            st = path.lstat()
            assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert os.get_blocking(fds.stdout) and os.get_blocking(fds.stderr)
        assert not os.get_blocking(pipes.read_fds[0])
        assert len(fds.keep) == 2
        if sys.platform.startswith("linux"):
            size = fcntl.fcntl(pipes.read_fds[0], 1032)  # F_GETPIPE_SZ
            assert size == pipes.pipe_size >= 64 * 1024
    finally:
        pipes.close()
        pipes.remove()
    assert not pipes.out_path.exists() and not pipes.err_path.exists()


def test_prepare_reopens_a_read_end_whose_fifo_was_replaced(tmp_path: Path) -> None:
    pipes = LogPipes(tmp_path / "fifo", "svc")
    pipes.prepare()
    pipes.close_child_fds()
    kept_err = pipes.read_fds[1]
    pipes.out_path.unlink()
    pipes.out_path.write_text("someone else's file")
    pipes.prepare()
    try:
        out_fd, err_fd = pipes.read_fds
        assert os.fstat(out_fd).st_ino == pipes.out_path.lstat().st_ino
        assert stat.S_ISFIFO(os.fstat(out_fd).st_mode)
        assert err_fd == kept_err  # the untouched one is kept as it was
    finally:
        pipes.close()


def test_bad_service_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LogPipes(tmp_path, "../evil")
    with pytest.raises(ValueError):
        ServiceLog("a/b", tmp_path)


CHATTY = r"""
import sys
n = int(sys.argv[1])
for i in range(n):
    print(f"line {i:06d} " + "x" * 60)
    if i % 100 == 0:
        print(f"err {i}", file=sys.stderr)
print("L" * 40000)
sys.stdout.write("the end, without newline")
"""


async def test_child_output_reaches_the_file_through_the_fifos(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    n = 20000  # ~1.5 MB: more than the pipe holds, so the child blocks and resumes
    pipes = LogPipes(tmp_path / "fifo", "chatty")
    fds = pipes.prepare()
    proc = spawn(procs, CHATTY, fds, str(n))
    pipes.close_child_fds()
    log = ServiceLog("chatty", tmp_path / "logs")
    batches: list[list[LogLine]] = []
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, batches.append)
    try:
        await wait_for(lambda: proc.poll() is not None, what="child exit")
        assert await reader.drain(timeout=10)
        assert reader.state is ReaderState.EOF
    finally:
        reader.detach()
        log.close()
        pipes.close()
        pipes.remove()
    assert proc.returncode == 0
    entries = read_entries(tmp_path / "logs", "chatty")
    out = [line for _, stream, line in entries if stream == "out"]
    err = [line for _, stream, line in entries if stream == "err"]
    expected = [b"line %06d " % i + b"x" * 60 for i in range(n)]
    expected += [b"L" * 16384, b"L" * 16384, b"L" * (40000 - 2 * 16384)]
    expected += [b"the end, without newline"]
    assert out == expected
    assert err == [b"err %d" % i for i in range(0, n, 100)]
    seqs = [line.seq for batch in batches for line in batch]
    assert seqs == sorted(seqs) and seqs[-1] == log.ring.last_seq == len(entries)


WRITER = r"""
import os, sys, time
n, first, delay, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
progress, crashed, release = sys.argv[5:8]
pfd = os.open(progress, os.O_WRONLY | os.O_CREAT, 0o644)

def wait_file(path):
    deadline = time.monotonic() + 25
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.002)

for i in range(n):
    if i == first:
        wait_file(crashed)
    line = b"%08d " % i
    os.write(1, line + b"." * (size - len(line) - 1) + b"\n")
    os.pwrite(pfd, b"%010d" % (i + 1), 0)
    if delay:
        time.sleep(delay)
wait_file(release)
"""


def read_progress(path: Path) -> int:
    try:
        return int(path.read_bytes() or b"0")
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.parametrize(
    ("n", "delay", "size"),
    [(400, 0.003, 40), (4000, 0.0, 1000)],
    ids=["paced", "more-than-the-pipe-holds"],
)
async def test_lines_written_while_the_daemon_is_down_are_kept(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], n: int, delay: float, size: int
) -> None:
    loop = asyncio.get_running_loop()
    fifo_dir, logs_dir = tmp_path / "temp" / "fifo", tmp_path / "logs"
    progress, crashed, release = tmp_path / "progress", tmp_path / "crashed", tmp_path / "release"
    first = 20
    pipes = LogPipes(fifo_dir, "svc")
    fds = pipes.prepare()
    args = [str(n), str(first), str(delay), str(size), str(progress), str(crashed), str(release)]
    proc = spawn(procs, WRITER, fds, *args)
    pipes.close_child_fds()
    log = ServiceLog("svc", logs_dir)
    reader = LogReader().attach(loop, pipes, log, lambda lines: None)
    await wait_for(lambda: log.ring.last_seq >= first, what="first lines")

    # The daemon dies: its read ends go away, nothing is flushed.
    reader.detach()
    pipes.close()
    log.file.close()
    crashed.touch()
    # The pipe buffer alone must hold what the child writes meanwhile (else it blocks, also fine).
    more = min(100, pipes.pipe_size // size // 2)
    await wait_for(lambda: read_progress(progress) >= first + more, what="writes while down")
    assert proc.poll() is None

    # A new daemon comes up and reads on.
    pipes2 = LogPipes(fifo_dir, "svc")
    pipes2.reattach()
    log2 = ServiceLog("svc", logs_dir)
    reader2 = LogReader().attach(loop, pipes2, log2, lambda lines: None)
    try:
        release.touch()
        await wait_for(lambda: proc.poll() is not None, what="child exit")
        assert await reader2.drain(timeout=10)
        assert reader2.state is ReaderState.EOF
    finally:
        reader2.detach()
        log2.close()
        pipes2.close()
        pipes2.remove()
    assert proc.returncode == 0  # no SIGPIPE, no EPIPE
    numbers = [int(line.split(b" ")[0]) for _, _, line in read_entries(logs_dir, "svc")]
    assert numbers == list(range(n))


async def test_without_keeper_fds_a_daemon_crash_kills_the_child(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Why the keeper fds exist: the same crash, the keepers not passed → SIGPIPE."""
    progress, crashed, release = tmp_path / "progress", tmp_path / "crashed", tmp_path / "release"
    pipes = LogPipes(tmp_path / "fifo", "svc")
    fds = pipes.prepare()
    args = ["1000", "5", "0.002", "20", str(progress), str(crashed), str(release)]
    proc = spawn(procs, WRITER, fds, *args, keep=False)
    pipes.close_child_fds()
    log = ServiceLog("svc", tmp_path / "logs")
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, lambda lines: None)
    await wait_for(lambda: log.ring.last_seq >= 5)
    reader.detach()
    pipes.close()
    log.close()
    crashed.touch()
    await wait_for(lambda: proc.poll() is not None, what="child death")
    # Killed by SIGPIPE, or (a Python child ignores SIGPIPE) died of BrokenPipeError.
    assert proc.returncode in (-signal.SIGPIPE, 1)


async def test_reattach_to_a_child_that_exited_meanwhile_reaches_eof(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A FIFO reopened after its writers are gone gives its new reader no POLLHUP; the reader
    must still see EOF instead of waiting forever."""
    pipes = LogPipes(tmp_path / "fifo", "svc")
    fds = pipes.prepare()
    proc = spawn(procs, "print('bye')", fds)
    pipes.close_child_fds()
    pipes.close()  # the daemon is down for the whole life of the child
    await wait_for(lambda: proc.poll() is not None)
    pipes2 = LogPipes(tmp_path / "fifo", "svc")
    pipes2.reattach()
    log = ServiceLog("svc", tmp_path / "logs")
    reader = LogReader().attach(asyncio.get_running_loop(), pipes2, log, lambda lines: None)
    try:
        await wait_for(lambda: reader.state is ReaderState.EOF, what="EOF")
    finally:
        reader.detach()
        log.close()
        pipes2.close()
    # With every fd of the pipe closed the kernel freed its buffer: 'bye' is gone (a known limit).
    assert read_entries(tmp_path / "logs", "svc") == []


async def test_a_respawn_reuses_the_read_ends(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    loop = asyncio.get_running_loop()
    pipes = LogPipes(tmp_path / "fifo", "svc")
    log = ServiceLog("svc", tmp_path / "logs")
    try:
        for run in range(2):
            fds = pipes.prepare()
            proc = spawn(procs, f"print('run {run}'); import sys; print('e', file=sys.stderr)", fds)
            pipes.close_child_fds()
            reader = LogReader().attach(loop, pipes, log, lambda lines: None)
            await wait_for(lambda p=proc: p.poll() is not None)
            assert await reader.drain(timeout=5)
            assert reader.state is ReaderState.EOF
    finally:
        log.close()
        pipes.close()
    entries = [(s, line) for _, s, line in read_entries(tmp_path / "logs", "svc")]
    assert sorted(entries) == sorted(
        [("out", b"run 0"), ("err", b"e"), ("out", b"run 1"), ("err", b"e")]
    )
    assert [line for s, line in entries if s == "out"] == [b"run 0", b"run 1"]


# --------------------------------------------------------------------------- the daemon's own log


def test_daemon_logger_writes_daemon_log(tmp_path: Path) -> None:
    logger = daemon_logger(tmp_path / "logs")
    again = daemon_logger(tmp_path / "logs")  # idempotent: one handler, not two
    try:
        assert again is logger
        logging.getLogger("runyard.test").info("hello %s", "there")
        for handler in logger.handlers:
            handler.flush()
        text = (tmp_path / "logs" / "runyard" / "daemon.log").read_text()
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z INFO runyard\.test: hello there\n", text
        ), text
    finally:
        for handler in list(logger.handlers):
            if getattr(handler, "_runyard_daemon_log", False):
                logger.removeHandler(handler)
                handler.close()
