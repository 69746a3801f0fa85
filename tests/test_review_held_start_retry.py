"""Finding (review): a start held back by its version's install lock (an install or a
`runtime remove` under way) was retried by a 50 ms timer made by every scheduling pass that
met it, and each timer's pass made the next: every pass during the hold (another service's
start, stop, exit) added one more endless 50 ms retry loop, so the daemon's work grew with
what happened while the lock was held. The held starts now share one retry timer.

Counted, not timed: the daemon's tries of the lock are the opens of its lock file (inotify),
which one retry loop makes at most once per 50 ms.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import time
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, wait_for

from runyard.daemon.supervisor import INSTALL_RETRY_SECS
from runyard.runtime.core.locking import FileLock, install_lock
from runyard.runtime.core.manifest import load_manifest

pytestmark = pytest.mark.timeout(120)

IN_OPEN, IN_CLOSE_NOWRITE, IN_NONBLOCK, IN_CLOEXEC = 0x20, 0x10, 0o4000, 0o2000000


def opens_of(path: Path, seconds: float) -> tuple[int, float]:
    """How often ``path`` is opened in the next ``seconds``, and the seconds really watched.
    Closes are watched too: inotify merges identical events in a row, open/close alternate."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(path), IN_OPEN | IN_CLOSE_NOWRITE) >= 0
        start, opens = time.monotonic(), 0
        while (left := start + seconds - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                continue
            buf, i = os.read(fd, 1 << 16), 0
            while i < len(buf):
                _, mask, _, size = struct.unpack_from("iIII", buf, i)
                opens += bool(mask & IN_OPEN)
                i += 16 + size
        return opens, time.monotonic() - start
    finally:
        os.close(fd)


def test_passes_during_a_hold_do_not_each_add_a_retry_loop(root: Path, daemons) -> None:
    tree = build_tree(root, {"idle": SLEEPER, "other": SLEEPER})
    (entry,) = load_manifest(tree).find("idle")
    lock_file = tree.temp_dir / "locks" / f"{install_lock('idle', '1.0.0', entry.platform)}.lock"
    d = daemons(tree).start()
    with d.client() as c:
        wait_for(lambda: c.status(["idle"]).services[0].pid, what="idle running")
        c.stop(["idle"])
        held = FileLock(lock_file).acquire()  # as an install or a removal would
        try:
            (s,) = c.start(["idle"]).services
            assert "being installed or removed" in s.reason, s
            for _ in range(30):  # each is a scheduling pass that meets the held start
                c.start(["other"])
            opens, watched = opens_of(lock_file, 1.0)
            # One retry loop tries at most once per INSTALL_RETRY_SECS; was 30 loops more.
            assert opens <= watched / INSTALL_RETRY_SECS + 3, opens
            assert opens >= 1  # and it is still retried
        finally:
            held.release()
        wait_for(lambda: c.status(["idle"]).services[0].pid, what="the held start once free")
