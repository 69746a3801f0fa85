"""A hot stream (issue 16, line-buffered capture): read on a timer out of epoll while a writer
floods it, back to epoll when it is quiet, its pipe raised only then; no line lost at its EOF
or when the daemon is killed while it is hot. Counted and structural, never timed (the speed is
``scripts/bench daemon``)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from test_logs import procs, read_entries, spawn, wait_for  # noqa: F401 (procs: a fixture)

from runyard.daemon.logs import LogPipes, LogReader, ReaderState, ServiceLog
from runyard.daemon.logs.fifo import PIPE_SIZE, pipe_size
from runyard.daemon.logs.reader import StreamMode

pytestmark = pytest.mark.timeout(90)

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

#: Numbered 100-byte lines, one ``write`` each (as a line-buffered program writes): ``n`` flat
#: out, then ``quiet`` more with 30 ms between them, then "end".
LINES = r"""
import os, sys, time
n, quiet = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    os.write(1, b"%07d " % i + b"x" * 91 + b"\n")
for i in range(quiet):
    time.sleep(0.03)
    os.write(1, b"quiet %d\n" % i)
os.write(1, b"end\n")
os.write(2, b"err line\n")
"""


def line(i: int) -> bytes:
    return b"%07d " % i + b"x" * 91


def waiting(fd: int) -> int:
    """Bytes in the pipe of read end ``fd`` (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4), sys.byteorder)


def out_lines(logs_dir: Path, service: str) -> list[bytes]:
    return [text for _, stream, text in read_entries(logs_dir, service) if stream == "out"]


async def test_a_flooded_stream_goes_hot_and_back_to_epoll_when_quiet(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """The reader is attached once 512 KiB wait in the pipe, so its first read is a big one:
    the stream goes hot (out of epoll) and, once the writer slows to a line per 30 ms, back
    to readiness; every line once, in order."""
    n = 30_000  # 3 MB: more than the pipe, so the writer blocks and resumes while hot
    fifo_dir, logs_dir = tmp_path / "fifo", tmp_path / "logs"
    pipes = LogPipes(fifo_dir, "hot")
    fds = pipes.prepare()
    spawn(procs, LINES, fds, str(n), "5")
    pipes.close_child_fds()
    out_fd = pipes.read_fds[0]
    await wait_for(lambda: waiting(out_fd) >= 512 * 1024, what="a 512 KiB backlog")
    log = ServiceLog("hot", logs_dir, spool_dir=tmp_path / "spool", max_bytes=1 << 40)
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, lambda lines: None)
    try:
        await wait_for(lambda: reader.heated >= 1, what="the stream going hot")
        await wait_for(lambda: reader.state is ReaderState.EOF, timeout=60, what="EOF")
    finally:
        reader.detach()
        log.close()
        pipes.close()
        pipes.remove()
    # Every heat ended in a cool: it finished quiet, in epoll (a loaded box may heat it twice).
    assert reader.heated == reader.cooled >= 1
    assert reader.modes == {"out": StreamMode.READY, "err": StreamMode.READY}
    expected = [line(i) for i in range(n)] + [b"quiet %d" % i for i in range(5)] + [b"end"]
    assert out_lines(logs_dir, "hot") == expected


@pytest.mark.parametrize(
    ("backlog", "where"), [(100 * 1024, "on the timer"), (900 * 1024, "chasing a full read")]
)
async def test_eof_while_hot_loses_no_line(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
    backlog: int,
    where: str,
) -> None:
    """The child writes ``backlog`` and exits before the reader is attached: the first read
    makes the stream hot, and the next read (on the timer after 100 KiB; at once after a
    full 900 KiB read) meets EOF. Nothing lost, the spool compacted, the state EOF."""
    n = backlog // 100
    fifo_dir, logs_dir = tmp_path / "fifo", tmp_path / "logs"
    pipes = LogPipes(fifo_dir, "ending")
    fds = pipes.prepare()
    proc = spawn(procs, LINES, fds, str(n), "0")
    pipes.close_child_fds()
    await wait_for(lambda: proc.poll() is not None, what="child exit")
    log = ServiceLog("ending", logs_dir, spool_dir=tmp_path / "spool", max_bytes=1 << 40)
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, lambda lines: None)
    try:
        await wait_for(lambda: reader.state is ReaderState.EOF, what=f"EOF {where}")
        assert reader.heated == 1 and reader.cooled == 0
        assert reader.modes["out"] is StreamMode.HOT
        assert log.spool is not None and log.spool.end["out"] == 0  # compacted at EOF
    finally:
        reader.detach()
        log.close()
        pipes.close()
        pipes.remove()
    assert out_lines(logs_dir, "ending") == [line(i) for i in range(n)] + [b"end"]


async def test_only_a_hot_streams_pipe_is_raised_and_only_up_to_the_limit(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """Both pipes start at 64 KiB (as for a daemon over its per-user pipe quota): the stream
    that goes hot is raised to 1 MiB or pipe-max-size, whichever is less; the quiet one is
    left as it is."""
    pipes = LogPipes(tmp_path / "fifo", "sized")
    fds = pipes.prepare()
    for fd in pipes.read_fds:
        fcntl.fcntl(fd, F_SETPIPE_SZ, 64 * 1024)
    proc = spawn(procs, LINES, fds, str(480), "0")  # 48 KiB: fits, and makes a hot read
    pipes.close_child_fds()
    await wait_for(lambda: proc.poll() is not None, what="child exit")
    log = ServiceLog("sized", tmp_path / "logs")
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, lambda lines: None)
    try:
        await wait_for(lambda: reader.state is ReaderState.EOF, what="EOF")
        limit = min(PIPE_SIZE, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
        out_fd, err_fd = pipes.read_fds
        assert reader.modes == {"out": StreamMode.HOT, "err": StreamMode.READY}
        assert pipe_size(out_fd) == limit
        assert pipe_size(err_fd) == 64 * 1024
    finally:
        reader.detach()
        log.close()
        pipes.close()
        pipes.remove()


#: Numbered lines at ~45 MB/s (450 a millisecond, one ``write`` each, cut at a random byte so a
#: line's head often waits in the pipe or spool for its end) until ``stop`` exists; then "end".
PACED = r"""
import os, random, sys, time
stop = sys.argv[1]
n, held = 0, b""
while not os.path.exists(stop):
    for _ in range(450):
        data = held + b"%d " % n + b"y" * 80 + b"\n"
        cut = len(data) - random.randrange(0, 20)
        os.write(1, data[:cut])
        held = data[cut:]
        n += 1
    time.sleep(0.001)
os.write(1, held + b"end %d\n" % n)
"""

#: A daemon's log side on its own: reattach to the FIFOs, recover the spool, read until EOF;
#: touches ``hot`` once the out stream is hot, so the test can kill it then.
MINI_DAEMON = r"""
import asyncio, sys
from pathlib import Path
from runyard.daemon.logs import LogPipes, LogReader, ReaderState, ServiceLog
from runyard.daemon.logs.reader import StreamMode
fifo, logs, spool, hot = map(Path, sys.argv[1:5])

async def main():
    pipes = LogPipes(fifo, "paced")
    pipes.reattach()
    log = ServiceLog("paced", logs, spool_dir=spool, max_bytes=4 << 20, backups=1000)
    reader = LogReader()
    def on_lines(lines):
        if reader.modes["out"] is StreamMode.HOT and not hot.exists():
            hot.touch()
    reader.attach(asyncio.get_running_loop(), pipes, log, on_lines)
    while reader.state is ReaderState.READING:
        await asyncio.sleep(0.01)
    reader.detach()
    log.close()
    pipes.close()

asyncio.run(main())
"""


async def test_kill9_while_hot_loses_no_line(
    tmp_path: Path,
    procs: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    """A daemon killed (-9) while the stream is hot, read on its timer, ten times over: every
    number once, in order, and the rotated files exact."""
    fifo_dir, logs_dir, spool = tmp_path / "fifo", tmp_path / "logs", tmp_path / "spool"
    stop, hot = tmp_path / "stop", tmp_path / "hot"
    pipes = LogPipes(fifo_dir, "paced")
    fds = pipes.prepare()
    child = spawn(procs, PACED, fds, str(stop))
    pipes.close_child_fds()
    pipes.close()  # the mini daemons open the FIFOs; the child's keepers hold the pipes

    def mini() -> subprocess.Popen[bytes]:
        args = [str(fifo_dir), str(logs_dir), str(spool), str(hot)]
        proc = subprocess.Popen([sys.executable, "-c", MINI_DAEMON, *args], start_new_session=True)
        procs.append(proc)
        return proc

    rng = random.Random(os.environ.get("LOGS_HOT_SEED"))
    try:
        for _ in range(10):
            hot.unlink(missing_ok=True)
            proc = mini()
            await wait_for(hot.exists, timeout=30, what="the stream hot in the mini daemon")
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        hot.unlink()
        last = mini()
        # Only once it reads: a child that exits while no reader holds its FIFO takes the
        # pipe's contents with it (a documented limit, not this test's subject).
        await wait_for(hot.exists, timeout=30, what="the last mini daemon reading")
        stop.touch()
        await wait_for(lambda: child.poll() is not None, timeout=30, what="child exit")
        await wait_for(lambda: last.poll() is not None, timeout=30, what="mini daemon at EOF")
        assert last.returncode == 0
    finally:
        pipes.remove()
    texts = out_lines(logs_dir, "paced")
    assert texts[-1].startswith(b"end ")
    total = int(texts[-1].split()[1])
    assert texts[:-1] == [b"%d " % i + b"y" * 80 for i in range(total)]
    files = list((logs_dir / "paced").iterdir())
    assert len(files) > 1 and all(p.stat().st_size <= 4 << 20 for p in files)
