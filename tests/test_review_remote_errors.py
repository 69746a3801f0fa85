"""Review finding: a command run on the box of ``--host`` (not relayed: ``runtime ls``,
``bundle ...``) with an ssh client that cannot be run, or an ``--ssh-command`` that does not
split, ended in "internal error: FileNotFoundError" / "ValueError: No closing quotation"; the
relayed commands already said "cannot run 'ssh'" (exit 3) for the same cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from daemonkit import runyard_env

pytestmark = pytest.mark.timeout(60)


def _runyard(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = runyard_env()
    env["TMPDIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=50,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", [["runtime", "ls"], ["status"]])
def test_an_ssh_client_that_cannot_run_is_one_line_exit_3(tmp_path: Path, command) -> None:
    missing = str(tmp_path / "no-such-ssh")
    r = _runyard(tmp_path, "--host", "box", "--ssh-command", missing, *command)
    assert r.returncode == 3, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert f"cannot run {missing!r}" in line


@pytest.mark.parametrize("command", [["runtime", "ls"], ["status"]])
def test_an_ssh_command_that_does_not_split_is_a_usage_error(tmp_path: Path, command) -> None:
    r = _runyard(tmp_path, "--host", "box", "--ssh-command", "ssh -F 'unclosed", *command)
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("runyard: --ssh-command"), line


@pytest.mark.parametrize(
    ("text", "destination", "root"),
    [
        ("ops@[::1]:/srv/rt", "ops@::1", "/srv/rt"),
        ("ops@[fe80::1%eth0]", "ops@fe80::1%eth0", None),
        ("[::1]:/srv/rt", "::1", "/srv/rt"),
        ("box:/srv/[x]", "box", "/srv/[x]"),
    ],
)
def test_user_at_a_bracketed_ipv6_address_parses(text: str, destination: str, root) -> None:
    """Review finding: ``ops@[::1]:/srv/rt`` split at the first ':' inside the brackets and
    gave the ssh destination ``ops@[`` (only a bare ``[v6]`` was understood)."""
    from runyard.protocol.ssh_relay import SshTarget

    assert SshTarget.parse(text) == SshTarget(destination, root)


@pytest.mark.parametrize(
    ("argv", "remote"),
    [
        (["--hos", "box", "runtime", "ls"], ["runtime", "ls"]),
        (["--ho=box", "runtime", "ls"], ["runtime", "ls"]),
        (["runtime", "ls", "--ssh-c", "ssh -F x", "--host", "box"], ["runtime", "ls"]),
        (["--host", "box", "runs", "--", "--host"], ["runs", "--", "--host"]),
    ],
)
def test_the_box_gets_no_local_option_even_abbreviated(argv: list[str], remote: list[str]) -> None:
    """Review finding: argparse takes ``--hos box`` for ``--host box``, but only the full
    spellings were kept from the command run on the box, whose runyard then went over ssh
    again (to ``box`` from the box itself)."""
    from runyard.daemon.cli import build_parser
    from runyard.daemon.cli.remote_cmd import _strip_local

    if "--" not in argv:
        args = build_parser().parse_args(argv)
        assert args.host == "box"  # what argparse made of it
    assert _strip_local(argv) == remote
