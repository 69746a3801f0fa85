"""File locking: one helper (runtime/core/locking.py), its contract against a real second process.

Finding (issue 11): five hand-written copies of flock (the daemon lock, tree locks, the audit
log, staging dirs, the wheel cache), each with its own open flags and error handling. They now
all go through ``FileLock`` / ``lock_fd``; no other module calls flock or lockf.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runyard.runtime.core.locking import FileLock, LockBusy, tree_lock
from runyard.runtime.core.tree import RuntimeTree

REPO = Path(__file__).resolve().parent.parent

#: Takes the lock, says so, and holds it until its stdin closes.
HOLDER = """
import sys
from runyard.runtime.core.locking import FileLock
lock = FileLock(sys.argv[1], shared=sys.argv[2] == "shared", record_holder=sys.argv[2] != "shared")
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


class Holder:
    """A real second process holding the lock on ``path`` until ``release()``."""

    def __init__(self, path: Path, how: str = "exclusive") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), how],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"  # blocks until the child holds it

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


@pytest.fixture
def held(tmp_path: Path):
    path = tmp_path / "x.lock"
    holder = Holder(path)
    try:
        yield path, holder
    finally:
        holder.release()


@pytest.mark.timeout(30)
def test_a_lock_held_elsewhere_is_one_line_naming_the_holder(held) -> None:
    path, holder = held
    with pytest.raises(LockBusy) as info:
        FileLock(path, timeout=0).acquire()
    assert str(info.value) == f"{path}: locked by pid {holder.proc.pid}"
    assert info.value.holder == str(holder.proc.pid)
    assert FileLock(path).try_acquire() is False


@pytest.mark.timeout(30)
def test_a_timeout_waits_that_long_then_says_so(held) -> None:
    path, holder = held
    began = time.monotonic()
    with pytest.raises(LockBusy, match=rf"locked by pid {holder.proc.pid} after waiting 0\.3s$"):
        FileLock(path, timeout=0.3).acquire()
    assert 0.3 <= time.monotonic() - began < 5


@pytest.mark.timeout(30)
def test_a_waiter_gets_the_lock_once_the_holder_lets_go(held) -> None:
    path, holder = held
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from runyard.runtime.core.locking import FileLock\n"
            "with FileLock(sys.argv[1], timeout=20): print('got it')",
            str(path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.release()
    out, _ = waiter.communicate(timeout=25)
    assert (waiter.returncode, out) == (0, "got it\n")


@pytest.mark.timeout(30)
def test_the_holder_dying_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = Holder(path)
    holder.proc.kill()
    holder.proc.wait(timeout=10)
    with FileLock(path, timeout=0) as lock:
        assert lock.fd is not None
    assert lock.fd is None


@pytest.mark.timeout(30)
def test_shared_holders_share_and_keep_out_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = Holder(path, "shared")
    try:
        with FileLock(path, shared=True, timeout=0):
            pass
        with pytest.raises(LockBusy, match=r"x\.lock: locked$"):  # a reader writes no pid
            FileLock(path, timeout=0).acquire()
    finally:
        holder.release()
    FileLock(path, timeout=0).acquire().release()


@pytest.mark.timeout(30)
def test_tree_lock_blocks_by_default_and_can_give_up(tree: RuntimeTree) -> None:
    (tree.temp_dir / "locks").mkdir(parents=True, exist_ok=True)
    holder = Holder(tree.temp_dir / "locks" / "manifest.lock")
    try:
        with pytest.raises(LockBusy), tree_lock(tree, "manifest", timeout=0.05):
            pass
    finally:
        holder.release()
    with tree_lock(tree, "manifest"):
        pass


def test_no_module_but_runtime_locking_calls_flock_or_lockf() -> None:
    callers = []
    for folder in ("daemon", "protocol", "runtime", "tui", "schemas"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr in ("flock", "lockf"):
                    callers.append(f"{path.relative_to(REPO)}:{node.lineno}")
                if isinstance(node, ast.ImportFrom) and any(
                    a.name in ("flock", "lockf") for a in node.names
                ):
                    callers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert {c.split(":")[0] for c in callers} == {"runtime/core/locking.py"}, callers


def test_an_exclusive_lock_of_ours_is_taken_through_a_descriptor_open_for_writing(
    tmp_path: Path,
) -> None:
    """Finding (review): lock files were opened read-only (so a 0644 lock root made could be
    taken by the tree's owner), but NFS emulates flock with fcntl locks, and an exclusive one
    needs a descriptor open for writing (flock(2), "NFS details"): on a tree on NFS every
    ensure, removal and manifest write failed with EBADF. A file we may write is opened
    read-write again; only one we may not falls back to read-only."""
    import fcntl
    import os

    lock = FileLock(tmp_path / "x.lock").acquire()
    try:
        assert lock.fd is not None
        assert fcntl.fcntl(lock.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    finally:
        lock.release()


#: As another user: takes the exclusive lock on a file only root may write.
AS_NOBODY = """
import os, sys
from runyard.runtime.core.locking import FileLock
os.setgid(65534); os.setuid(65534)
FileLock(sys.argv[1]).acquire()
print("held", flush=True)
"""


def test_a_lock_file_only_another_user_may_write_is_still_taken(tmp_path: Path) -> None:
    """What read-only opening was for, kept: `sudo runyard ...` made the 0644 lock file, and
    the tree's owner (here nobody) still takes it, exclusively."""
    import os
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root, to make a file another user cannot write")
    where = Path(tempfile.mkdtemp(prefix="ry-lock-"))
    try:
        where.chmod(0o755)
        path = where / "x.lock"
        path.write_bytes(b"")
        path.chmod(0o644)
        out = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.stdout == "held\n", out.stderr
    finally:
        path.unlink(missing_ok=True)
        where.rmdir()
