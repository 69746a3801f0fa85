"""A real third-party daemon under Runyard: Debian's redis-server, acquired, run, probed, stopped.

The archive is built here from the installed binary (one ELF needing only system libraries),
published in a catalog on a loopback http.server, and acquired with ``ensure_service``; a real
daemon then runs it with a tcp readiness probe, and redis-cli talks to it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import require_tool
from daemonkit import Daemon, wait_for

from archives import archive_record, make_tar, write_catalog
from runyard import runtime
from runyard.runtime.core.tree import RuntimeTree

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def redis_version(server: str) -> str:
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10)
    found = re.search(r"\bv=(\d+\.\d+\.\d+)", out.stdout)
    assert found, f"cannot read the version of {server}: {out.stdout!r} {out.stderr!r}"
    return found.group(1)


def cli(redis_cli: str, port: int, *args: str) -> str:
    out = subprocess.run(
        [redis_cli, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_redis_server_runs_ready_answers_and_stops(root: Path, http_dir) -> None:
    server_bin = require_tool("redis-server")
    redis_cli = require_tool("redis-cli")
    version = redis_version(server_bin)
    port = free_port()

    # The archive: the installed binary (Debian's redis-server is a symlink to redis-check-rdb,
    # which acts as the server when argv[0] says redis-server) copied as bin/redis-server.
    directory, http = http_dir
    archive = make_tar(
        directory / f"redis-{version}.tar.gz",
        {"bin/redis-server": Path(server_bin).resolve().read_bytes()},
    )
    record = archive_record(
        archive,
        "redis",
        version,
        binPath="bin/redis-server",
        args=["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        defaultPorts=[{"name": "redis", "port": port}],
    )
    write_catalog(directory / "catalog.json", [record])

    tree = RuntimeTree(root)
    tree.init()
    major = version.split(".")[0]
    binary = runtime.ensure_service(
        "redis", f"{major}.x", root=root, catalog=f"{http.url}/catalog.json"
    )
    assert binary.version == version
    assert f"/redis-{version}.tar.gz" in http.requests
    installed = tree.install_dir("redis", version, record["os"], record["arch"])
    assert (installed / "bin" / "redis-server").read_bytes() == Path(server_bin).read_bytes()

    (root.parent / "runyard.toml").write_text(
        f'root = "{root.name}"\n'
        + textwrap.dedent(
            """
            [services.redis]
            stop_timeout = 10
            readiness = { kind = "tcp", port = "redis", interval = 0.1, timeout = 0.5 }
            """
        )
    )
    d = Daemon(tree)
    try:
        d.start()
        with d.client() as c:

            def ready() -> bool:
                (s,) = c.status(["redis"]).services
                assert s.state in ("starting", "running"), f"redis {s.state}: {s.reason}"
                return s.ready is True

            wait_for(ready, 30, "redis ready")
            (s,) = c.status(["redis"]).services
            assert s.version == version and f"127.0.0.1:{port}" in s.ready_detail
            assert [(p.name, p.port) for p in s.ports] == [("redis", port)]
            pid = s.pid
            assert pid is not None
            # The process is the tree's copy, running in the service's data dir.
            proc = psutil.Process(pid)
            assert Path(proc.exe()) == installed / "bin" / "redis-server"
            assert Path(proc.cwd()) == tree.data_dir / "redis"

            assert cli(redis_cli, port, "ping") == "PONG"
            assert cli(redis_cli, port, "SET", "k", "v") == "OK"
            assert cli(redis_cli, port, "GET", "k") == "v"
            assert cli(redis_cli, port, "CONFIG", "GET", "dir").splitlines() == [
                "dir",
                str(tree.data_dir / "redis"),
            ]
            assert cli(redis_cli, port, "CONFIG", "GET", "save") == "save"  # value "": no RDB

            (stopped,) = c.stop(["redis"]).services
            assert stopped.state == "stopped" and stopped.pid is None
        assert gone(pid)
        assert not port_open(port)
        log = (tree.logs_dir / "redis" / "redis.log").read_text()
        assert re.search(r"Ready to accept connections", log), log[-2000:]
        # SIGTERM made redis shut down cleanly, and it said so.
        assert re.search(r"ready to exit, bye bye", log, re.I), log[-2000:]
    finally:
        d.stop()
