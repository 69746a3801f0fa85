"""Build real runtime trees of small Python services and run a real daemon on them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from archives import archive_record, make_tar, write_catalog
from runyard import runtime
from runyard.protocol.client import Client, DaemonUnreachable
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

#: A service that says it is up, idles, and exits 0 on SIGTERM.
SLEEPER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("sleeper up", flush=True)
while True:
    time.sleep(0.05)
"""


def program(source: str) -> bytes:
    """A service program run by this very Python, so tests need no python3 on PATH."""
    return f"#!{sys.executable}\n".encode() + textwrap.dedent(source).encode()


#: The directories short_root made; tests/conftest.py removes them when the session ends.
SHORT_ROOTS: list[Path] = []


def short_root() -> Path:
    """A tree under /tmp with a short path, so ipc sockets fit in sun_path without fallback."""
    base = Path(tempfile.mkdtemp(prefix="ry-"))
    SHORT_ROOTS.append(base)
    return base / "rt"


def build_tree(
    root: Path, services: dict[str, str], project: str = "", kinds: dict[str, str] | None = None
) -> RuntimeTree:
    """Install each ``name: source`` as service ``name`` 1.0.0 through the real acquisition path."""
    tree = RuntimeTree(root)
    init_tree(tree)
    repo = root.parent / "repo"
    repo.mkdir(exist_ok=True)
    records = []
    for name, source in services.items():
        archive = make_tar(repo / f"{name}-1.0.0.tar.gz", {f"bin/{name}": program(source)})
        records.append(
            archive_record(archive, name, "1.0.0", kind=(kinds or {}).get(name, "service"))
        )
    write_catalog(repo / "catalog.json", records)
    for i, name in enumerate(services):
        runtime.ensure_service(
            name, "1.0.0", root=root, catalog=str(repo / "catalog.json") if i == 0 else None
        )
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n' + textwrap.dedent(project))
    return tree


def wait_for(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


#: The name of libzmq's I/O thread (it answers heartbeats without the daemon's loop).
ZMQ_IO = "ZMQbg/IO"


def thread_wakeups(pid: int, thread: str = "") -> int:
    """Context switches of every thread of ``pid`` so far (or of those whose name starts with
    ``thread``): each wake-up of a sleeping thread (a timer, a poll, a zmq heartbeat) is one,
    whether or not it then reads anything."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if not (task / "comm").read_text().startswith(thread):
                continue
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                    total += int(line.split()[1])
    return total


def runyard_env() -> dict[str, str]:
    """This process's environment without Runyard's own control variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}


def daemon_refuses(
    root: Path, project_file: Path | None = None, launcher: list[str] | None = None
) -> str:
    """Run the daemon in the foreground; it must exit 1 at once with one line and no traceback.

    ``project_file`` defaults to ``runyard.toml`` beside the tree; ``launcher`` (what runs the
    ``runyard`` command) to ``python -m runyard.daemon``. Returns that line.
    """
    project_file = project_file or root.parent / "runyard.toml"
    launcher = launcher or [sys.executable, "-m", "runyard.daemon"]
    argv = [*launcher, "daemon", "--root", str(root)]
    out = subprocess.run(
        [*argv, "--project", str(project_file)],
        cwd=root.parent,
        env=runyard_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


class Daemon:
    """A real `runyard daemon` process on a tree; stop() also kills anything it left behind."""

    def __init__(self, tree: RuntimeTree, launcher: list[str] | None = None) -> None:
        self.tree = tree
        #: What runs the ``runyard`` command: ``python -m runyard.daemon`` unless a test wraps it.
        self.launcher = launcher or [sys.executable, "-m", "runyard.daemon"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Daemon:
        env = runyard_env()
        self.proc = subprocess.Popen(
            [
                *self.launcher,
                "daemon",
                "--root",
                str(self.tree.root),
                "--project",
                str(self.tree.root.parent / "runyard.toml"),
            ],
            cwd=self.tree.root.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tree.root.parent / "daemon.stderr", "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_for(self._answers, timeout, "the daemon to answer hello")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = (self.tree.root.parent / "daemon.stderr").read_text()
            raise AssertionError(f"daemon exited {self.proc.returncode}: {err[-2000:]}")
        try:
            with Client(self.tree.root, timeout=0.5) as c:
                c.hello()
            return True
        except DaemonUnreachable:
            return False

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.tree.root, timeout=timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def recorded_pgids(self) -> list[int]:
        path = self.tree.temp_dir / "state.json"
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            return [s["pgid"] for s in state["services"].values() if s.get("pgid")]
        return []

    def stop(self) -> None:
        """Shut down gracefully if possible; then make sure nothing of the test is left."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception), Client(self.tree.root, timeout=30) as c:
                c.shutdown()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for pgid in self.recorded_pgids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        remove_tree_cgroups(self.tree.root)
        remove_tree_spools(self.tree.root)


def remove_tree_spools(root: Path) -> None:
    """The tmpfs log spools a daemon of ``root`` left (a test killed it with -9): RAM that
    would otherwise stay taken until the next daemon start sweeps it."""
    from runyard.daemon.logs.spool_home import tmpfs_spool_dir

    shutil.rmtree(tmpfs_spool_dir(root), ignore_errors=True)


def remove_tree_cgroups(root: Path, deadline: float = 10.0) -> None:
    """The cgroups a daemon of ``root`` made and could not remove (a test killed it with -9):
    every process in them killed, then the directories removed."""
    from runyard.daemon import cgroup as cg

    top = cg.CgroupTree.path_for(root)
    if top is None or not top.is_dir():
        return
    end = time.monotonic() + deadline
    for service in [p for p in top.iterdir() if p.is_dir()]:
        cg.kill(service)
        while cg.populated(service) and time.monotonic() < end:
            time.sleep(0.02)
        cg.remove(service)
    cg.remove(top)
