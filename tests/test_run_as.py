"""Who a service runs as (issue 12): ``user``, ``group``, ``no_new_privileges``, ``umask``.

Real daemons running as root (these tests need root, and skip without it) start real services
as ``nobody``; what the kernel says of the child is read from /proc/PID/status. The services are
shell scripts: this test's Python lives where ``nobody`` cannot execute it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from daemonkit import daemon_refuses, runyard_env, wait_for

from archives import archive_record, make_tar, write_catalog
from runyard import runtime
from runyard.daemon.logs.logfile import LogFile
from runyard.daemon.spec import ConfigError, load_specs
from runyard.runtime.config.project import load_project
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.doctor import run_checks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

NOBODY = pwd.getpwnam("nobody")

#: Says it is up on stdout and stderr, proves it can write its working directory, then idles
#: (``exec``: the pid the daemon records is the sleeping process, read in /proc).
SERVICE = b"""#!/bin/sh
echo "up as $(id -u)"
echo "err as $(id -u)" >&2
touch ./written
exec sleep 1000
"""


def sh_tree(root: Path, names: list[str], project: str) -> RuntimeTree:
    """Install each name as a /bin/sh service through the real acquisition path."""
    root.parent.chmod(0o755)  # mkdtemp's 0700 would keep nobody from reaching bin/
    tree = RuntimeTree(root)
    init_tree(tree)
    repo = root.parent / "repo"
    repo.mkdir(exist_ok=True)
    records = [
        archive_record(make_tar(repo / f"{n}-1.0.0.tar.gz", {f"bin/{n}": SERVICE}), n, "1.0.0")
        for n in names
    ]
    write_catalog(repo / "catalog.json", records)
    for i, n in enumerate(names):
        catalog = str(repo / "catalog.json") if i == 0 else None
        runtime.ensure_service(n, "1.0.0", root=root, catalog=catalog)
    (root.parent / "runyard.toml").write_text(f'root = "{root.name}"\n' + textwrap.dedent(project))
    return tree


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def running_pid(c, name: str) -> int:
    def pid() -> int | None:
        (s,) = c.status([name]).services
        return s.pid if s.state == "running" else None

    return wait_for(pid, what=f"{name} running")  # type: ignore[return-value]


@pytest.mark.timeout(90)
def test_user_nobody_runs_as_nobody_owns_its_dirs_and_its_logs_still_arrive(root, daemons):
    tree = sh_tree(
        root,
        ["web", "loose"],
        """
        [services.web]
        user = "nobody"
        umask = "027"
        [services.loose]
        user = "nobody"
        no_new_privileges = false
        """,
    )
    d = daemons(tree).start()
    with d.client() as c:
        pid = running_pid(c, "web")
        status = proc_status(pid)
        uid, gid = str(NOBODY.pw_uid), str(NOBODY.pw_gid)
        assert status["Uid"].split() == [uid] * 4
        assert status["Gid"].split() == [gid] * 4
        assert "0" not in status["Groups"].split()  # root's group 0 was dropped
        assert status["NoNewPrivs"] == "1"
        assert status["Umask"] == "0027"
        data = tree.data_dir / "web"
        assert (data.stat().st_uid, data.stat().st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
        written = wait_for(lambda: (data / "written").exists() and data / "written")
        assert written.stat().st_uid == NOBODY.pw_uid
        log = tree.logs_dir / "web" / "web.log"
        wait_for(lambda: f"up as {uid}" in log.read_text(), what="stdout in web.log")
        wait_for(lambda: f"err as {uid}" in log.read_text(), what="stderr in web.log")
        assert log.stat().st_uid == NOBODY.pw_uid
        assert log.parent.stat().st_uid == NOBODY.pw_uid

        loose = proc_status(running_pid(c, "loose"))
        assert loose["NoNewPrivs"] == "0"
        assert loose["Uid"].split() == [uid] * 4
    bin_owners = {p.stat().st_uid for p in tree.bin_dir.rglob("*")}
    assert bin_owners == {0}, "bin/ is never given away"


@pytest.mark.timeout(90)
def test_a_root_service_gets_no_new_privs_by_default_and_keeps_the_daemons_umask(root, daemons):
    tree = sh_tree(root, ["web"], "")
    d = daemons(tree).start()
    with d.client() as c:
        status = proc_status(running_pid(c, "web"))
    assert status["Uid"].split()[0] == "0"
    assert status["NoNewPrivs"] == "1"
    log = tree.logs_dir / "web" / "web.log"
    wait_for(lambda: "up as 0" in log.read_text(), what="stdout in web.log")
    assert log.stat().st_uid == 0


def test_an_unknown_user_is_one_line_at_load(root):
    tree = sh_tree(root, ["web"], '[services.web]\nuser = "no-such-user-xyz"\n')
    project = load_project(root.parent / "runyard.toml")
    with pytest.raises(ConfigError) as err:
        load_specs(tree, project)
    line = str(err.value)
    assert "\n" not in line
    assert "services.web.user: no user named 'no-such-user-xyz'" in line
    assert "services.web.user: no user named 'no-such-user-xyz'" in daemon_refuses(root)


def test_an_unknown_group_and_a_bad_umask_name_their_setting(root):
    tree = sh_tree(root, ["web"], '[services.web]\nuser = "nobody"\ngroup = "no-such-group-xyz"\n')
    with pytest.raises(ConfigError, match=r"services\.web\.group: no group named"):
        load_specs(tree, load_project(root.parent / "runyard.toml"))
    (root.parent / "runyard.toml").write_text('root = "rt"\n[services.web]\numask = "999"\n')
    with pytest.raises(ConfigError, match=r"services\.web\.umask: '999' is not an octal umask"):
        load_specs(tree, load_project(root.parent / "runyard.toml"))


def test_numeric_user_and_group_resolve_without_names(root):
    tree = sh_tree(root, ["web"], "[services.web]\nuser = 65534\ngroup = 65534\numask = 0o077\n")
    spec = load_specs(tree, load_project(root.parent / "runyard.toml"))[0]["web"]
    assert spec.run_as is not None
    assert (spec.run_as.uid, spec.run_as.gid) == (65534, 65534)
    assert spec.umask == 0o077
    assert spec.no_new_privileges is True


@pytest.mark.timeout(30)
def test_a_daemon_that_is_not_root_refuses_another_user_naming_the_service():
    # Everything is imported as root; then this process becomes nobody and resolves.
    code = textwrap.dedent(
        f"""
        import os
        from runyard.runtime.config.identity import resolve_run_as
        from runyard.runtime.core.errors import SupervisionError
        os.setgroups([]); os.setgid({NOBODY.pw_gid}); os.setuid({NOBODY.pw_uid})
        assert resolve_run_as("nobody", None).uid == {NOBODY.pw_uid}  # itself: fine
        try:
            resolve_run_as("root", None)
        except SupervisionError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=runyard_env(),
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    (line,) = out.stdout.strip().splitlines()
    assert line.startswith("user: runs as root (uid 0, gid 0) but the daemon runs as nobody")
    assert "only a daemon running as root" in line


def test_doctor_warns_about_services_that_run_as_root(root):
    tree = sh_tree(root, ["db", "web"], '[services.web]\nuser = "nobody"\n')
    report = run_checks(tree, project=load_project(root.parent / "runyard.toml"))
    (users,) = [c for c in report.checks if c.name == "users"]
    assert users.status == "warn"
    assert users.detail.startswith("runs as root: db (")
    assert "\n" not in users.detail
    (root.parent / "runyard.toml").write_text('root = "rt"\n[services.db]\nuser = "nobody"\n')
    report = run_checks(tree, project=load_project(root.parent / "runyard.toml"))
    # web runs as root again (its user came from the project file): still one warning line
    (users,) = [c for c in report.checks if c.name == "users"]
    assert users.detail.startswith("runs as root: web (")
    out = subprocess.run(
        [sys.executable, "-m", "runyard.daemon", "doctor", "--root", str(root)],
        cwd=root.parent,
        env=runyard_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "users" in out.stdout and "runs as root: web" in out.stdout, out.stdout


def test_a_hard_link_planted_in_a_service_owned_log_dir_is_not_chowned(tmp_path: Path):
    outside = tmp_path / "precious"
    outside.write_text("keep\n")
    outside.chmod(0o600)
    logs = tmp_path / "logs" / "web"
    logs.mkdir(parents=True)
    os.link(outside, logs / "web.log")
    log = LogFile(logs / "web.log", owner=(NOBODY.pw_uid, NOBODY.pw_gid))
    try:
        log.write(b"line\n")
    finally:
        log.close()
    st = outside.stat()
    assert (st.st_uid, st.st_mode & 0o777, outside.read_text()) == (0, 0o600, "keep\n")
    assert (logs / "web.log").stat().st_uid == NOBODY.pw_uid


@pytest.mark.timeout(90)
def test_reload_to_another_user_restarts_the_service_as_it_and_hands_over_its_log(root, daemons):
    tree = sh_tree(root, ["web"], "")
    d = daemons(tree).start()
    log = tree.logs_dir / "web" / "web.log"
    with d.client() as c:
        first = running_pid(c, "web")
        wait_for(lambda: "up as 0" in log.read_text(), what="root's line in web.log")
        (root.parent / "runyard.toml").write_text('root = "rt"\n[services.web]\nuser = "nobody"\n')
        c.reload()
        pid = wait_for(lambda: (p := running_pid(c, "web")) != first and p)
        assert proc_status(pid)["Uid"].split()[0] == str(NOBODY.pw_uid)
    wait_for(lambda: f"up as {NOBODY.pw_uid}" in log.read_text(), what="nobody's line")
    assert log.stat().st_uid == NOBODY.pw_uid
    assert (tree.data_dir / "web").stat().st_uid == NOBODY.pw_uid


@pytest.mark.timeout(90)
def test_nofile_and_core_reach_a_nobody_service_spawned_without_code_in_the_child(root, daemons):
    """The rlimits are given by the daemon right after exec (prlimit), not by Python code
    between fork and exec (which made every spawn a fork instead of a vfork)."""
    tree = sh_tree(root, ["web"], '[services.web]\nuser = "nobody"\nnofile = 1000\ncore = 0\n')
    d = daemons(tree).start()
    with d.client() as c:
        pid = running_pid(c, "web")
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    nofile = next(line for line in limits if line.startswith("Max open files")).split()
    assert nofile[3:5] == ["1000", "1000"]
    core = next(line for line in limits if line.startswith("Max core file size")).split()
    assert core[4:6] == ["0", "0"]
    status = proc_status(pid)
    assert status["Uid"].split()[0] == str(NOBODY.pw_uid)
    assert status["NoNewPrivs"] == "1"
