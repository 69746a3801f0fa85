"""A full tmpfs under the log spools (issue 16 moved them to /dev/shm, 64 MiB in a default
Docker container and shared with whatever else uses it). The spools then go back to the
tree's ``temp/fifo`` with one line saying why, their unfinished lines with them: the daemon
neither fails to start (the journal's first write raised ENOSPC out of ServiceLog) nor gives
up its crash safety while the disk has room."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.daemon.logs import ServiceLog
from runyard.daemon.logs.spool_home import spool_home

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """A 16 KiB tmpfs of our own (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="runyard-small-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if done.returncode:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # even if a fd is left
        mnt.rmdir()


def fill(mnt: Path) -> None:
    """Take every free page of ``mnt``."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"x" * 4096):
                pass
    finally:
        os.close(fd)


def lines_of(log_dir: Path, name: str) -> list[bytes]:
    return [raw[28:] for raw in (log_dir / name / f"{name}.log").read_bytes().splitlines()]


def test_a_full_tmpfs_at_start_keeps_the_spools_on_disk(
    tmp_path: Path, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir, fifo = small_tmpfs / "spool", tmp_path / "fifo"
    spool_dir.mkdir(mode=0o700)  # left by an earlier daemon: nothing to create at start
    fill(small_tmpfs)
    r, w = os.pipe()
    os.set_blocking(r, False)
    with caplog.at_level(logging.ERROR, logger="runyard.logs"):
        log = ServiceLog("svc", tmp_path / "logs", spool_dir=spool_dir, old_spool_dir=fifo)
    try:
        assert log.spool is not None
        os.write(w, b"one\ntw")
        assert [x.line for x in log.take("out", r, 1 << 16) or []] == ["one"]
        log.drained("out")
        assert (fifo / "svc.out.spool").read_bytes() == b"tw"  # a kill -9 would keep it
        assert any(f"spools kept in {fifo}" in m for m in caplog.messages)
    finally:
        log.close()
        os.close(r)
        os.close(w)


def test_a_tmpfs_filling_up_moves_the_spools_to_disk_with_their_unfinished_lines(
    tmp_path: Path, small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir, fifo = small_tmpfs / "spool", tmp_path / "fifo"
    r, w = os.pipe()
    os.set_blocking(r, False)
    log = ServiceLog("svc", tmp_path / "logs", spool_dir=spool_dir, old_spool_dir=fifo)
    try:
        os.write(w, b"one\n")
        assert [x.line for x in log.take("out", r, 1 << 16) or []] == ["one"]
        log.drained("out")
        fill(small_tmpfs)
        os.write(w, b"two\nthr")
        with caplog.at_level(logging.ERROR, logger="runyard.logs"):
            assert [x.line for x in log.take("out", r, 1 << 16) or []] == ["two"]
        assert log.spool is not None  # not given up: the disk has room
        log.drained("out")
        assert (fifo / "svc.out.spool").read_bytes() == b"thr"
        assert any(f"spools kept in {fifo}" in m for m in caplog.messages)
        os.write(w, b"ee\n")
        assert [x.line for x in log.take("out", r, 1 << 16) or []] == ["three"]
    finally:
        log.close()
        os.close(r)
        os.close(w)
    assert lines_of(tmp_path / "logs", "svc") == [b"out one", b"out two", b"out three"]


@pytest.fixture
def open_tmpfs() -> Iterator[Path]:
    """A tmpfs anyone may write in, without the sticky bit (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = Path(tempfile.mkdtemp(prefix="runyard-open-tmpfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0777", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if done.returncode:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # even if a fd is left
        mnt.rmdir()


def test_a_tmpfs_without_the_sticky_bit_is_refused(tmp_path: Path, open_tmpfs: Path) -> None:
    """The checks on the spool directory (ours, 0700, not a symlink) hold only while nobody
    else can rename it: in a directory everyone may write without the sticky bit, another
    user could swap it for a symlink to their own after the check, and get the logs."""
    path, why = spool_home(tmp_path / "rt", tmp_path / "fifo", tmpfs=open_tmpfs)
    assert path == tmp_path / "fifo"
    assert why == f"{open_tmpfs} is writable by others without the sticky bit"
    assert os.listdir(open_tmpfs) == []


def test_a_tmpfs_filling_up_while_an_older_spool_is_moved_in_writes_no_line_twice(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    """A daemon upgraded from one that spooled in temp/fifo moves those spools to tmpfs; when
    the tmpfs fills up half-way through that copy, the spools stay on disk, and what the copy
    had put in the tmpfs spool must not be appended to them a second time."""
    from runyard.daemon.logs import Spool

    fifo = tmp_path / "fifo"
    lines = [b"line %04d" % i + b"x" * 90 for i in range(120)]  # 12 KiB: three pages
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        older = Spool(fifo, "svc")
        os.write(w, b"\n".join(lines) + b"\n")
        assert older.take("out", r, 1 << 16)  # taken by the older daemon, never written
        older.close()
    finally:
        os.close(r)
        os.close(w)
    fill(small_tmpfs)
    os.truncate(small_tmpfs / "filler", (small_tmpfs / "filler").stat().st_size - 8192)
    log = ServiceLog("svc", tmp_path / "logs", spool_dir=small_tmpfs / "spool", old_spool_dir=fifo)
    log.close()
    assert lines_of(tmp_path / "logs", "svc") == [b"out " + x for x in lines]
