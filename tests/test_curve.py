"""TCP control with CurveZMQ: a real daemon, real keys, real tcp sockets on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from daemonkit import SLEEPER, ZMQ_IO, Daemon, build_tree, thread_wakeups, wait_for

from runyard.protocol import messages as m
from runyard.protocol.client import AsyncClient, Client, ClientError, DaemonUnreachable
from runyard.protocol.transport import HEARTBEAT_MS
from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree
from runyard.runtime.signing.keys import CurveKeyFiles, generate_curve_key

pytestmark = pytest.mark.timeout(60)


def free_port_pair() -> int:
    """A port P on 127.0.0.1 with P and P+1 free (control and events)."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair on 127.0.0.1")


class Keys:
    def __init__(self, base: Path) -> None:
        self.server = generate_curve_key(base / "keys" / "server")
        self.client = generate_curve_key(base / "keys" / "client")
        self.stranger = generate_curve_key(base / "elsewhere" / "stranger")
        authorized = base / "authorized"
        authorized.mkdir()
        shutil.copy(self.client.public, authorized / "client.key")


def curve_project(port: int) -> str:
    """The [daemon] table of a project listening on 127.0.0.1:``port`` with the Keys layout."""
    return f"""
    [daemon]
    tcp = "127.0.0.1:{port}"
    curve_secret_key = "keys/server.key_secret"
    curve_authorized_dir = "authorized"
    """


@pytest.fixture
def curve_daemon(root):
    keys = Keys(root.parent)
    port = free_port_pair()
    tree = build_tree(root, {"a": SLEEPER}, curve_project(port))
    d = Daemon(tree)
    try:
        d.start()  # answers hello on ipc: the local sockets are untouched by ZAP
        yield d, keys, port
    finally:
        d.stop()


def tcp_client(port: int, server: CurveKeyFiles, client: CurveKeyFiles, **kw) -> Client:
    return Client(
        endpoint=f"tcp://127.0.0.1:{port}",
        events_endpoint=f"tcp://127.0.0.1:{port + 1}",
        curve_server_key=server.public_key,
        curve_client_keys=client.secret,
        **kw,
    )


def test_authorized_client_gets_status_and_events_over_tcp(curve_daemon) -> None:
    d, keys, port = curve_daemon
    with tcp_client(port, keys.server, keys.client, timeout=10) as c:
        assert c.hello().root == str(d.tree.root)
        wait_for(lambda: c.status(["a"]).services[0].state == "running", what="a running")
        with c.events("state.a", timeout=10) as stream:
            c.stop(["a"])
            seen = []
            while not seen or seen[-1] != "stopped":
                event = stream.get(10)
                assert isinstance(event, m.StateEvent)
                seen.append(event.service.state)
    # The server key may also be given as its public certificate file.
    with Client(
        endpoint=f"tcp://127.0.0.1:{port}",
        events_endpoint=f"tcp://127.0.0.1:{port + 1}",
        curve_server_key=keys.server.public,
        curve_client_keys=keys.client.secret,
    ) as c:
        assert c.status(["a"]).services[0].state == "stopped"


async def test_async_client_over_tcp(curve_daemon) -> None:
    d, keys, port = curve_daemon
    async with AsyncClient(
        endpoint=f"tcp://127.0.0.1:{port}",
        events_endpoint=f"tcp://127.0.0.1:{port + 1}",
        curve_server_key=keys.server.public_key,
        curve_client_keys=keys.client.secret,
        timeout=10,
    ) as c:
        assert (await c.hello()).pid == d.proc.pid
        assert [s.name for s in (await c.status()).services] == ["a"]
    async with AsyncClient(
        endpoint=f"tcp://127.0.0.1:{port}",
        events_endpoint=f"tcp://127.0.0.1:{port + 1}",
        curve_server_key=keys.server.public_key,
        curve_client_keys=keys.stranger.secret,
        timeout=1,
    ) as c:
        with pytest.raises(DaemonUnreachable, match=REFUSED):
            await c.status()


#: What a client whose key the daemon does not authorize is told, whole.
REFUSED = (
    r"^the daemon at tcp://127\.0\.0\.1:\d+ refused this client's CurveZMQ key "
    r"\(is its public key in the daemon's curve_authorized_dir\?\)$"
)


def test_an_idle_client_over_tcp_still_sends_heartbeats(curve_daemon) -> None:
    """Heartbeats stay where a daemon's host can vanish with the connection left open: an
    idle client over tcp PINGs every HEARTBEAT_MS, and the daemon's zmq I/O thread wakes to
    answer (over ipc nothing wakes it: test_daemon_footprint)."""
    d, keys, port = curve_daemon
    with tcp_client(port, keys.server, keys.client, timeout=10) as c:
        c.hello()
        before = thread_wakeups(d.proc.pid, ZMQ_IO)
        time.sleep(5 * HEARTBEAT_MS / 1000)
        assert thread_wakeups(d.proc.pid, ZMQ_IO) - before >= 4


def test_unauthorized_key_is_told_it_was_refused_not_that_the_daemon_went_away(
    curve_daemon,
) -> None:
    d, keys, port = curve_daemon
    with tcp_client(port, keys.server, keys.stranger, timeout=5) as c:
        began = time.monotonic()
        with pytest.raises(DaemonUnreachable, match=REFUSED):
            c.status()
        assert time.monotonic() - began < 2  # refused: no use waiting out the timeout
        with pytest.raises(DaemonUnreachable, match=REFUSED):  # a second try, a fresh socket
            c.hello()
    with (
        tcp_client(port, keys.server, keys.stranger, timeout=1) as c,
        pytest.raises(DaemonUnreachable, match="could not connect"),
    ):
        c.events()
    # A client that trusts the wrong server key never completes the handshake either.
    with (
        tcp_client(port, keys.stranger, keys.client, timeout=1) as c,
        pytest.raises(
            DaemonUnreachable,
            match=r"^no reply from tcp://\S+ within 1s: the CurveZMQ handshake failed ",
        ),
    ):
        c.status()
    # The authorized client still works, and so does ipc.
    with tcp_client(port, keys.server, keys.client, timeout=10) as c:
        c.status()
    with d.client() as c:
        c.status()


def test_plain_tcp_is_refused_by_the_client_and_unanswered_by_the_daemon(curve_daemon) -> None:
    _, keys, port = curve_daemon
    for kw in ({}, {"curve_server_key": keys.server.public_key}):
        with pytest.raises(ClientError, match=r"^tcp endpoints need CurveZMQ keys: "):
            Client(
                endpoint=f"tcp://127.0.0.1:{port}",
                events_endpoint=f"tcp://127.0.0.1:{port + 1}",
                **kw,
            )
    with pytest.raises(ClientError, match=r"^tcp endpoints need CurveZMQ keys: "):
        AsyncClient(
            endpoint=f"tcp://127.0.0.1:{port}", events_endpoint=f"tcp://127.0.0.1:{port + 1}"
        )
    # A raw plain-text DEALER (what the client library refuses to be) gets nothing back.
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send(m.encode(m.Hello(id="plain")))
        assert not sock.poll(1000, zmq.POLLIN)
        sock.close(linger=0)
    finally:
        ctx.destroy(linger=0)


def run_daemon(tree: RuntimeTree) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "runyard.daemon",
            "daemon",
            "--root",
            str(tree.root),
            "--project",
            str(tree.root.parent / "runyard.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("daemon_table", "message"),
    [
        (
            'tcp = "127.0.0.1:{port}"\n',
            "daemon.tcp: TCP control is CurveZMQ only, never plain: "
            "set daemon.curve_secret_key and daemon.curve_authorized_dir too",
        ),
        (
            'tcp = "127.0.0.1:{port}"\ncurve_secret_key = "keys/server.key_secret"\n',
            "set daemon.curve_authorized_dir too",
        ),
        (
            'tcp = "127.0.0.1:{port}"\ncurve_secret_key = "keys/server.key"\n'
            'curve_authorized_dir = "authorized"\n',
            "daemon.curve_secret_key: ",
        ),
        (
            'tcp = "tcp://127.0.0.1:{port}"\ncurve_secret_key = "keys/server.key_secret"\n'
            'curve_authorized_dir = "authorized"\n',
            "daemon.tcp: expected HOST:PORT",
        ),
    ],
)
def test_tcp_without_curve_refuses_to_start(root, daemon_table: str, message: str) -> None:
    Keys(root.parent)
    tree = RuntimeTree(root)
    init_tree(tree)
    port = free_port_pair()
    (root.parent / "runyard.toml").write_text(
        f'root = "{root.name}"\n[daemon]\n' + daemon_table.format(port=port)
    )
    out = run_daemon(tree)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"runyard: {root.parent / 'runyard.toml'}: ")
    assert message in lines[0]
    # Nothing was bound: no ipc socket files, nobody on the tcp port.
    assert not list(tree.temp_dir.glob("*.sock"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_readable_secret_key_is_refused(root) -> None:
    keys = Keys(root.parent)
    keys.server.secret.chmod(0o644)
    tree = RuntimeTree(root)
    init_tree(tree)
    (root.parent / "runyard.toml").write_text(
        f'root = "{root.name}"\n[daemon]\ntcp = "127.0.0.1:{free_port_pair()}"\n'
        'curve_secret_key = "keys/server.key_secret"\ncurve_authorized_dir = "authorized"\n'
    )
    out = run_daemon(tree)
    assert out.returncode == 1
    assert "daemon.curve_secret_key: " in out.stderr and "chmod 600" in out.stderr
