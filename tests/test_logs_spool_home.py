"""Log spools on tmpfs (issue 16): every log byte went through a spool file on the tree's disk,
one more page-cache copy that was also written back to the disk. Now the spools live in a
private directory on /dev/shm named from the tree, which a daemon after ``kill -9`` finds; a
hostile directory there is refused in one line and the spools stay in temp/fifo."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import build_tree, wait_for

from runyard.daemon.logs import ServiceLog, Spool
from runyard.daemon.logs.spool_home import (
    TMPFS,
    is_tmpfs,
    remove_if_empty,
    spool_home,
    sweep_orphans,
    tmpfs_spool_dir,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not is_tmpfs(TMPFS), reason=f"{TMPFS} is not a tmpfs here"),
]


@pytest.fixture
def shm_dir(tmp_path: Path) -> Iterator[Path]:
    """The tmpfs spool directory of a tree at ``tmp_path / "rt"``, removed afterwards."""
    path = tmpfs_spool_dir(tmp_path / "rt")
    yield path
    if path.is_symlink() or path.is_file():
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)


def lines_of(log_dir: Path, name: str) -> list[bytes]:
    """The lines of a service's log, without their timestamps."""
    return [raw[28:] for raw in (log_dir / name / f"{name}.log").read_bytes().splitlines()]


# --------------------------------------------------------------------------- where spools live


def test_spool_home_is_a_private_tmpfs_dir_named_from_the_tree(
    tmp_path: Path, shm_dir: Path
) -> None:
    path, why = spool_home(tmp_path / "rt", tmp_path / "fifo")
    assert (path, why) == (shm_dir, "")
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert spool_home(tmp_path / "rt", tmp_path / "fifo") == (path, "")  # the same, again


@pytest.mark.parametrize("hostile", ["symlink", "mode", "owner", "file"])
def test_a_hostile_spool_dir_is_refused_in_one_line(
    tmp_path: Path, shm_dir: Path, hostile: str
) -> None:
    """Anyone may create names in /dev/shm: a directory planted under our name (a symlink to
    elsewhere, one others may enter, one owned by someone else) must never get our spools."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if hostile == "symlink":
        shm_dir.symlink_to(elsewhere)
    elif hostile == "file":
        shm_dir.write_bytes(b"")
    else:
        shm_dir.mkdir(mode=0o700)
        if hostile == "mode":
            shm_dir.chmod(0o755)
        elif os.geteuid() == 0:
            os.chown(shm_dir, 65534, 65534)
        else:
            pytest.skip("only root can give a directory away")
    fallback = tmp_path / "fifo"
    path, why = spool_home(tmp_path / "rt", fallback)
    assert path == fallback
    assert str(shm_dir) in why and "\n" not in why
    assert {"symlink": "symlink", "file": "not a directory", "mode": "0755", "owner": "uid"}[
        hostile
    ] in why
    assert list(elsewhere.iterdir()) == []


def test_sweep_removes_spool_dirs_of_trees_that_are_gone(tmp_path: Path) -> None:
    gone, kept = tmp_path / "gone" / "rt", tmp_path / "kept" / "rt"
    kept.mkdir(parents=True)
    made = [_made_by_a_daemon_gone(t, tmp_path / "fifo") for t in (gone, kept)]
    try:
        assert all(p.parent == TMPFS for p in made)
        removed = sweep_orphans()  # `gone` was never made: its tree does not exist
        # (another daemon's boot on this box may sweep `gone` first: judge by what is left)
        assert made[1] not in removed
        assert not made[0].exists() and made[1].is_dir()
    finally:
        for p in made:
            shutil.rmtree(p, ignore_errors=True)


def _made_by_a_daemon_gone(tree: Path, fifo: Path) -> Path:
    """The spool directory of ``tree`` as a daemon that has exited left it (none holds it)."""
    code = "import sys, pathlib; from runyard.daemon.logs.spool_home import spool_home as h; "
    code += "p, why = h(*map(pathlib.Path, sys.argv[1:])); assert not why, why; print(p)"
    out = subprocess.run([sys.executable, "-c", code, tree, fifo], capture_output=True, check=True)
    return Path(out.stdout.decode().strip())


# --------------------------------------------------------------------------- the spool itself


def test_a_drained_pipe_leaves_only_the_unfinished_line_in_the_spool(tmp_path: Path) -> None:
    """On tmpfs a spool is RAM: once the pipe is drained the processed part is dropped, so an
    idle service holds at most its unfinished line (it held up to 1 MiB per stream before)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    log = ServiceLog("svc", tmp_path / "logs", spool_dir=tmp_path / "spool")
    try:
        os.write(w, b"one\ntwo\nthr")
        assert [x.line for x in log.take("out", r, 1 << 20) or []] == ["one", "two"]
        assert (tmp_path / "spool" / "svc.out.spool").stat().st_size == 11
        log.drained("out")
        assert (tmp_path / "spool" / "svc.out.spool").read_bytes() == b"thr"
        os.write(w, b"ee\n")
        assert [x.line for x in log.take("out", r, 1 << 20) or []] == ["three"]
    finally:
        log.close()
        os.close(r)
        os.close(w)
    assert lines_of(tmp_path / "logs", "svc") == [b"out one", b"out two", b"out three"]
    assert sorted(os.listdir(tmp_path / "spool")) == []  # a clean close of empty spools


def test_a_spool_left_in_temp_fifo_by_an_older_daemon_is_moved_and_continued(
    tmp_path: Path,
) -> None:
    """A daemon upgraded while its services run finds their spools in temp/fifo, where the
    previous version kept them: their unfinished lines go on in the tmpfs spool, none lost."""
    fifo, shm = tmp_path / "fifo", tmp_path / "shm"
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        old = ServiceLog("svc", tmp_path / "logs", spool_dir=fifo)
        os.write(w, b"a\nhal")
        old.take("out", r, 1 << 20)
        old.close()  # an unfinished line waits in temp/fifo for the next daemon
        assert Spool.exists(fifo, "svc")
        new = ServiceLog("svc", tmp_path / "logs", spool_dir=shm, old_spool_dir=fifo)
        assert not Spool.exists(fifo, "svc") and list(fifo.iterdir()) == []
        os.write(w, b"f\nb\n")
        new.take("out", r, 1 << 20)
        new.close()
    finally:
        os.close(r)
        os.close(w)
    assert lines_of(tmp_path / "logs", "svc") == [b"out a", b"out half", b"out b"]


# --------------------------------------------------------------------------- with a daemon

#: A line, then half a line; the other half (and a last line) once the file `go` exists.
HALVES = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
go = sys.argv[1]
sys.stdout.write("first\\nhal"); sys.stdout.flush()
while not os.path.exists(go):
    time.sleep(0.02)
sys.stdout.write("f\\nlast\\n"); sys.stdout.flush()
while True:
    time.sleep(0.05)
"""


def test_kill9_then_a_new_daemon_finds_the_tmpfs_spool_and_loses_no_line(
    root: Path, daemons
) -> None:
    go = root.parent / "go"
    tree = build_tree(root, {"halves": HALVES}, f'[services.halves]\nargs = ["{go}"]\n')
    shm = tmpfs_spool_dir(tree.root)
    d = daemons(tree).start()
    log_dir = tree.logs_dir / "halves"
    wait_for(lambda: (log_dir / "halves.log").exists() and lines_of(tree.logs_dir, "halves"))
    spool = shm / "halves.out.spool"
    # The drained pipe left only the unfinished half line in the spool, on tmpfs, not on disk.
    wait_for(lambda: spool.read_bytes() == b"hal", what="the spool compacted to b'hal'")
    assert not (tree.temp_dir / "fifo" / "halves.out.spool").exists()
    d.kill9()
    go.touch()
    d = daemons(tree).start()
    wait_for(lambda: b"out last" in lines_of(tree.logs_dir, "halves"), what="the last line")
    assert lines_of(tree.logs_dir, "halves") == [b"out first", b"out half", b"out last"]
    with d.client() as c:
        c.shutdown()
    d.proc.wait(timeout=30)
    assert not shm.exists()  # a clean shutdown with nothing left to keep frees the RAM


def test_a_daemon_facing_a_planted_symlink_keeps_its_spools_on_disk(root: Path, daemons) -> None:
    tree = build_tree(root, {"halves": HALVES}, f'[services.halves]\nargs = ["{root}/go"]\n')
    shm = tmpfs_spool_dir(tree.root)
    target = root.parent / "planted"
    target.mkdir()
    shm.symlink_to(target)
    try:
        d = daemons(tree).start()
        wait_for(lambda: (tree.temp_dir / "fifo" / "halves.out.spool").exists())
        daemon_log = (tree.logs_dir / "runyard" / "daemon.log").read_text()
        assert f"log spools kept on disk in {tree.temp_dir / 'fifo'}: {shm} is a symlink" in (
            daemon_log
        )
        assert list(target.iterdir()) == []
        d.stop()
    finally:
        shm.unlink()


def test_remove_if_empty_keeps_a_dir_that_still_holds_a_spool(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "tree").write_text("x")
    (d / "svc.out.spool").write_text("hal")
    remove_if_empty(d, tmp_path / "fifo")
    assert d.is_dir()
    (d / "svc.out.spool").unlink()
    remove_if_empty(d, tmp_path / "fifo")
    assert not d.exists()


def test_sweep_keeps_the_spool_dir_of_a_live_daemon_whose_tree_it_cannot_see(
    tmp_path: Path,
) -> None:
    """A daemon's tree may be invisible to another daemon of the same uid (another mount
    namespace, a private /tmp, a tree moved while its daemon runs): the sweep judged by the path
    alone and removed a live daemon's spools, whose unwritten lines a kill -9 then lost."""
    tree = tmp_path / "ns" / "rt"
    tree.mkdir(parents=True)
    path, why = spool_home(tree, tmp_path / "fifo")  # held, as by the daemon running there
    try:
        assert why == ""
        assert path not in sweep_orphans()  # its tree is there
        (path / "svc.out.spool").write_bytes(b"not yet in the log\n")
        (tmp_path / "ns").rename(tmp_path / "elsewhere")  # what another namespace sees
        assert path not in sweep_orphans()
        assert (path / "svc.out.spool").read_bytes() == b"not yet in the log\n"
        remove_if_empty(path, tmp_path / "fifo")  # the daemon's clean exit lets it go
        assert path.is_dir()  # it still holds a spool
        assert path in sweep_orphans()  # no daemon holds it and its tree is gone
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_sweep_keeps_a_spool_dir_whose_tree_it_cannot_stat(tmp_path: Path) -> None:
    """Only "no such file" means a tree is gone: a path that cannot be looked up now (a stale
    FUSE or NFS mount, a directory we may not search, here a symlink loop) may hold a tree."""
    loop = tmp_path / "loop"
    (tmp_path / "target").mkdir()
    loop.symlink_to(tmp_path / "target")
    path = _made_by_a_daemon_gone(loop / "rt", tmp_path / "fifo")
    try:
        (path / "tree").write_bytes(os.fsencode(loop / "rt"))
        loop.unlink()
        loop.symlink_to(loop)  # ELOOP: whether the tree exists cannot be told
        assert path not in sweep_orphans()
        assert path.is_dir()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_moved_tree_finds_the_spools_its_daemon_left_under_its_old_path(tmp_path: Path) -> None:
    """The directory is named from the tree's path: after a ``kill -9``, a tree moved (or
    renamed) while its services ran had its unwritten lines under the old name, which the
    next daemon never looked at and its sweep then removed (the old path is gone)."""
    old_tree, new_tree = tmp_path / "a" / "rt", tmp_path / "b" / "rt"
    (old_tree / "temp" / "fifo").mkdir(parents=True)
    old = _made_by_a_daemon_gone(old_tree, old_tree / "temp" / "fifo")
    new = tmpfs_spool_dir(new_tree)
    try:
        (old / "svc.out.spool").write_bytes(b"unwritten hal")
        (tmp_path / "a").rename(tmp_path / "b")
        assert spool_home(new_tree, new_tree / "temp" / "fifo") == (new, "")
        assert (new / "svc.out.spool").read_bytes() == b"unwritten hal"
        assert (new / "tree").read_bytes() == os.fsencode(new_tree)
        assert not old.exists()
    finally:
        remove_if_empty(new, new_tree / "temp" / "fifo")
        for p in (old, new):
            shutil.rmtree(p, ignore_errors=True)


def test_a_copied_tree_leaves_the_original_its_spools(tmp_path: Path) -> None:
    original, copy = tmp_path / "a" / "rt", tmp_path / "b" / "rt"
    (original / "temp" / "fifo").mkdir(parents=True)
    old = _made_by_a_daemon_gone(original, original / "temp" / "fifo")
    new = tmpfs_spool_dir(copy)
    try:
        (old / "svc.out.spool").write_bytes(b"the original's")
        shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)
        assert spool_home(copy, copy / "temp" / "fifo") == (new, "")
        assert not (new / "svc.out.spool").exists()
        assert (old / "svc.out.spool").read_bytes() == b"the original's"
    finally:
        remove_if_empty(new, copy / "temp" / "fifo")
        for p in (old, new):
            shutil.rmtree(p, ignore_errors=True)
