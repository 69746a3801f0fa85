"""Finding: `runyard runtime remove` asked the daemon whether a version was in use and removed
it afterwards with no lock held across both, so a start that came in between spawned a
service from a version being deleted. The check and the removal now hold the version's
install lock, which the daemon takes (shared, tried once) to spawn from it.

The interleaving is forced, not timed: the test holds the manifest lock, which the removal
takes after its check, waits until /proc/locks shows the `runyard` process blocked on it, and
only then asks the daemon to start the service.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, runyard_env, wait_for

from runyard.runtime.core.locking import FileLock

pytestmark = pytest.mark.timeout(120)


def blocked_on(pid: int, path: Path) -> bool:
    """``pid`` waits for a flock on ``path`` (a ``->`` line of /proc/locks)."""
    ino = os.stat(path).st_ino
    waiting = (line.split() for line in Path("/proc/locks").read_text().splitlines())
    return any(
        len(f) > 6 and f[1] == "->" and f[5] == str(pid) and f[6].endswith(f":{ino}")
        for f in waiting
    )


@contextlib.contextmanager
def runyard_bg(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", *args],
        cwd=cwd,
        env=runyard_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def processes_running_from(directory: Path) -> list[int]:
    """Pids whose command line names a file under ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(directory).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_start_between_removes_check_and_removal_does_not_run_the_removed_version(
    root: Path, daemons
) -> None:
    tree = build_tree(root, {"idle": SLEEPER})
    here, version_dir = root.parent, root / "bin" / "idle" / "1.0.0"
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["idle"]).services[0].pid, what="idle running")
        c.stop(["idle"])
        manifest_lock = FileLock(tree.temp_dir / "locks" / "manifest.lock").acquire()
        try:
            with runyard_bg(here, "runtime", "remove", "idle", "1.0.0") as remove:
                # It has asked the daemon (idle stopped: not in use) and waits to remove.
                wait_for(
                    lambda: remove.poll() is not None or blocked_on(remove.pid, manifest_lock.path),
                    what="runtime remove past its check",
                )
                assert remove.poll() is None, remove.communicate()
                (s,) = c.start(["idle"]).services
                # Was: spawned at once from the version being removed.
                assert s.pid is None, s
                assert "being installed or removed" in s.reason, s
                manifest_lock.release()
                out, err = remove.communicate(timeout=60)
                assert remove.returncode == 0, err
                assert "removed idle 1.0.0" in out
        finally:
            manifest_lock.release()
        assert not version_dir.exists()
        # The start held back comes after the removal: it fails, for want of its program.
        s = wait_for(
            lambda: (s := c.status(["idle"]).services[0]).state in ("backoff", "fatal") and s,
            what="the held start to fail",
        )
        assert s.pid is None, s
    assert processes_running_from(version_dir) == []


def test_a_lock_file_the_daemon_cannot_open_does_not_stop_a_start(tmp_path: Path) -> None:
    """A runtime command run as another user leaves its lock files 0600: the daemon spawns
    without the lock then (as before there was one) rather than failing or waiting forever.
    A directory in the lock file's place stands for the file it cannot open."""
    from runyard.runtime.core.locking import install_hold, install_lock
    from runyard.runtime.core.tree import RuntimeTree

    tree = RuntimeTree(tmp_path)
    (tree.temp_dir / "locks" / f"{install_lock('web', '1.0.0', 'linux-amd64')}.lock").mkdir(
        parents=True
    )
    hold = install_hold(tree, "web", "1.0.0", "linux-amd64")
    assert hold is not None and hold.fd is None
    hold.release()
    held = FileLock(tree.temp_dir / "locks" / "x.lock").acquire()
    try:  # and a lock another holds is busy: None
        (tree.temp_dir / "locks" / f"{install_lock('x', '1', 'p')}.lock").symlink_to(held.path)
        assert install_hold(tree, "x", "1", "p") is None
    finally:
        held.release()


def test_install_locks_are_readable_by_the_daemons_user(tmp_path: Path) -> None:
    """`sudo runyard runtime remove` on a tree whose daemon runs as its owner: the lock file
    root makes must be one the daemon can open, or it would start unlocked. flock needs only
    a read descriptor, and the file is 0644 (temp/ itself is 0700)."""
    from runyard.runtime.core.locking import install_lock, tree_lock
    from runyard.runtime.core.tree import RuntimeTree

    tree = RuntimeTree(tmp_path)
    old = os.umask(0o022)
    try:
        with tree_lock(tree, install_lock("web", "1.0.0", "linux-amd64")):
            pass
    finally:
        os.umask(old)
    (path,) = (tree.temp_dir / "locks").iterdir()
    assert path.stat().st_mode & 0o777 == 0o644


def test_install_locks_made_under_a_restrictive_umask_are_still_0644(tmp_path: Path) -> None:
    """Finding (review): the 0644 was only asked of open(2), which the umask narrows: `runyard
    runtime remove` run by root with umask 027 or 077 (a hardened box's) made a lock file the
    daemon, run as the tree's owner, could not open, so it spawned unlocked between remove's
    check and its removal, and the owner's next `ensure` of that version failed on it. The
    mode is set on the open file now, whatever the umask."""
    from runyard.runtime.core.locking import install_hold, install_lock, tree_lock
    from runyard.runtime.core.tree import RuntimeTree

    tree = RuntimeTree(tmp_path)
    old = os.umask(0o077)
    try:
        with tree_lock(tree, install_lock("web", "1.0.0", "linux-amd64")):
            pass
        hold = install_hold(tree, "api", "1.0.0", "linux-amd64")
        assert hold is not None
        hold.release()
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tree.temp_dir / "locks").iterdir()}
    assert modes == {
        "install-web-1.0.0-linux-amd64.lock": 0o644,
        "install-api-1.0.0-linux-amd64.lock": 0o644,
    }
