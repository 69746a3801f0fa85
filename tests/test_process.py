"""The process layer against real processes: spawn, reaping, adoption and whole-tree stops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest

from runyard.daemon.process import (
    ProcessHandle,
    SpawnError,
    adopt,
    descendants,
    group_members,
    signal_group,
    spawn,
    stop_process,
    wait_exit,
)

pytestmark = pytest.mark.timeout(30)


class Leftovers:
    """Every process a test starts, killed and reaped at teardown whatever the test did."""

    def __init__(self) -> None:
        self.handles: list[ProcessHandle] = []
        self.procs: list[psutil.Process] = []

    def handle(self, handle: ProcessHandle) -> ProcessHandle:
        self.handles.append(handle)
        return handle

    def pid(self, pid: int) -> int:
        with contextlib.suppress(psutil.NoSuchProcess):
            self.procs.append(psutil.Process(pid))  # remembers the start time: kill() checks it
        return pid

    async def kill_all(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pgid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        for handle in self.handles:
            if handle.own_child:  # reaped through the module, which keeps Popen informed
                await asyncio.wait_for(wait_exit(handle), 10)


@pytest.fixture
async def leftovers() -> AsyncIterator[Leftovers]:
    tracker = Leftovers()
    try:
        yield tracker
    finally:
        await tracker.kill_all()


@pytest.fixture
def start(leftovers: Leftovers, tmp_path: Path) -> Callable[..., ProcessHandle]:
    """Spawn ``python -c code`` in tmp_path with the output going to /dev/null."""

    def start(code: str, **kwargs: object) -> ProcessHandle:
        with open(os.devnull, "wb") as devnull:
            options: dict = {
                "env": dict(os.environ),
                "cwd": tmp_path,
                "stdout": devnull.fileno(),
                "stderr": devnull.fileno(),
            }
            options.update(kwargs)
            argv = [sys.executable, "-c", textwrap.dedent(code)]
            return leftovers.handle(spawn(argv, **options))

    return start


async def until(check: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


async def read_pids(path: Path, count: int) -> list[int]:
    """The first ``count`` pids a child wrote, one per line, into ``path``."""

    def ready() -> list[int] | None:
        lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        complete = [int(line) for line in lines if line.endswith("\n")]
        return complete[:count] if len(complete) >= count else None

    return await until(ready)  # type: ignore[return-value]


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    """Bytes read from ``fd`` until ``needle`` shows up (or EOF); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    data = b""
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"{needle!r} not read within {timeout}s; got {data!r}")
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def not_our_zombie(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


# A child that forks one grandchild; GRANDCHILD runs in the grandchild before it reports its pid.
FORKER = """
    import os, signal, sys, time
    pid = os.fork()
    if pid == 0:
        {grandchild}
        with open("pids", "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
"""


# --- spawn -------------------------------------------------------------------------------------


async def test_spawn_runs_in_own_session_with_env_cwd_and_fds(
    start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_TEST_PARENT_ONLY", "1")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    keep_r, keep_w = os.pipe()
    stray_r, stray_w = os.pipe()
    os.set_inheritable(stray_w, True)  # would leak without close_fds
    workdir = tmp_path / "work"
    workdir.mkdir()
    try:
        handle = start(
            f"""
            import os, sys, time
            print(os.environ.get("SPAWN_MARK"), os.environ.get("RUNYARD_TEST_PARENT_ONLY"))
            print(os.getcwd())
            print(os.getsid(0), os.getpgid(0), repr(sys.stdin.read()))
            os.fstat({keep_w})
            os.write({keep_w}, b"kept")
            try:
                os.fstat({stray_w})
                print("stray open")
            except OSError:
                print("stray closed")
            print("to stderr", file=sys.stderr, flush=True)
            print("done", flush=True)
            time.sleep(60)
            """,
            env={"SPAWN_MARK": "marked"},
            cwd=str(workdir),
            stdout=out_w,
            stderr=err_w,
            keep_fds=[keep_w],
        )
        out = read_until(out_r, b"done\n").decode()
        assert os.getsid(handle.pid) == handle.pid
        assert os.getpgid(handle.pid) == handle.pid == handle.pgid
        assert handle.own_child
        assert abs(handle.create_time - psutil.Process(handle.pid).create_time()) < 0.01
        lines = out.splitlines()
        assert lines[0] == "marked None"
        assert lines[1] == os.path.realpath(workdir)
        assert lines[2] == f"{handle.pid} {handle.pid} ''"
        assert lines[3] == "stray closed"
        assert read_until(err_r, b"to stderr\n") == b"to stderr\n"
        assert read_until(keep_r, b"kept") == b"kept"
        result = await stop_process(handle, stop_timeout=5)
        assert result.exit_code == -signal.SIGTERM
    finally:
        for fd in (out_r, out_w, err_r, err_w, keep_r, keep_w, stray_r, stray_w):
            os.close(fd)


async def test_spawn_missing_program_is_a_one_line_spawn_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-program")
    with pytest.raises(SpawnError) as caught:
        spawn([missing, "--flag"], env={}, cwd=tmp_path, stdout=1, stderr=2)
    message = str(caught.value)
    assert "\n" not in message
    assert missing in message
    assert "No such file or directory" in message


async def test_spawn_not_executable_is_a_spawn_error(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(SpawnError, match="Permission denied"):
        spawn([str(script)], env={}, cwd=tmp_path, stdout=1, stderr=2)


async def test_spawn_missing_cwd_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="working directory") as caught:
        spawn([sys.executable], env={}, cwd=tmp_path / "nowhere", stdout=1, stderr=2)
    assert sys.executable in str(caught.value)


async def test_spawn_empty_argv_is_a_spawn_error(tmp_path: Path) -> None:
    with pytest.raises(SpawnError):
        spawn([], env={}, cwd=tmp_path, stdout=1, stderr=2)


# --- wait_exit ---------------------------------------------------------------------------------


async def test_wait_exit_returns_exit_code_and_reaps(start) -> None:
    handle = start("import sys; sys.exit(3)")
    assert await asyncio.wait_for(wait_exit(handle), 10) == 3
    assert not_our_zombie(handle.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(handle.pid, os.WNOHANG)
    assert not psutil.pid_exists(handle.pid)
    assert await wait_exit(handle) == 3  # asked again: the status was kept


async def test_wait_exit_reports_signal_death_as_negative(start) -> None:
    handle = start("import time; time.sleep(60)")
    waiter = asyncio.ensure_future(wait_exit(handle))
    await asyncio.sleep(0)
    os.kill(handle.pid, signal.SIGKILL)
    assert await asyncio.wait_for(waiter, 10) == -signal.SIGKILL
    assert not_our_zombie(handle.pid)


async def test_wait_exit_many_waiters_see_one_reap(start) -> None:
    handle = start("import time; time.sleep(0.2); raise SystemExit(7)")
    codes = await asyncio.wait_for(asyncio.gather(*(wait_exit(handle) for _ in range(3))), 10)
    assert codes == [7, 7, 7]


async def test_wait_exit_status_survives_popen_bookkeeping(start) -> None:
    # Popen reaps abandoned children on the next Popen(); it must not steal our status.
    handle = start("raise SystemExit(5)")
    await until(lambda: psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE)
    gc.collect()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert await asyncio.wait_for(wait_exit(handle), 10) == 5


async def test_wait_exit_cancelled_then_waited_again(start) -> None:
    handle = start("import time; time.sleep(60)")
    waiter = asyncio.ensure_future(wait_exit(handle))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    os.kill(handle.pid, signal.SIGTERM)
    assert await asyncio.wait_for(wait_exit(handle), 10) == -signal.SIGTERM


# --- stop_process ------------------------------------------------------------------------------


async def test_stop_kills_grandchild_that_ignores_sigterm(start, leftovers, tmp_path) -> None:
    handle = start(FORKER.format(grandchild="signal.signal(signal.SIGTERM, signal.SIG_IGN)"))
    [grandchild] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(grandchild)
    assert os.getpgid(grandchild) == handle.pgid
    assert sorted(group_members(handle.pgid)) == sorted([handle.pid, grandchild])

    result = await stop_process(handle, stop_timeout=0.5, kill_timeout=5)

    assert result.killed
    assert result.survivors == []
    assert (
        result.exit_code == -signal.SIGTERM
    )  # the leader went on SIGTERM; only the grandchild held on
    assert 0.5 <= result.duration < 5
    assert group_members(handle.pgid) == []
    assert gone(grandchild)
    assert not_our_zombie(handle.pid)


async def test_stop_kills_descendant_that_left_the_group(start, leftovers, tmp_path) -> None:
    handle = start(
        FORKER.format(grandchild="os.setsid(); signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    )
    [grandchild] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(grandchild)
    assert os.getpgid(grandchild) == grandchild != handle.pgid
    assert grandchild in [pid for pid, _ in descendants(handle.pid)]

    result = await stop_process(handle, stop_timeout=0.5, kill_timeout=5)

    assert result.killed
    assert result.survivors == []
    assert gone(grandchild)
    assert group_members(handle.pgid) == []


async def test_stop_sends_stop_signal_to_descendant_outside_the_group(
    start, leftovers, tmp_path
) -> None:
    handle = start(FORKER.format(grandchild="os.setsid()"))
    [grandchild] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(grandchild)

    result = await stop_process(handle, stop_timeout=10)

    assert not result.killed  # SIGTERM reached it although killpg could not
    assert result.duration < 5
    assert gone(grandchild)


async def test_stop_catches_a_descendant_forked_while_stopping(start, leftovers, tmp_path) -> None:
    # On SIGTERM the leader forks a helper that leaves the group and ignores SIGTERM.
    handle = start(
        """
        import os, signal, time
        def on_term(*_):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the helper inherits it from birth
            if os.fork() == 0:
                os.setsid()
                with open("pids", "a") as f:
                    f.write(f"{os.getpid()}\\n")
                time.sleep(60)
                os._exit(0)
            time.sleep(60)
        signal.signal(signal.SIGTERM, on_term)
        open("ready", "w").close()
        time.sleep(60)
        """
    )
    await until(lambda: (tmp_path / "ready").exists())

    result = await stop_process(handle, stop_timeout=1, kill_timeout=5)
    [helper] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(helper)

    assert result.killed
    assert result.survivors == []
    assert result.exit_code == -signal.SIGKILL
    assert gone(helper)


async def test_stop_prompt_exit_on_sigterm_is_not_killed(start) -> None:
    handle = start("import time; time.sleep(60)")
    result = await stop_process(handle, stop_timeout=10)
    assert not result.killed
    assert result.exit_code == -signal.SIGTERM
    assert result.survivors == []
    assert result.duration < 5
    assert not_our_zombie(handle.pid)


async def test_stop_child_handling_sigterm_reports_its_own_code(start, tmp_path) -> None:
    handle = start(
        """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        open("ready", "w").close()
        time.sleep(60)
        """
    )
    await until(lambda: (tmp_path / "ready").exists())
    result = await stop_process(handle)
    assert (result.exit_code, result.killed) == (0, False)


async def test_stop_signal_is_respected(start, tmp_path) -> None:
    handle = start(
        """
        import signal, sys, time
        def mark(name):
            def handler(*_):
                with open("marker", "a") as f:
                    f.write(name)
                sys.exit(0)
            return handler
        signal.signal(signal.SIGINT, mark("INT"))
        signal.signal(signal.SIGTERM, mark("TERM"))
        open("ready", "w").close()
        time.sleep(60)
        """
    )
    await until(lambda: (tmp_path / "ready").exists())
    result = await stop_process(handle, stop_signal=signal.SIGINT, stop_timeout=10)
    assert (result.exit_code, result.killed) == (0, False)
    assert (tmp_path / "marker").read_text() == "INT"


async def test_stop_continues_a_stopped_process(start) -> None:
    handle = start("import time; time.sleep(60)")
    os.kill(handle.pid, signal.SIGSTOP)
    await until(lambda: psutil.Process(handle.pid).status() == psutil.STATUS_STOPPED)
    result = await stop_process(handle, stop_timeout=10)
    assert (result.exit_code, result.killed) == (-signal.SIGTERM, False)


async def test_stop_and_wait_exit_share_the_status(start) -> None:
    handle = start("import time; time.sleep(60)")
    waiter = asyncio.ensure_future(wait_exit(handle))
    result = await stop_process(handle, stop_timeout=10)
    assert await asyncio.wait_for(waiter, 10) == result.exit_code == -signal.SIGTERM


async def test_stop_after_exit_returns_at_once(start) -> None:
    handle = start("raise SystemExit(4)")
    assert await asyncio.wait_for(wait_exit(handle), 10) == 4
    result = await stop_process(handle, stop_timeout=10)
    assert (result.exit_code, result.killed, result.survivors) == (4, False, [])
    assert result.duration < 1


# --- adopt -------------------------------------------------------------------------------------


async def test_adopt_recognises_the_same_process_only(start) -> None:
    handle = start("import time; time.sleep(60)")
    adopted = adopt(handle.pid, handle.create_time, handle.pgid)
    assert adopted == ProcessHandle(handle.pid, handle.pgid, handle.create_time, own_child=False)
    assert adopt(handle.pid, handle.create_time - 5, handle.pgid) is None  # a recycled pid
    assert adopt(handle.pid, handle.create_time, handle.pgid + 1) is None
    await stop_process(handle)


async def test_adopt_refuses_dead_and_zombie_processes(start) -> None:
    handle = start("raise SystemExit(0)")
    await until(lambda: psutil.Process(handle.pid).status() == psutil.STATUS_ZOMBIE)
    assert adopt(handle.pid, handle.create_time, handle.pgid) is None
    assert await asyncio.wait_for(wait_exit(handle), 10) == 0
    assert adopt(handle.pid, handle.create_time, handle.pgid) is None


async def test_wait_exit_on_adopted_process_returns_none(start) -> None:
    handle = start("import time; time.sleep(60)")
    adopted = adopt(handle.pid, handle.create_time, handle.pgid)
    assert adopted is not None
    waiter = asyncio.ensure_future(wait_exit(adopted))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    os.kill(handle.pid, signal.SIGKILL)
    assert await asyncio.wait_for(waiter, 10) is None
    # Reaping is left to the real parent.
    assert await asyncio.wait_for(wait_exit(handle), 10) == -signal.SIGKILL


async def test_stop_adopted_process_kills_its_tree(start, leftovers, tmp_path) -> None:
    handle = start(FORKER.format(grandchild="signal.signal(signal.SIGTERM, signal.SIG_IGN)"))
    [grandchild] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(grandchild)
    adopted = adopt(handle.pid, handle.create_time, handle.pgid)
    assert adopted is not None

    result = await stop_process(adopted, stop_timeout=0.5, kill_timeout=5)

    assert (result.exit_code, result.killed, result.survivors) == (None, True, [])
    assert gone(grandchild)
    assert await asyncio.wait_for(wait_exit(handle), 10) == -signal.SIGTERM


# --- groups and trees --------------------------------------------------------------------------


async def test_signal_group_and_members(start) -> None:
    handle = start("import time; time.sleep(60)")
    assert group_members(handle.pgid) == [handle.pid]
    assert descendants(handle.pid) == []
    assert signal_group(handle, signal.SIGKILL)
    assert await asyncio.wait_for(wait_exit(handle), 10) == -signal.SIGKILL
    assert group_members(handle.pgid) == []
    assert not signal_group(handle, signal.SIGTERM)
    assert descendants(handle.pid) == []


async def test_descendants_carry_create_time(start, leftovers, tmp_path) -> None:
    handle = start(FORKER.format(grandchild="pass"))
    [grandchild] = await read_pids(tmp_path / "pids", 1)
    leftovers.pid(grandchild)
    [(pid, create_time)] = descendants(handle.pid)
    assert pid == grandchild
    assert abs(create_time - psutil.Process(grandchild).create_time()) < 0.01
    await stop_process(handle)
