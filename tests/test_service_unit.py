"""Boot (issue 13): ``runyard service install|uninstall|status`` and the systemd unit it writes.

The unit is checked by the real ``systemd-analyze`` (verify, and the security score). This box's
PID 1 is not systemd, so the refusal is tested for real and the systemctl steps are not (the
rollback is: the real systemctl fails here, and nothing may stay behind).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from daemonkit import Daemon, build_tree, runyard_env, wait_for

from runyard.daemon.cli import main
from runyard.runtime.core.errors import SystemdError, UsageError
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.ops.systemd_install import (
    install_unit,
    require_systemd,
    systemd_booted,
    systemd_version,
)
from runyard.runtime.ops.systemd_unit import (
    DELEGATE_SUBGROUP_SINCE,
    UNIT_HEADER,
    daemon_argv,
    render_unit,
    unit_name,
    unit_word,
    writable_paths,
)

pytestmark = pytest.mark.timeout(60)

#: The exposure ``systemd-analyze security`` gave the system unit when it was written (systemd
#: 252); a change that loosens the unit fails here (docs/OPERATIONS.md, "Starting at boot").
SECURITY_SCORE_MAX = 7.7
#: A root no test creates: rendering and verify do not need it to exist.
FAR_ROOT = Path("/srv/runyard/plant 7/runtime")


def _tree(base: Path, name: str = "rt") -> RuntimeTree:
    tree = RuntimeTree(base / name)
    init_tree(tree)
    return tree


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _analyze(unit_text: str, name: str, tmp_path: Path, *args: str, user: bool = False):
    """``systemd-analyze ARGS UNIT`` on the unit written in a directory of its own."""
    exe = require_tool("systemd-analyze")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir(exist_ok=True)
    (unit_dir / name).write_text(unit_text)
    runtime_dir = tmp_path / "xdg"  # a user manager wants one, even offline
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_PAGER": "", "NO_COLOR": "1"}
    argv = [exe, *args, *(["--user"] if user else []), str(unit_dir / name)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)


@pytest.fixture
def far_python() -> Iterator[str]:
    """This interpreter, named by a path outside /tmp and /var/tmp: a checkout under /tmp (a CI
    clone) would otherwise leave PrivateTmp off, by design."""
    if not str(sys.executable).startswith(("/tmp/", "/var/tmp/")):
        yield sys.executable
        return
    here = Path(tempfile.mkdtemp(prefix="runyard-unit-", dir="/dev/shm"))
    try:
        (here / "python").symlink_to(sys.executable)
        yield str(here / "python")
    finally:
        shutil.rmtree(here, ignore_errors=True)


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
@pytest.mark.parametrize("where", ["far", "tmp"])
def test_unit_passes_systemd_analyze_verify(
    tmp_path: Path, user: bool, where: str, far_python: str
) -> None:
    # "far": PrivateTmp=yes and a space in the path; "tmp": a real tree under /tmp with a % in
    # it, and the interpreter behind a path with a space, a $ and a %: verify looks for that
    # very file, so a quoting mistake is an error here.
    python = far_python
    if where == "tmp":
        odd = tmp_path / "bin $HOME 5%"
        odd.mkdir()
        (odd / "python").symlink_to(sys.executable)
        python = str(odd / "python")
    root = FAR_ROOT if where == "far" else _tree(tmp_path, "rt $x 100%").root
    text = render_unit(root, daemon_argv(python, root), user=user, run_as="daemon")
    assert ("PrivateTmp=yes" in text) == (where == "far" and not user)
    assert ("User=daemon" in text) == (not user)
    out = _analyze(text, unit_name(root), tmp_path, "verify", "--man=no", user=user)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_the_subgroup_unit_passes_verify_where_systemd_knows_it(
    tmp_path: Path, far_python: str
) -> None:
    exe = require_tool("systemd-analyze")
    first = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    m = re.match(r"systemd (\d+)", first)
    if not m or int(m.group(1)) < DELEGATE_SUBGROUP_SINCE:
        pytest.skip(f"systemd-analyze here predates DelegateSubgroup= ({first.split(chr(10))[0]})")
    text = render_unit(FAR_ROOT, daemon_argv(far_python, FAR_ROOT), delegate_subgroup=True)
    out = _analyze(text, unit_name(FAR_ROOT), tmp_path, "verify", "--man=no")
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_verify_does_see_a_broken_unit(tmp_path: Path) -> None:
    """The verify test above would pass on anything if verify said nothing: it does not."""
    text = render_unit(FAR_ROOT, ["/nonexistent/python3", "-m", "runyard.daemon"])
    out = _analyze(
        text.replace("KillMode=process", "KillMode=bogus"), "x.service", tmp_path, "verify"
    )
    said = out.stdout + out.stderr
    assert out.returncode != 0 and "/nonexistent/python3" in said and "bogus" in said, said


def test_security_score(tmp_path: Path, far_python: str) -> None:
    exe = require_tool("systemd-analyze")
    helptext = subprocess.run([exe, "security", "--help"], capture_output=True, text=True).stdout
    if "--offline" not in helptext:
        pytest.skip("systemd-analyze security has no --offline here (systemd < 250)")
    name = unit_name(FAR_ROOT)
    text = render_unit(FAR_ROOT, daemon_argv(far_python, FAR_ROOT))
    out = _analyze(text, name, tmp_path, "security", "--offline=true", "--no-pager")
    m = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=true: {score}")
    assert score <= SECURITY_SCORE_MAX, out.stdout


def test_unit_says_what_the_issue_asks(tmp_path: Path) -> None:
    root = _tree(tmp_path).root
    text = render_unit(root, daemon_argv(sys.executable, root, tmp_path / "runyard.toml"))
    for line in (
        "Type=notify",
        "Restart=always",
        "KillMode=process",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={root}",
        "Delegate=yes",
        "WantedBy=multi-user.target",
        f"ExecStart={sys.executable} -m runyard.daemon daemon --root {root} "
        f"--project {tmp_path / 'runyard.toml'}",
    ):
        assert line in text.splitlines(), line
    assert "re-adopts" in text  # the comment that explains KillMode=process
    user = render_unit(root, daemon_argv(sys.executable, root), user=True)
    assert "WantedBy=default.target" in user and "ProtectSystem" not in user


def test_print_writes_the_unit_to_stdout(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no runyard.toml here: no --project in ExecStart
    root = _tree(tmp_path).root
    code, out, err = _cli(capsys, "service", "install", "--root", str(root), "--print")
    assert (code, err) == (0, "")
    subgroup = (systemd_version() or 0) >= DELEGATE_SUBGROUP_SINCE
    assert out == render_unit(root, daemon_argv(sys.executable, root), delegate_subgroup=subgroup)
    code, out, _ = _cli(capsys, "service", "install", "--root", str(root), "--print", "--user")
    assert code == 0 and "WantedBy=default.target" in out


@pytest.mark.parametrize(("version", "written"), [(253, False), (254, True), (None, False)])
def test_delegate_subgroup_only_for_a_systemd_that_knows_it(
    tmp_path: Path, capsys, monkeypatch, version: int | None, written: bool
) -> None:
    """Containment: the daemon can give its services the memory/pids/cpu controllers only from
    a leaf of the unit's cgroup (daemon/cgroup.py, own_base), which DelegateSubgroup= (systemd
    254+) makes; an older systemd would warn of the unknown key at every load."""
    fake = tmp_path / "bin"
    fake.mkdir()
    said = f"systemd {version} ({version}.1-1)" if version else "not systemd at all"
    (fake / "systemctl").write_text(f"#!/bin/sh\necho '{said}'\necho +PAM +AUDIT\n")
    (fake / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)
    assert systemd_version() == version
    root = _tree(tmp_path).root
    code, out, err = _cli(capsys, "service", "install", "--root", str(root), "--print")
    assert (code, err) == (0, "")
    assert ("DelegateSubgroup=supervisor" in out.splitlines()) == written
    assert "Delegate=yes" in out.splitlines()


@pytest.mark.skipif(systemd_booted(), reason="systemd is PID 1 here: the refusal cannot happen")
def test_refused_with_one_line_when_systemd_is_not_init(tmp_path: Path) -> None:
    root = _tree(tmp_path).root
    before = sorted(Path("/etc/systemd/system").glob("runyard-*"))
    for action in ("install", "uninstall", "status"):
        out = subprocess.run(
            [sys.executable, "-m", "runyard.daemon", "service", action, "--root", str(root)],
            capture_output=True,
            text=True,
            env=runyard_env(),
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, (action, out.stderr)
        assert "systemd is not the init system" in lines[0] and "--print" in lines[0]
        assert f"runyard daemon --root {root}" in lines[0]
    assert sorted(Path("/etc/systemd/system").glob("runyard-*")) == before


@pytest.mark.skipif(systemd_booted(), reason="systemd is PID 1 here: systemctl would succeed")
@pytest.mark.parametrize("previous", [None, UNIT_HEADER + "\n# the unit installed before\n"])
def test_no_half_install_when_systemctl_fails(tmp_path: Path, previous: str | None) -> None:
    """The real systemctl fails on this box (no systemd running): install must leave the unit
    directory as it found it and say so."""
    require_tool("systemctl")
    path = tmp_path / "units" / "runyard-rt.service"
    path.parent.mkdir()
    if previous is not None:
        path.write_text(previous)
    with pytest.raises(SystemdError) as err:
        install_unit(path, "[Service]\nExecStart=/bin/true\n", user=False, enable=True, start=True)
    assert "daemon-reload" in str(err.value) and "nothing installed" in str(err.value)
    assert "\n" not in str(err.value)
    if previous is None:
        assert not path.exists()
    else:
        assert path.read_text() == previous
    assert [p.name for p in path.parent.iterdir()] == ([] if previous is None else [path.name])


def test_unit_dir_install_status_uninstall(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = _tree(tmp_path).root
    units = tmp_path / "image" / "etc" / "systemd" / "system"
    common = ["--root", str(root), "--unit-dir", str(units)]
    code, out, _ = _cli(capsys, "service", "install", *common)
    assert code == 0 and "systemd was not told" in out
    path = units / "runyard-rt.service"
    assert path.read_text() == render_unit(root, daemon_argv(sys.executable, root))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in units.iterdir()] == [path.name]  # no temp file left
    code, out, _ = _cli(capsys, "service", "status", *common)
    assert code == 0 and "up to date" in out
    path.write_text(path.read_text().replace("RestartSec=2", "RestartSec=9"))
    code, out, _ = _cli(capsys, "--json", "service", "status", *common)
    assert code == 1 and '"file": "differs"' in out
    code, out, _ = _cli(capsys, "service", "uninstall", *common)
    assert code == 0 and not path.exists()
    code, out, _ = _cli(capsys, "service", "status", *common)
    assert code == 1 and "missing" in out


def test_a_unit_file_runyard_did_not_write_is_never_replaced_or_removed(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """Review finding: `service install --name nginx` (or uninstall) replaced or removed any
    unit file of that name. A unit without our first line is left as it is, in one line."""
    monkeypatch.chdir(tmp_path)
    root = _tree(tmp_path).root
    units = tmp_path / "units"
    units.mkdir()
    nginx = units / "nginx.service"
    nginx.write_text("[Service]\nExecStart=/usr/sbin/nginx\n")
    common = ["--root", str(root), "--unit-dir", str(units), "--name", "nginx"]
    for verb in ("install", "uninstall"):
        code, _, err = _cli(capsys, "service", verb, *common)
        assert code == 1, (verb, err)
        assert err.count("\n") == 1 and "not written by `runyard service install`" in err
        assert nginx.read_text() == "[Service]\nExecStart=/usr/sbin/nginx\n"
    with pytest.raises(SystemdError, match="not written by"):
        install_unit(nginx, "[Service]\n", user=False, enable=False, start=False)
    assert nginx.read_text() == "[Service]\nExecStart=/usr/sbin/nginx\n"


def test_bad_input_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = _tree(tmp_path).root
    code, _, err = _cli(
        capsys, "service", "install", "--root", str(root), "--print", "--name", "a/b"
    )
    assert code == 2 and err.count("\n") == 1 and "is not a unit name" in err
    code, _, err = _cli(capsys, "service", "install", "--root", str(tmp_path / "none"), "--print")
    assert code == 1 and err.count("\n") == 1
    for bad in ('/srv/a"b', "/srv/a\\b", "/srv/a'b", "/srv/a\nb", "/srv/a\tb"):
        with pytest.raises(UsageError, match="cannot hold"):
            unit_word(bad)
    assert unit_word("/srv/a $b 5%", command=True) == '"/srv/a $$b 5%%"'
    assert unit_name(Path("/srv/my tree")) == "runyard-my-tree.service"
    assert unit_name(Path("/srv/x"), "edge") == "edge.service"
    with pytest.raises(SystemdError, match="runyard daemon --root /srv/x"):
        require_systemd(Path("/srv/x"), run_dir=tmp_path / "no-such-dir")


def test_system_unit_runs_the_daemon_as_the_owner_of_temp(tmp_path, capsys, monkeypatch) -> None:
    """The daemon refuses a temp/ that is not its own (doctor): a tree set up by a user gets a
    unit that runs the daemon as that user, not as root."""
    monkeypatch.chdir(tmp_path)
    tree = _tree(tmp_path)
    args = ["service", "install", "--root", str(tree.root), "--print"]
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and "User=" not in out  # this test runs as root, or as the tree's owner
    if os.getuid() != 0:
        return
    os.chown(tree.temp_dir, 65534, 65534)
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and f"User={pwd.getpwuid(65534).pw_name}" in out.splitlines()
    code, out, _ = _cli(capsys, *args, "--run-as", "root")
    assert code == 0 and "User=root" in out.splitlines()
    code, _, err = _cli(capsys, *args, "--run-as", "a b")
    assert code == 2 and "is not a user name" in err
    code, _, err = _cli(capsys, *args, "--run-as", "x", "--user")
    assert code == 2 and "for a system unit" in err


def test_prefix_links_are_writable(tmp_path: Path) -> None:
    """An install prefix's root is DIR/current, whose data/, logs/, temp/ link out of it: the
    unit must let the daemon write where they lead."""
    prefix = tmp_path / "opt"
    version = prefix / "versions" / "1.0.0"
    version.mkdir(parents=True)
    for entry in ("data", "logs", "cache", "temp"):
        (prefix / entry).mkdir()
        (version / entry).symlink_to(Path("../..") / entry)
    (prefix / "current").symlink_to(Path("versions/1.0.0"))
    paths = writable_paths(prefix / "current")
    assert paths == [prefix / "current", *(prefix / e for e in ("data", "logs", "cache", "temp"))]


#: Writes what it inherited of NOTIFY_SOCKET, then idles.
ENV_SPY = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
with open("seen.tmp", "w") as f:
    f.write(os.environ.get("NOTIFY_SOCKET", "(none)"))
os.replace("seen.tmp", "seen")
while True:
    time.sleep(0.05)
"""


def test_services_do_not_inherit_the_daemons_notify_socket(root: Path) -> None:
    """Finding: under Type=notify every service inherited systemd's NOTIFY_SOCKET, so one that
    speaks sd_notify by itself (redis' `supervised auto`) talked to systemd about our unit."""
    tree = build_tree(root, {"spy": ENV_SPY})
    sock_path = str(root.parent / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(sock_path)
        notify.settimeout(20)
        env = {**runyard_env(), "NOTIFY_SOCKET": sock_path}
        d = Daemon(tree)
        d.proc = subprocess.Popen(
            [sys.executable, "-m", "runyard.daemon", "daemon", "--root", str(tree.root)],
            env=env,
            cwd=root.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            assert notify.recv(100) == b"READY=1"
            seen = tree.data_dir / "spy" / "seen"

            wait_for(seen.exists, what="the service to write what it inherited")
            assert seen.read_text() == "(none)"
        finally:
            d.stop()


def test_the_unit_in_operations_md_is_what_render_unit_writes() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md").read_text()
    section = doc.split("## Starting at boot", 1)[1]
    shown = section.split("```ini\n", 1)[1].split("```", 1)[0]
    root = Path("/srv/runtime")
    argv = daemon_argv("/opt/runyard/venv/bin/python", root)
    assert shown == render_unit(root, argv, run_as="runyard", delegate_subgroup=True)


#: Writes into its data dir (the tree, writable) and tries /var/tmp (outside it), then idles.
SANDBOXED = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
nnp = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs:")][0]
try:
    open("/var/tmp/runyard-sandbox-probe", "w").close()
    outside = "written"
except OSError as exc:
    outside = type(exc).__name__ + str(exc.errno)
with open("seen.tmp", "w") as f:
    f.write(f"nnp={nnp} outside={outside}")
os.replace("seen.tmp", "seen")
while True:
    time.sleep(0.05)
"""


def _sandbox_argv(tree_root: Path) -> list[str] | None:
    """A shell line that does what the unit's ProtectSystem=strict + ReadWritePaths=TREE and
    NoNewPrivileges=yes do (a private mount namespace, / read-only, the tree bound writable,
    no_new_privs), then execs the unit's very ExecStart; None where namespaces are not ours."""
    unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
    if os.getuid() != 0 or unshare is None or setpriv is None:
        return None
    probe = subprocess.run(
        [unshare, "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None
    t = shlex.quote(str(tree_root))
    exec_start = " ".join(shlex.quote(a) for a in daemon_argv(sys.executable, tree_root))
    script = (
        "set -e; mount -o remount,bind,ro /; "
        f"mount --bind {t} {t}; mount -o remount,bind,rw {t}; "
        f"exec {shlex.quote(setpriv)} --no-new-privs {exec_start}"
    )
    return [unshare, "-m", "--propagation", "private", "/bin/sh", "-c", script]


def test_supervision_works_inside_the_units_sandbox(root: Path) -> None:
    """The hardening must not break supervision: the daemon under a read-only / with only the
    tree writable, and no_new_privs, reports READY=1, runs a service that writes its data,
    answers the CLI from outside, and stops cleanly. (systemd itself is not PID 1 here: this
    applies the same kernel mechanisms by hand.)"""
    tree = build_tree(root, {"inside": SANDBOXED})
    argv = _sandbox_argv(tree.root)
    if argv is None:
        pytest.skip("no private mount namespace here (needs root and unshare/setpriv)")
    sock_path = str(root.parent / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(sock_path)
        notify.settimeout(20)
        d = Daemon(tree)
        d.proc = subprocess.Popen(
            argv,
            env={**runyard_env(), "NOTIFY_SOCKET": sock_path},
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=open(root.parent / "daemon.stderr", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        try:
            assert notify.recv(100) == b"READY=1", (root.parent / "daemon.stderr").read_text()
            seen = tree.data_dir / "inside" / "seen"
            wait_for(seen.exists, what="the service to write into its data dir")
            assert seen.read_text() == "nnp=1 outside=OSError30"  # EROFS outside the tree
            with d.client(timeout=5) as c:
                wait_for(
                    lambda: c.status(["inside"]).services[0].state == "running",
                    what="inside running, seen from outside the sandbox",
                )
                c.shutdown()
            assert d.proc.wait(timeout=30) == 0
        finally:
            d.stop()
            Path("/var/tmp/runyard-sandbox-probe").unlink(missing_ok=True)
