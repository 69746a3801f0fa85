"""Running one engine process: stdin in, stdout and stderr to files, a deadline, no leftovers.

The engine runs in its own session (so its own process group). Its stdout goes to a file, not
a pipe, so a grandchild that keeps stdout open can never hang the runner, and its size is
watched (``max_stdout``). RUN_INPUT bytes are written to its stdin from a helper thread, so an
engine that does not read them cannot block us either. When the engine exits, times out, is
cancelled, or the caller is interrupted, the whole process group is SIGKILLed before the engine
is reaped (so the group id cannot have been reused), and every process it left is gone.

Nothing here uses signal handlers or touches os.environ: it is safe in a worker thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from runyard.runtime.core.nofile import restore_in_child

__all__ = ["EngineCall", "EngineExit", "exit_description", "run_engine"]

_SLICE = 0.1


@dataclass
class EngineCall:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdin: bytes
    stdout_path: Path
    stderr_path: Path
    timeout: float = 600.0
    max_stdout: int = 256 * 1024 * 1024
    cancel: threading.Event | None = field(default=None, repr=False)


@dataclass
class EngineExit:
    #: The exit status; negative: killed by that signal (by us on timeout / cancel / overflow).
    returncode: int
    pid: int
    duration: float
    timed_out: bool = False
    cancelled: bool = False
    stdout_overflow: bool = False


def exit_description(result: EngineExit, timeout: float, max_stdout: int) -> str | None:
    """Why the exit is not a success, in one line; None for exit status 0."""
    if result.timed_out:
        return f"engine timed out after {timeout:g} s (its process group was killed)"
    if result.cancelled:
        return "run cancelled (the engine's process group was killed)"
    if result.stdout_overflow:
        return f"engine wrote more than {max_stdout} bytes on stdout (killed)"
    if result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        return f"engine was killed by {name}"
    if result.returncode != 0:
        return f"engine exited with status {result.returncode}"
    return None


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        stdin.write(data)
    except OSError:
        pass  # the engine closed stdin or exited: its exit status will tell
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_exit(proc: subprocess.Popen[bytes], pidfd: int | None, seconds: float) -> bool:
    """True when the engine has exited (still unreaped when a pidfd is used)."""
    if pidfd is not None:
        # poll, not select: in a daemon of many services the pidfd is past FD_SETSIZE (1,024)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(math.ceil(max(seconds, 0.0) * 1000)))
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def run_engine(call: EngineCall) -> EngineExit:
    """Run the engine to its end; raises OSError when it cannot be started at all."""
    start = time.monotonic()
    with open(call.stdout_path, "wb") as out, open(call.stderr_path, "wb") as err:
        proc = subprocess.Popen(
            call.argv,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            cwd=call.cwd,
            env=call.env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=restore_in_child(),  # the soft RLIMIT_NOFILE a daemon raised, given back
        )
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
    feeder = threading.Thread(target=_feed, args=(proc, call.stdin), daemon=True)
    feeder.start()
    result = EngineExit(returncode=0, pid=proc.pid, duration=0.0)
    deadline = start + call.timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.timed_out = True
                break
            if _wait_exit(proc, pidfd, min(_SLICE, remaining)):
                break
            if call.cancel is not None and call.cancel.is_set():
                result.cancelled = True
                break
            with contextlib.suppress(OSError):
                if os.stat(call.stdout_path).st_size > call.max_stdout:
                    result.stdout_overflow = True
                    break
    finally:
        # The engine is exited-but-unreaped (pidfd) or being killed: its pid and group id
        # cannot be reused yet, so this kills exactly what it left behind.
        _kill_group(proc.pid)
        proc.wait()
        if pidfd is not None:
            os.close(pidfd)
        feeder.join(timeout=10)
    result.returncode = proc.returncode
    result.duration = time.monotonic() - start
    return result
