"""The CLI and the daemon process as the world meets them: a reader that leaves early, a daemon
a process list that says what the daemon is.

Real daemons, real pipes, real `runyard` subprocesses; each test stops what it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, runyard_env, short_root, wait_for

from runyard.protocol.client import AsyncClient, DaemonUnreachable
from runyard.runtime.core.tree import RuntimeTree

#: Prints 1,000 lines of 200 bytes (more than a pipe holds), then idles until TERM.
CHATTY = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
for i in range(1000):
    print(f"{i:06d} " + "x" * 193, flush=True)
while True:
    time.sleep(0.05)
"""


def runyard(cwd: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", *args], cwd=cwd, env=runyard_env(), **kw
    )


@pytest.fixture
def tree() -> RuntimeTree:
    root = short_root()
    return build_tree(
        root,
        {"chatty": CHATTY, "web": SLEEPER},
    )


def _logs_full(daemon) -> bool:
    with daemon.client() as c:
        return len(c.logs_tail("chatty", n=1000).lines) == 1000


@pytest.mark.timeout(90)
def test_daemon_process_title_is_runyard_daemon_root(tree: RuntimeTree, daemons) -> None:
    d = daemons(tree).start()
    cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes()
    title = cmdline.split(b"\0")[0].decode()
    assert title == f"runyard daemon {tree.root}", cmdline
    ps = subprocess.run(
        ["ps", "-o", "args=", "-p", str(d.proc.pid)], capture_output=True, text=True, check=True
    )
    assert ps.stdout.strip() == f"runyard daemon {tree.root}"


@pytest.mark.timeout(90)
def test_logs_into_a_pipe_closed_early_ends_quietly(tree: RuntimeTree, daemons) -> None:
    """`runyard logs chatty -n 1000 | head -1`: 200 KB into a 64 KiB pipe whose reader leaves."""
    d = daemons(tree).start()
    wait_for(lambda: _logs_full(d), 30, "chatty's 1,000 lines")
    proc = runyard(
        tree.root.parent,
        "logs",
        "chatty",
        "-n",
        "1000",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.strip().endswith(b"x" * 193)
    proc.stdout.close()  # head -1 exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0, err
    assert err == ""


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "args",
    [
        ("status", "--json"),
        ("status",),
        ("logs", "web"),
        ("runs", "--json"),
        ("runtime", "ls"),
        ("audit", "show"),
    ],
    ids=lambda a: " ".join(a),
)
def test_read_commands_into_a_closed_pipe_exit_0_quietly(
    tree: RuntimeTree,
    daemons,
    args: tuple[str, ...],
) -> None:
    d = daemons(tree).start()
    wait_for(lambda: _logs_full(d), 30, "chatty's 1,000 lines")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        proc = runyard(tree.root.parent, *args, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert err == b""


@pytest.mark.timeout(90)
def test_logs_follow_ends_when_its_reader_leaves_without_new_lines(
    tree: RuntimeTree,
    daemons,
) -> None:
    """`runyard logs -f web | head -1`: web prints one line and no more; -f must not hang."""
    daemons(tree).start()
    proc = runyard(
        tree.root.parent,
        "logs",
        "web",
        "-f",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert b"sleeper up" in proc.stdout.readline()
    proc.stdout.close()
    began = time.monotonic()
    assert proc.wait(timeout=10) == 0, proc.stderr.read().decode()
    assert time.monotonic() - began < 5
    assert proc.stderr.read() == b""


#: Ignores SIGTERM: a stop waits its whole stop_timeout.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("stubborn up", flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.timeout(120)
def test_stop_exits_3_within_2s_when_the_daemon_dies_under_it(daemons) -> None:
    root = short_root()
    tree = build_tree(root, {"stubborn": STUBBORN}, "[services.stubborn]\nstop_timeout = 60\n")
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["stubborn"]).services[0].state == "running", 20, "running")
    proc = runyard(root.parent, "stop", "stubborn", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with d.client() as c:
        wait_for(lambda: c.status(["stubborn"]).services[0].state == "stopping", 20, "stopping")
    d.kill9()
    died = time.monotonic()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    waited = time.monotonic() - died
    assert proc.returncode == 3, err.decode()
    assert waited < 2.5, waited
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "went away while stop waited" in lines[0], lines
    for pgid in d.recorded_pgids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.timeout(120)
async def test_async_client_requests_end_within_2s_when_the_daemon_dies_under_them(
    daemons,
) -> None:
    """AsyncClient had no watch on its link: a waiting call outlived the daemon by its timeout
    (60 s for a stop). Every request then in flight must end, each naming itself."""
    root = short_root()
    tree = build_tree(root, {"stubborn": STUBBORN}, "[services.stubborn]\nstop_timeout = 60\n")
    d = daemons(tree).start()
    async with AsyncClient(tree.root, timeout=10) as c:
        deadline = time.monotonic() + 20
        while (await c.status(["stubborn"])).services[0].state != "running":
            assert time.monotonic() < deadline, "stubborn never ran"
            await asyncio.sleep(0.05)
        calls = [
            asyncio.create_task(c.stop(["stubborn"])),
            asyncio.create_task(c.restart(["stubborn"])),
        ]
        while (await c.status(["stubborn"])).services[0].state != "stopping":
            assert time.monotonic() < deadline, "stubborn never stopping"
            await asyncio.sleep(0.05)
        assert not any(call.done() for call in calls)
        d.kill9()
        died = time.monotonic()
        done, _ = await asyncio.wait(calls, timeout=10)
        waited = time.monotonic() - died
        assert len(done) == 2 and waited < 2.5, waited
        for call, op in zip(calls, ("stop", "restart"), strict=True):
            with pytest.raises(DaemonUnreachable, match=rf"went away while {op} waited"):
                call.result()
    for pgid in d.recorded_pgids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
