"""``runyard --host BOX:ROOT``: every command over a real sshd (tests/sshbox.py) on 127.0.0.1.

The "box" is this machine reached through a throwaway sshd: the daemon of a tree runs here, and
the CLI and the TUI reach it only through ``ssh -F CONFIG BOX runyard bridge`` (RUNYARD_SSH
adds ``-F``; nothing else of the test's is given to ssh), so what crosses the link is the real
relay: the protocol version handshake, control requests, event streams, the link's loss.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from daemonkit import SLEEPER, ZMQ_IO, Daemon, build_tree, runyard_env, thread_wakeups, wait_for
from sshbox import SshBox, sshbox  # noqa: F401  (sshbox: the fixture)
from test_tui_tmux import Tmux, service_row, until

from runyard.protocol.errors import ProtocolError
from runyard.protocol.relay_frames import FrameReader, Kind, frame
from runyard.protocol.ssh_relay import SshTarget, ssh_argv
from runyard.runtime.core.errors import UsageError

#: A service that prints a numbered line every 50 ms (for ``logs -f``).
TICKER = """
import itertools, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
for i in itertools.count():
    print(f"tick {i}", flush=True)
    time.sleep(0.05)
"""


def remote_env(box: SshBox, root: Path) -> dict[str, str]:
    """The env of a CLI that reaches ``root`` over ssh only; its TMPDIR (where the relay makes
    its private directory) is a fresh one, which must be empty again when the test ends."""
    env = runyard_env()
    env["TMPDIR"] = str(root.parent / "laptop-tmp")
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    env["RUNYARD_SSH"] = box.ssh_command
    env["RUNYARD_HOST"] = f"{box.alias}:{root}"
    return env


def runyard(
    env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runyard.daemon", *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def boxed(root: Path, sshbox: SshBox) -> Iterator[tuple[Daemon, dict[str, str]]]:  # noqa: F811
    """A daemon on a tree of two services, and the env that reaches it only over ssh."""
    tree = build_tree(root, {"alpha": SLEEPER, "ticker": TICKER})
    daemon = Daemon(tree)
    try:
        daemon.start()
        env = remote_env(sshbox, tree.root)
        yield daemon, env
        assert not list(Path(env["TMPDIR"]).iterdir()), "a relay left its directory behind"
    finally:
        daemon.stop()


@pytest.mark.timeout(60)
def test_status_start_stop_over_ssh(boxed: tuple[Daemon, dict[str, str]]) -> None:
    daemon, env = boxed
    r = runyard(env, "status")
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout and "ticker" in r.stdout
    r = runyard(env, "stop", "alpha")
    assert r.returncode == 0, r.stderr
    with daemon.client() as c:
        assert {s.name: s.state for s in c.status().services}["alpha"] == "stopped"
    r = runyard(env, "start", "alpha", "--json")
    assert r.returncode == 0, r.stderr
    assert '"running"' in r.stdout or '"starting"' in r.stdout
    # A command that reads the box's files runs there: the same tree, seen over ssh.
    r = runyard(env, "runtime", "ls")
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout and "ticker" in r.stdout


def _children(pid: int) -> list[int]:
    """Children of every thread of pid (the relay starts ssh from its own thread)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _ssh_child(pid: int) -> int:
    """The pid of the ssh client a runyard process runs for its link."""
    for child in _children(pid):
        if Path(f"/proc/{child}/comm").read_text().strip() == "ssh":
            return child
    return 0


def _read_until(proc: subprocess.Popen[str], want: str, timeout: float) -> str:
    """Lines of proc's stdout until one contains ``want`` (read with a deadline)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.2):
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"logs -f ended before {want!r}")
            if want in line:
                return line
    raise AssertionError(f"timed out after {timeout}s waiting for {want!r} in logs -f")


def _tick(line: str) -> int:
    return int(line.rsplit("tick ", 1)[1])


@pytest.mark.timeout(60)
def test_logs_follow_over_ssh_survives_the_ssh_client_killed(
    boxed: tuple[Daemon, dict[str, str]],
) -> None:
    _daemon, env = boxed
    proc = subprocess.Popen(
        [sys.executable, "-m", "runyard.daemon", "logs", "ticker", "-f", "-n", "1"],
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        first = _tick(_read_until(proc, "tick ", 20))
        later = _tick(_read_until(proc, "tick ", 10))
        assert later > first
        ssh = wait_for(lambda: _ssh_child(proc.pid), 10, "the link's ssh process")
        os.kill(int(ssh), 9)  # the link drops; the relay starts ssh again
        wait_for(lambda: _ssh_child(proc.pid) not in (0, ssh), 15, "a new ssh process")
        # Lines still come, newer than any seen before the link dropped.
        deadline = time.monotonic() + 20
        while _tick(_read_until(proc, "tick ", 20)) <= later + 5:
            assert time.monotonic() < deadline, "no new tick after the link came back"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.timeout(90)
def test_tui_over_ssh_shows_unreachable_when_the_link_is_killed_and_reconnects(
    boxed: tuple[Daemon, dict[str, str]],
    sshbox: SshBox,  # noqa: F811
    root: Path,
) -> None:
    _daemon, env = boxed
    tmux = Tmux(require_tool("tmux"), root.parent)
    try:
        tmux.start(
            f"env RUNYARD_SSH='{env['RUNYARD_SSH']}' TMPDIR={env['TMPDIR']} "
            f"{sys.executable} -m runyard.daemon "
            f"--host {env['RUNYARD_HOST']} tui",
            cwd=root.parent,
        )
        until(
            tmux,
            lambda s: all("running" in service_row(s, n) for n in ("alpha", "ticker")),
            "alpha and ticker shown running over ssh",
        )
        # The box drops the connection and refuses new ones for a while (its key withdrawn):
        # the TUI must say so, then come back by itself once logins work again.
        assert sshbox.dir is not None
        keys = sshbox.dir / "authorized_keys" / "root"
        keys.rename(keys.with_name("withdrawn"))
        assert sshbox.kill_sessions()
        until(tmux, lambda s: "unreachable, retrying" in s, "the unreachable banner")
        keys.with_name("withdrawn").rename(keys)
        until(
            tmux,
            lambda s: "unreachable" not in s and "running" in service_row(s, "alpha"),
            "the TUI reconnected over a new ssh link",
        )
        tmux.keys("q")
        wait_for(lambda: not tmux.alive(), 15, "the TUI to exit on q")
    finally:
        tmux.kill()


@pytest.mark.timeout(60)
def test_protocol_version_handshake_over_the_relay(
    boxed: tuple[Daemon, dict[str, str]],
    sshbox: SshBox,  # noqa: F811
) -> None:
    from runyard.protocol.client import Client, UnsupportedVersion
    from runyard.protocol.messages import PROTOCOL_VERSION, Hello
    from runyard.protocol.ssh_relay import SshRelay

    daemon, _env = boxed
    with SshRelay(SshTarget(sshbox.alias, str(daemon.tree.root)), sshbox.ssh_command) as relay:
        assert relay.remote["root"] == str(daemon.tree.root)
        with Client(relay.root, timeout=10) as client:
            hello = client.hello()
            assert hello.protocol == PROTOCOL_VERSION
            assert hello.root == str(daemon.tree.root)
            with pytest.raises(UnsupportedVersion):
                client.request(Hello(protocol=PROTOCOL_VERSION + 1, client="future"))
    assert not relay.root.exists()  # the relay's private directory is gone with it


@pytest.mark.timeout(60)
def test_a_client_through_the_relay_keeps_its_heartbeats_end_to_end(
    boxed: tuple[Daemon, dict[str, str]],
    sshbox: SshBox,  # noqa: F811
) -> None:
    """A client of a daemon's own ipc socket sends no heartbeats (issue 16, idle CPU); one of a
    ``--host`` relay's does, so a box gone quiet is noticed in 1.5 s: an idle client through
    the relay wakes the box's daemon every HEARTBEAT_MS."""
    from runyard.protocol.client import Client
    from runyard.protocol.ssh_relay import SshRelay
    from runyard.protocol.transport import HEARTBEAT_MS

    daemon, _env = boxed
    target = SshTarget(sshbox.alias, str(daemon.tree.root))
    with SshRelay(target, sshbox.ssh_command) as relay, Client(relay.root, timeout=10) as client:
        client.hello()
        before = thread_wakeups(daemon.proc.pid, ZMQ_IO)
        time.sleep(5 * HEARTBEAT_MS / 1000)
        assert thread_wakeups(daemon.proc.pid, ZMQ_IO) - before >= 4


@pytest.mark.timeout(60)
def test_no_daemon_on_the_box_is_said_about_the_box(
    root: Path,
    sshbox: SshBox,  # noqa: F811
) -> None:
    tree = build_tree(root, {"alpha": SLEEPER})  # a tree, but no daemon
    r = runyard(remote_env(sshbox, tree.root), "status")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"{sshbox.alias}:{tree.root}" in line and "runyard-ssh-" not in line
    assert f"runyard --host {sshbox.alias}:{tree.root} up" in line


@pytest.mark.timeout(60)
def test_ssh_that_cannot_log_in_is_one_line_exit_3(root: Path, sshbox: SshBox) -> None:  # noqa: F811
    assert sshbox.dir is not None
    (sshbox.dir / "known_hosts").write_text("")  # the box's host key is no longer known
    env = remote_env(sshbox, root)
    for command in (["status"], ["runtime", "ls"]):
        r = runyard(env, *command)
        assert r.returncode == 3, (command, r.stderr)
        assert "Traceback" not in r.stderr
        assert f"ssh to {sshbox.alias}" in r.stderr.splitlines()[-1]
    r = runyard(env, "status")
    assert "Host key verification failed" in r.stderr


@pytest.mark.parametrize(
    ("text", "destination", "root"),
    [
        ("box", "box", None),
        ("ops@box", "ops@box", None),
        ("ops@box:/srv/runtime", "ops@box", "/srv/runtime"),
        ("box:rel/tree", "box", "rel/tree"),
        ("[::1]:/srv/rt", "::1", "/srv/rt"),
    ],
)
def test_host_parses(text: str, destination: str, root: str | None) -> None:
    assert SshTarget.parse(text) == SshTarget(destination, root)


@pytest.mark.parametrize("text", ["", "-oProxyCommand=x", "a b", "box:", "@box", "ops@"])
def test_a_bad_host_is_refused(text: str) -> None:
    with pytest.raises(UsageError):
        SshTarget.parse(text)


def test_a_bad_host_on_the_command_line_is_a_usage_error() -> None:
    env = runyard_env()
    r = runyard(env, "--host", "-oProxyCommand=touch /tmp/x", "status")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("runyard: --host")


def test_ssh_argv_passes_nothing_of_ours_and_quotes_the_root() -> None:
    argv = ssh_argv(SshTarget("ops@box", "/srv/my tree"), None, ["bridge"])
    assert argv == ["ssh", "-T", "--", "ops@box", "runyard --root '/srv/my tree' bridge"]
    argv = ssh_argv(SshTarget("box"), "ssh -F '/x y/cfg'", ["status", "--json"])
    assert argv == ["ssh", "-F", "/x y/cfg", "-T", "--", "box", "runyard status --json"]


def test_frames_round_trip_and_skip_a_chatty_login() -> None:
    reader = FrameReader(greeting=True)
    data = b"Welcome to the box!\n" + b"RUNYARD-BRIDGE 1\n"
    data += frame(Kind.HELLO, 0, b"{}") + frame(Kind.DATA, 7, b"x" * 1000)
    got = []
    for i in range(0, len(data), 5):  # in small pieces, as a pipe may give them
        got += reader.feed(data[i : i + 5])
    assert got == [(Kind.HELLO, 0, b"{}"), (Kind.DATA, 7, b"x" * 1000)]
    with pytest.raises(ProtocolError):
        FrameReader().feed(b"\x63" + b"\0" * 8)  # an unknown kind


@pytest.mark.timeout(60)
def test_a_box_without_runyard_on_its_path_is_said_in_one_line(
    root: Path,
    sshbox: SshBox,  # noqa: F811
) -> None:
    env = remote_env(sshbox, root)
    env["RUNYARD_REMOTE"] = "/nonexistent/runyard"
    r = runyard(env, "status")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "/nonexistent/runyard: No such file or directory" in line


def test_an_ssh_command_that_does_not_exist_is_one_line_exit_3(tmp_path: Path) -> None:
    env = runyard_env()
    env["TMPDIR"] = str(tmp_path)
    r = runyard(env, "--host", "box", "--ssh-command", "/nonexistent/ssh", "status")
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip() == "runyard: cannot run '/nonexistent/ssh': No such file or directory"
    assert not list(tmp_path.iterdir())  # the relay's directory is gone


@pytest.mark.timeout(60)
def test_status_through_a_proxyjump_bastion_in_the_operators_ssh_config(
    boxed: tuple[Daemon, dict[str, str]],
    sshbox: SshBox,  # noqa: F811
) -> None:
    """The bastion is the same sshd (a jump to itself): runyard only runs ssh, and ssh's
    config alone sends the link through the bastion's forwarding."""
    daemon, env = boxed
    assert sshbox.dir is not None
    config = sshbox.config.read_text()
    jumped = config.split("Host ", 1)[1].split("\n", 1)[1]  # the box's settings, again
    sshbox.config.write_text(config + f"Host behind-bastion\n  ProxyJump {sshbox.alias}\n{jumped}")
    env = dict(env, RUNYARD_HOST=f"behind-bastion:{daemon.tree.root}")

    def logins() -> tuple[int, int]:
        log = sshbox.log.read_text()
        return log.count("Accepted publickey"), log.count("Starting session")

    before = logins()
    r = runyard(env, "status")
    assert r.returncode == 0, r.stderr
    assert "alpha" in r.stdout
    # Two logins, one session: the bastion's (a forward, no command) and the box's (the bridge).
    after = logins()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


def test_two_different_roots_for_the_box_are_a_usage_error() -> None:
    r = runyard(runyard_env(), "--host", "box:/srv/a", "--root", "/srv/b", "runtime", "ls")
    assert r.returncode == 2
    assert r.stderr.strip() == "runyard: two roots for box: :/srv/a and --root /srv/b"
