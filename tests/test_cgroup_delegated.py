"""Finding: under a systemd unit with Delegate=yes the daemon sits in the unit's cgroup, so by
cgroup v2's no-internal-process rule that cgroup could never enable a controller for the
services' cgroups below it, and memory/tasks limits always fell back to sampling. With
``DelegateSubgroup=supervisor`` systemd starts the daemon in the leaf ``<unit>/supervisor``; the
daemon now puts the tree's directory beside that leaf, under the unit's cgroup, and enables the
controllers there, when that cgroup is ours (marked delegated, holding no process, writable).

No systemd here: the test plays its part. It makes a cgroup, marks it delegated with the xattr
systemd sets, starts the daemon in its ``supervisor`` leaf, and checks where the daemon and
the services are, and that the tree's directory is gone after a shutdown. This box offers no v2
controller, so that the controllers are enabled is not checked here (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import SLEEPER, build_tree, runyard_env, wait_for

from runyard.daemon import cgroup as cg
from runyard.protocol.client import Client, DaemonUnreachable

pytestmark = pytest.mark.timeout(120)


def own_cgroup() -> Path:
    mount, own = cg.cgroup2_mount(), cg.cgroup_of()
    if mount is None or own is None or not os.access(mount / own.lstrip("/"), os.W_OK):
        if os.environ.get("CI") == "true":
            pytest.fail("cgroup v2 is absent or not writable under CI=true")
        pytest.skip("cgroup v2 is absent or not writable here")
    return mount / own.lstrip("/")


def remove_all(path: Path, deadline: float = 10.0) -> None:
    """``path`` and every cgroup below it, deepest first, each one's processes killed."""
    if not path.is_dir():
        return
    for child in [p for p in path.iterdir() if p.is_dir()]:
        remove_all(child, deadline)
    end = time.monotonic() + deadline
    cg.kill(path)
    while cg.populated(path) and time.monotonic() < end:
        time.sleep(0.02)
    assert cg.remove(path), f"{path} could not be removed"


@pytest.fixture
def unit() -> Iterator[Path]:
    """A cgroup standing for a unit's, with its empty ``supervisor`` leaf; removed after."""
    path = own_cgroup() / f"ry-unit-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        (path / "supervisor").mkdir()
        yield path
    finally:
        remove_all(path)


def mark_delegated(path: Path) -> None:
    try:
        os.setxattr(path, "user.delegate", b"1")
    except OSError as exc:
        pytest.skip(f"cannot set user.delegate on a cgroup here: {exc}")


def start_daemon_in(leaf: Path, root: Path) -> subprocess.Popen[bytes]:
    """The daemon started as systemd would start it: already in ``leaf`` when it runs."""
    argv = [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(root)]
    argv += ["--project", str(root.parent / "runyard.toml")]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", f'echo $$ > "{leaf}/cgroup.procs" && exec "$@"', "sh", *argv],
        cwd=root.parent,
        env=runyard_env(),
        stdout=subprocess.DEVNULL,
        stderr=open(root.parent / "daemon.stderr", "ab"),  # noqa: SIM115
        start_new_session=True,
    )

    def answers() -> bool:
        assert proc.poll() is None, (root.parent / "daemon.stderr").read_text()[-2000:]
        try:
            with Client(root, timeout=0.5) as c:
                c.hello()
            return True
        except DaemonUnreachable:
            return False

    wait_for(answers, 30, "the daemon to answer")
    return proc


def shut_down(proc: subprocess.Popen[bytes], root: Path) -> None:
    if proc.poll() is None:
        with contextlib.suppress(Exception), Client(root, timeout=30) as c:
            c.shutdown()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def tree_dir_name(root: Path) -> str:
    return "runyard-" + hashlib.sha256(os.fsencode(os.path.realpath(root))).hexdigest()[:12]


def daemon_log(root: Path) -> str:
    return (root / "logs" / "runyard" / "daemon.log").read_text()


def service_cgroup(root: Path, name: str) -> str:
    with Client(root, timeout=10) as c:
        pid = wait_for(lambda: c.status([name]).services[0].pid, what=f"{name} running")
    # the pid is shown from the spawn on, while the shell step (cgroup_join.py) may not have
    # moved itself into the service's cgroup yet: the program runs only once it has
    wait_for(lambda: (cg.cgroup_of(pid) or "").endswith(f"/{name}"), what=f"{name} in its cgroup")
    return cg.cgroup_of(pid) or ""


def test_services_go_beside_the_daemons_supervisor_leaf_of_a_delegated_cgroup(
    root: Path, unit: Path
) -> None:
    mark_delegated(unit)
    build_tree(root, {"web": SLEEPER})
    mount = cg.cgroup2_mount()
    assert mount is not None
    proc = start_daemon_in(unit / "supervisor", root)
    try:
        rel = "/" + str(unit.relative_to(mount))
        assert cg.cgroup_of(proc.pid) == f"{rel}/supervisor"
        # Was: <unit>/supervisor/runyard-HASH/web, under the daemon's own (inner) cgroup.
        assert service_cgroup(root, "web") == f"{rel}/{tree_dir_name(root)}/web"
        assert "beside the daemon's leaf supervisor" in daemon_log(root)
        assert cg.members(unit) == []  # no process in the base: controllers may be enabled
    finally:
        shut_down(proc, root)
    assert sorted(p.name for p in unit.iterdir() if p.is_dir()) == ["supervisor"]


@pytest.mark.parametrize("why", ["unmarked", "populated"])
def test_a_supervisor_leaf_of_a_cgroup_not_ours_is_refused_with_the_reason(
    root: Path, unit: Path, why: str
) -> None:
    other = None
    if why == "populated":
        mark_delegated(unit)
        other = subprocess.Popen(
            ["/bin/sh", "-c", f'echo $$ > "{unit}/cgroup.procs" && exec sleep 600'],
            start_new_session=True,
        )
        wait_for(lambda: cg.members(unit), what="a process in the unit's cgroup")
    build_tree(root, {"web": SLEEPER})
    mount = cg.cgroup2_mount()
    assert mount is not None
    proc = start_daemon_in(unit / "supervisor", root)
    try:
        rel = "/" + str(unit.relative_to(mount))
        # The tree's directory stays under the daemon's own cgroup, as before.
        assert service_cgroup(root, "web") == f"{rel}/supervisor/{tree_dir_name(root)}/web"
        said = {
            "unmarked": "no user.delegate or trusted.delegate mark",
            "populated": "it holds processes",
        }[why]
        line = next(x for x in daemon_log(root).splitlines() if "not a cgroup delegated" in x)
        assert said in line and "services' cgroups go under the daemon's own" in line, line
    finally:
        shut_down(proc, root)
        if other is not None:
            other.kill()
            other.wait(timeout=10)
    assert sorted(p.name for p in (unit / "supervisor").iterdir() if p.is_dir()) == []
