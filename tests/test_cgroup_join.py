"""The shell step that puts a service in its cgroup before its program runs (daemon/cgroup_join.py):
what the program sees (stdin /dev/null, no cgroup.procs descriptor, its own argv) and the one-line
errors a direct execve would have given. Real processes in a real cgroup, removed afterwards."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from test_containment import require_cgroup2

from runyard.daemon import cgroup as cg
from runyard.daemon.process import SpawnError, spawn, stop_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service_cgroup(tmp_path: Path):
    require_cgroup2()
    tree, why = cg.CgroupTree.create(tmp_path)
    assert tree is not None, why
    path = tree.service("joined")
    yield path
    cg.kill(path)
    asyncio.run(cg.wait_empty(path, time.monotonic() + 10))
    cg.remove(path)
    tree.close()


def _spawn(argv: list[str], cgroup: Path, cwd: Path | str = "/", **kw):
    return spawn(
        argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        cwd=cwd,
        stdout=2,
        stderr=2,
        cgroup=cgroup,
        service="joined",
        **kw,
    )


def test_the_program_runs_in_its_cgroup_with_dev_null_and_no_procs_fd(service_cgroup) -> None:
    handle = _spawn(["sleep", "30"], service_cgroup, no_new_privileges=True)
    try:

        def execed() -> bool:
            return Path(f"/proc/{handle.pid}/exe").resolve().name == "sleep"

        deadline = time.monotonic() + 10
        while not execed() and time.monotonic() < deadline:
            time.sleep(0.002)
        assert execed()
        assert Path(f"/proc/{handle.pid}/cmdline").read_bytes() == b"sleep\x0030\x00"
        assert handle.pid in cg.members(service_cgroup)
        fds = {
            os.readlink(f"/proc/{handle.pid}/fd/{n}") for n in os.listdir(f"/proc/{handle.pid}/fd")
        }
        assert os.readlink(f"/proc/{handle.pid}/fd/0") == "/dev/null"
        assert not any("cgroup" in target for target in fds), fds
        environ = Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0")
        assert [e for e in environ if e] == [
            f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}".encode()
        ]
    finally:
        asyncio.run(stop_process(handle, stop_timeout=2))


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        (None, 0, "No such file or directory"),
        (b"#!/bin/sh\nexit 0\n", 0o644, "Permission denied"),
        (b"echo hi\n", 0o755, "Exec format error"),  # sh would have run it as a script
        (b"#!/nonexistent/runyard-interp -x\n", 0o755, "No such file or directory"),
        # an ELF header for a machine this kernel does not run (e_machine 0x9026: alpha)
        (b"\x7fELF\x02\x01\x01" + bytes(11) + b"\x26\x90" + bytes(44), 0o755, "Exec format error"),
    ],
    ids=["missing", "not-executable", "no-shebang", "missing-interpreter", "foreign-elf"],
)
def test_what_execve_would_refuse_is_a_one_line_spawn_error(
    service_cgroup, tmp_path: Path, content: bytes | None, mode: int, reason: str
) -> None:
    program = tmp_path / "prog"
    if content is not None:
        program.write_bytes(content)
        program.chmod(mode)
    with pytest.raises(SpawnError) as caught:
        _spawn([str(program)], service_cgroup)
    message = str(caught.value)
    assert "\n" not in message and str(program) in message and reason in message
    assert cg.members(service_cgroup) == []


def test_a_script_and_a_relative_program_still_run_joined(service_cgroup, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "bin" / "job"
    script.parent.mkdir()
    # written beside, then renamed: the marker appears only with its whole content
    script.write_text(f'#!/bin/sh\necho "$0 $*" > {marker}.part\nmv {marker}.part {marker}\n')
    script.chmod(0o755)
    handle = _spawn(["./bin/job", "a b", "c"], service_cgroup, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert marker.read_text() == "./bin/job a b c\n"
    finally:
        asyncio.run(stop_process(handle, stop_timeout=2))


def _environ_of_joined(service_cgroup, env: dict[str, str], cwd: Path | str = "/") -> list[bytes]:
    """The environment the program (``sleep``) got after the shell step."""
    handle = spawn(
        ["sleep", "30"],
        env=env,
        cwd=cwd,
        stdout=2,
        stderr=2,
        cgroup=service_cgroup,
        service="joined",
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if Path(f"/proc/{handle.pid}/exe").resolve().name == "sleep":
                break
            time.sleep(0.002)
        assert handle.pid in cg.members(service_cgroup)
        return sorted(e for e in Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0") if e)
    finally:
        asyncio.run(stop_process(handle, stop_timeout=2))


@pytest.mark.parametrize(
    "extra",
    [
        {"spring.profiles.active": "prod", "1ST": "x", "A-B": "y"},
        {"PPID": "1", "OPTIND": "a", "IFS": ","},
    ],
    ids=["not-shell-names", "names-dash-sets"],
)
def test_env_the_shell_would_drop_or_set_reaches_the_program(service_cgroup, extra) -> None:
    env = {"PATH": "/usr/bin:/bin", **extra}
    assert _environ_of_joined(service_cgroup, env) == sorted(
        f"{k}={v}".encode() for k, v in env.items()
    )


def test_a_pwd_in_the_env_that_is_not_the_cwd_reaches_the_program_unchanged(
    service_cgroup, tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "PWD": "/somewhere/else it's $HOME"}
    assert _environ_of_joined(service_cgroup, env, cwd=tmp_path) == sorted(
        f"{k}={v}".encode() for k, v in env.items()
    )


def test_a_relative_path_entry_is_searched_from_the_service_cwd(service_cgroup, tmp_path) -> None:
    """PATH=.:... finds a program in the service's cwd, as execvpe does, not in the daemon's."""
    marker = tmp_path / "ran"
    (tmp_path / "job-in-cwd").write_text(f"#!/bin/sh\necho ran > {marker}\n")
    (tmp_path / "job-in-cwd").chmod(0o755)
    assert not Path("job-in-cwd").exists()  # not in the daemon's (the test's) cwd
    handle = spawn(
        ["job-in-cwd"],
        env={"PATH": ".:/usr/bin:/bin"},
        cwd=tmp_path,
        stdout=2,
        stderr=2,
        cgroup=service_cgroup,
        service="joined",
    )
    try:
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert marker.read_text() == "ran\n"
    finally:
        asyncio.run(stop_process(handle, stop_timeout=2))
