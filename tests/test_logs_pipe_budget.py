"""The daemon's pipe budget (``fifo.PipeBudget``), on the real kernel.

The kernel counts every pipe's pages against its user; a user without CAP_SYS_RESOURCE and
CAP_SYS_ADMIN over pipe-user-pages-soft gets 8 KiB pipes instead of 64 KiB, in every process.
An unprivileged daemon that raised each FIFO to 1 MiB got there after 32 services and degraded
its services' own pipes. The unprivileged cases run in a child that drops to a uid no process
uses (so nothing else counts against it), as the test runs as root; the privileged case runs
here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.daemon.logs import LogPipes
from runyard.daemon.logs.fifo import PIPE_SIZE, pipe_size

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux pipe quotas"),
]

PAGE = os.sysconf("SC_PAGESIZE")
DEFAULT_PIPE_SIZE = 16 * PAGE  # the kernel's PIPE_DEF_BUFFERS: a new pipe's size
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def sysctl(name: str) -> int:
    return int(Path(f"/proc/sys/fs/{name}").read_text())


#: What an unprivileged daemon may raise, in pages: half the lower quota that is set.
QUOTA = min(
    (n for n in map(sysctl, ("pipe-user-pages-soft", "pipe-user-pages-hard")) if n), default=0
)
BUDGET = QUOTA // 2
#: What a raise gives without CAP_SYS_RESOURCE (never above pipe-max-size).
RAISED = min(PIPE_SIZE, sysctl("pipe-max-size"))
#: Services enough that raising every FIFO to 1 MiB (the code before) goes over the soft quota.
SERVICES = QUOTA * PAGE // (2 * PIPE_SIZE) + 8

#: Run as an unused uid: imports first, then the drop (setuid clears the effective caps).
PRELUDE = r"""
import fcntl, json, os, sys
from pathlib import Path
from runyard.daemon.logs import LogPipes
uid, top, n = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(uid)
os.setuid(uid)

def size(fd):
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ

def plain_pipe():
    r, w = os.pipe()
    try:
        return size(r)
    finally:
        os.close(r)
        os.close(w)

services = [LogPipes(top / "fifo", f"svc{i}") for i in range(n)]
for pipes in services:
    pipes.prepare()
    pipes.close_child_fds()
"""

#: The regression: only what the code before had (LogPipes.prepare), so it fails there.
MANY_SERVICES = (
    PRELUDE
    + r"""
sizes = [size(fd) for pipes in services for fd in pipes.read_fds]
plain = plain_pipe()
for pipes in services:
    pipes.close()
    pipes.remove()
print(json.dumps({"sizes": sizes, "plain": plain}))
"""
)

#: The budget's bookkeeping: a hot stream refused then raised once a service is closed, a
#: reattach that counts what a pipe already has.
BOOKKEEPING = (
    PRELUDE
    + r"""
import asyncio, time
from runyard.daemon.logs import LogReader, ReaderState, ServiceLog
from runyard.daemon.logs.fifo import pipe_budget

async def hot_stream(pipes):
    # A read of 48,000 bytes makes the stream hot (LogReader raises a hot stream's pipe).
    child = pipes.prepare()
    os.write(child.stdout, (b"x" * 99 + b"\n") * 480)  # fits a 64 KiB pipe
    pipes.close_child_fds()  # no writer left: EOF after the data
    log = ServiceLog(pipes.service, top / "logs")
    reader = LogReader().attach(asyncio.get_running_loop(), pipes, log, lambda lines: None)
    deadline = time.monotonic() + 20
    while reader.state is not ReaderState.EOF and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    reader.detach()
    log.close()
    return reader.heated, size(pipes.read_fds[0])

budget = pipe_budget()
seen = {"pages": budget.pages, "full": budget.used}
last = services[-1]
seen["heated"], seen["hot_refused"] = asyncio.run(hot_stream(last))
seen["after_hot_refused"] = budget.used
services[0].close()
seen["closed"] = budget.used
seen["hot_raised"] = last.enlarge("out")
seen["hot"] = budget.used
# A daemon restart: the child (its fds, dup'ed here) keeps the pipes while the daemon is gone.
child = services[1].prepare()
held = [os.dup(fd) for fd in (child.stdout, child.stderr, *child.keep)]
services[1].close()
seen["daemon_gone"] = budget.used
again = LogPipes(top / "fifo", "svc1")
again.reattach()
seen["reattached"] = budget.used
seen["reattached_sizes"] = [size(fd) for fd in again.read_fds]
for fd in held:
    os.close(fd)
again.close()
seen["plain"] = plain_pipe()
for pipes in services:
    pipes.close()
    pipes.remove()
seen["end"] = budget.used
print(json.dumps(seen))
"""
)


def unused_uid() -> int:
    """A uid no process runs as (real uid: what the kernel counts pipes by)."""
    used = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    used.add(int(line.split()[1]))
    for uid in range(61000, 61100):
        if uid not in used:
            return uid
    pytest.fail("no unused uid in 61000-61099")


@pytest.fixture
def as_other_uid() -> Iterator[tuple[int, Path]]:
    """An unused uid and a temp dir it owns (in /tmp: pytest's tmp_path is root's 0700)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("dropping to another uid needs root; CI runs as root")
        pytest.skip("dropping to another uid needs root")
    if not QUOTA or SERVICES > 200:
        pytest.skip(f"pipe quota {QUOTA} pages: nothing to show with a few services")
    uid = unused_uid()
    top = Path(tempfile.mkdtemp(prefix="runyard-pipe-budget-"))
    try:
        os.chown(top, uid, uid)
        yield uid, top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def run_as(uid: int, top: Path, script: str, services: int = SERVICES) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, str(uid), str(top), str(services)],
        capture_output=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def test_an_unprivileged_daemon_with_many_services_leaves_its_users_pipes_at_64k(
    as_other_uid: tuple[int, Path],
) -> None:
    """The regression: before, every FIFO was raised, the user went over pipe-user-pages-soft
    after 64 of them, and every later pipe of that user (FIFOs and a service's own) was 8 KiB."""
    seen = run_as(*as_other_uid, MANY_SERVICES)
    sizes = seen["sizes"]
    assert seen["plain"] == DEFAULT_PIPE_SIZE
    assert len(sizes) == 2 * SERVICES
    assert set(sizes) <= {RAISED, DEFAULT_PIPE_SIZE}, "a FIFO below 64 KiB: over the quota"
    assert sizes == sorted(sizes, reverse=True), "the first services' FIFOs are the raised ones"
    raised = sum(size // PAGE for size in sizes if size > DEFAULT_PIPE_SIZE)
    assert BUDGET - PIPE_SIZE // PAGE < raised <= BUDGET


def test_the_budget_is_given_back_by_a_closed_service_and_counted_at_a_reattach(
    as_other_uid: tuple[int, Path],
) -> None:
    seen = run_as(*as_other_uid, BOOKKEEPING)
    pair = 2 * RAISED // PAGE  # a raised service's two FIFOs
    assert seen["pages"] == BUDGET
    assert BUDGET - PIPE_SIZE // PAGE < seen["full"] <= BUDGET
    assert seen["heated"] == 1
    assert seen["hot_refused"] == DEFAULT_PIPE_SIZE  # a hot stream obeys the same budget
    assert seen["after_hot_refused"] == seen["full"]
    assert seen["closed"] == seen["full"] - pair
    assert seen["hot_raised"] == RAISED
    assert seen["hot"] == seen["closed"] + RAISED // PAGE
    assert seen["daemon_gone"] == seen["hot"] - pair
    assert seen["reattached_sizes"] == [RAISED, RAISED]
    assert seen["reattached"] == seen["hot"]
    assert seen["plain"] == DEFAULT_PIPE_SIZE
    assert seen["end"] == 0


def test_a_privileged_daemon_raises_every_fifo(tmp_path: Path) -> None:
    """Root with CAP_SYS_ADMIN or CAP_SYS_RESOURCE is exempt from the quota: no budget, every
    FIFO raised as before; closing the services gives back what they booked."""
    from runyard.daemon.logs.fifo import pipe_budget  # imported here: main had none (a test)

    budget = pipe_budget()
    if budget.pages is not None:
        pytest.skip("this process is not exempt from the pipe quota (no CAP_SYS_*)")
    before, trials = budget.used, budget.trials
    services = [LogPipes(tmp_path / "fifo", f"svc{i}") for i in range(SERVICES)]
    try:
        for pipes in services:
            pipes.prepare()
            pipes.close_child_fds()
        sizes = [pipe_size(fd) for pipes in services for fd in pipes.read_fds]
        assert min(sizes) >= RAISED
        assert budget.used - before == sum(size // PAGE for size in sizes)
        assert budget.trials == trials, "no trial raise where the kernel sets no limit on us"
    finally:
        for pipes in services:
            pipes.close()
            pipes.remove()
    assert budget.used == before


#: The user's other process: pipes raised to 1 MiB until what is left is the FIFOs of
#: SERVICES services and 4 MiB ("pipes"), or another daemon's 40 services ("daemon"). It says
#: "ready" and holds them until its stdin closes.
HOG = r"""
import fcntl, os, sys
from pathlib import Path
uid, top, n, kind, left = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
from runyard.daemon.logs import LogPipes
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
held = []
if kind == "pipes":
    soft = int(Path("/proc/sys/fs/pipe-user-pages-soft").read_text())
    raised = int(sys.argv[6])
    for _ in range((soft - left) // raised):
        r, w = os.pipe()
        fcntl.fcntl(r, 1031, raised * os.sysconf("SC_PAGESIZE"))
        held += [r, w]
else:
    held = [LogPipes(top / "hog", f"hog{i}") for i in range(n)]
    for pipes in held:
        pipes.prepare()
        pipes.close_child_fds()
print("ready", flush=True)
sys.stdin.read()
"""

#: The daemon, after the hog: SERVICES services' FIFOs, then what a new pipe of the user gets.
AFTER_HOG = (
    PRELUDE
    + r"""
from runyard.daemon.logs.fifo import pipe_budget
budget = pipe_budget()
seen = {"sizes": [size(fd) for pipes in services for fd in pipes.read_fds]}
seen["plain"] = [plain_pipe()]
more = [os.pipe() for _ in range(14)]  # the room kept: 255 pages, 15 new pipes of 64 KiB
seen["plain"] += [size(r) for r, w in more]
for fd in (fd for pair in more for fd in pair):
    os.close(fd)
seen["trials"] = getattr(budget, "trials", None)
seen["given_back"] = getattr(budget, "given_back", None)
seen["squeezed"] = getattr(budget, "squeezed", None)
services[0].close()  # a service's pipes given back: a raise may be tried again
seen["released"] = getattr(budget, "squeezed", None)
for pipes in services:
    pipes.close()
    pipes.remove()
seen["end"] = budget.used
print(json.dumps(seen))
"""
)


@pytest.mark.parametrize("hog", ["pipes", "daemon"])
def test_a_daemon_leaves_room_for_the_pipes_its_users_other_processes_hold(
    as_other_uid: tuple[int, Path], hog: str
) -> None:
    """The regression: the budget was per daemon, blind to the user's other pipes. With
    another process of the user holding pipes raised to 1 MiB ("pipes": all but the FIFOs
    and 4 MiB; "daemon": a second daemon's 40 services), a daemon raised its FIFOs until the
    kernel refused, the user was at pipe-user-pages-soft, and its later FIFOs and every new
    pipe of the user were 8 KiB. Now a raise is kept only while the user could still raise one
    more (the kernel's own figure, from a trial raise), and new FIFOs make our raised ones
    yield."""
    uid, top = as_other_uid
    left = 2 * SERVICES * DEFAULT_PIPE_SIZE // PAGE + 4 * PIPE_SIZE // PAGE
    argv = [str(uid), str(top), str(SERVICES), hog, str(left), str(RAISED // PAGE)]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOG, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line == b"ready\n", holder.stderr.read().decode() if holder.stderr else line
        seen = run_as(uid, top, AFTER_HOG)
    finally:
        holder.kill()
        holder.communicate(timeout=20)
    assert seen["plain"] == [DEFAULT_PIPE_SIZE] * 15, "the user's new pipes are 8 KiB"
    assert min(seen["sizes"]) == DEFAULT_PIPE_SIZE, "a FIFO below 64 KiB: over the quota"
    assert seen["trials"] > 0
    if hog == "pipes":  # what the hog left beyond the reserve was taken, then given back
        assert max(seen["sizes"]) == RAISED
        assert seen["given_back"] > 0
        assert seen["squeezed"] is True
    assert seen["released"] is False
    assert seen["end"] == 0


#: Services enough that a full budget plus the others' unraised FIFOs pass the soft limit.
CROWD = (QUOTA - BUDGET) * PAGE // (2 * DEFAULT_PIPE_SIZE) + BUDGET * PAGE // (2 * PIPE_SIZE) + 8


def test_a_lone_daemon_with_hundreds_of_services_gives_its_raised_pipes_back(
    as_other_uid: tuple[int, Path],
) -> None:
    """The regression: with its budget full, a daemon's later FIFOs (16 pages each, unraised)
    took the user to its soft limit past about 270 services, and its last FIFOs and every new
    pipe of the user were 8 KiB. Now its raised pipes yield to the new FIFOs."""
    uid, top = as_other_uid
    seen = run_as(uid, top, AFTER_HOG, CROWD)
    assert min(seen["sizes"]) == DEFAULT_PIPE_SIZE, "a FIFO below 64 KiB: over the quota"
    assert seen["plain"] == [DEFAULT_PIPE_SIZE] * 15
    assert seen["given_back"] > 0
    assert seen["end"] == 0


def test_an_exempt_budget_lists_no_raised_pipes(tmp_path: Path) -> None:
    """The regression: where the kernel sets no limit on us (a privileged daemon) the budget
    still listed every raised pipe, two per service, and make_room copied that list at each
    start only to ask a trial that answers True at once: 23 us a start at 500 services, and
    growing with them (quadratic over a cold start). Now nothing is listed there."""
    from runyard.daemon.logs.fifo import PipeBudget

    budget = PipeBudget(None)
    services = [LogPipes(tmp_path / "fifo", f"svc{i}") for i in range(3)]
    for pipes in services:
        for stream in ("out", "err"):
            budget.hold(pipes, stream, PIPE_SIZE)
    assert budget._raised == {}
    budget.make_room()
    assert budget.trials == 0
    limited = PipeBudget(BUDGET or 8192)
    limited.hold(services[0], "out", PIPE_SIZE)
    assert list(limited._raised) == [(services[0], "out")]  # where pipes can be given back


#: A daemon squeezed by the hog; once the hog is gone (stdin says so) and the squeeze is over,
#: 4 more services: their FIFOs are raised again.
SQUEEZE_ENDS = (
    r"""
import runyard.daemon.logs.fifo as fifo
fifo.SQUEEZE_SECS = 0.3
"""
    + PRELUDE
    + r"""
import time
budget = fifo.pipe_budget()
print(json.dumps({"squeezed": budget.squeezed}), flush=True)
sys.stdin.readline()  # the hog is gone
deadline = time.monotonic() + 10
while budget.squeezed and time.monotonic() < deadline:
    time.sleep(0.05)
later = [LogPipes(top / "fifo", f"later{i}") for i in range(4)]
for pipes in later:
    pipes.prepare()
    pipes.close_child_fds()
seen = {"squeezed": budget.squeezed, "sizes": [size(fd) for p in later for fd in p.read_fds]}
for pipes in services + later:
    pipes.close()
    pipes.remove()
seen["end"] = budget.used
print(json.dumps(seen), flush=True)
"""
)


def test_a_squeeze_ends_once_the_users_other_pipes_are_gone(
    as_other_uid: tuple[int, Path],
) -> None:
    """Found by review: ``squeezed`` was cleared only when one of our services closed its
    read ends (a reload removing it), not by a stop or restart; so one brief shortage of the
    user's pages kept every later FIFO and hot stream at 64 KiB for the daemon's life, the
    user's pages long free again. Now a squeeze lasts SQUEEZE_SECS, then a raise tries again."""
    uid, top = as_other_uid
    left = 2 * SERVICES * DEFAULT_PIPE_SIZE // PAGE + 4 * PIPE_SIZE // PAGE
    argv = [str(uid), str(top), str(SERVICES), "pipes", str(left), str(RAISED // PAGE)]
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    daemon = None
    try:
        assert hog.stdout is not None and hog.stdout.readline() == b"ready\n"
        daemon = subprocess.Popen(
            [sys.executable, "-c", SQUEEZE_ENDS, str(uid), str(top), str(SERVICES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert daemon.stdout is not None and daemon.stdin is not None
        first = daemon.stdout.readline()
        assert json.loads(first or b"null") == {"squeezed": True}, daemon.stderr
        hog.kill()
        hog.communicate(timeout=20)
        out, err = daemon.communicate(b"gone\n", timeout=40)
        assert daemon.returncode == 0, err.decode()
        seen = json.loads(out)
    finally:
        for proc in (hog, daemon):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=20)
    assert seen["squeezed"] is False
    assert seen["sizes"] == [RAISED] * 8, "the later FIFOs were not raised again"
    assert seen["end"] == 0


#: A budget whose trial cannot make its gauge for want of descriptors (EMFILE): says nothing
#: about the user's pages.
OUT_OF_FDS = r"""
import os, resource
from runyard.daemon.logs.fifo import PipeBudget
budget = PipeBudget(1000)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print(budget.leaves_room(1 << 20))
"""


def test_a_trial_out_of_descriptors_is_not_read_as_no_room() -> None:
    """Found by review: any error of a trial read as "no room", so a daemon out of file
    descriptors when it first made its gauge pipe gave back every raised pipe and stayed
    squeezed. Only EPERM (and ENFILE/ENOMEM: no pipe for the user) means no room."""
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FDS], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.strip() == b"True"
