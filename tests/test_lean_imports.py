"""What keeps OpenSSL out of an idle daemon still works when it is needed (issue 16, idle RSS):
asyncio's TLS after ``lazy_ssl.import_asyncio``, sha256 from the builtin and from OpenSSL.

Each case runs in a fresh interpreter: what a process has imported is the thing under test.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from runyard.runtime.core.digest import file_sha256, hash_file, sha256


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


LAZY_SSL = """
import socket, sys
from runyard.daemon.lazy_ssl import import_asyncio
import_asyncio()
import asyncio
assert "ssl" not in sys.modules and "_ssl" not in sys.modules, "asyncio imported ssl"

async def garbage(reader, writer):
    writer.write(b"not a TLS server\\r\\n" * 20)
    await writer.drain()
    writer.close()

async def main():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    await loop.sock_sendall(a, b"x")  # asyncio asks ssl.SSLSocket of each socket it is given
    assert await loop.sock_recv(b, 1) == b"x"
    print("ssl after sockets:", "ssl" in sys.modules)
    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await asyncio.open_connection("127.0.0.1", port, ssl=True)
    except OSError as exc:
        print("tls:", type(exc).__module__, type(exc).__name__)
    server.close()
    await server.wait_closed()

asyncio.run(main())
"""


def test_asyncio_imported_without_ssl_loads_it_for_the_first_tls_connection() -> None:
    out = _run(LAZY_SSL)
    assert "ssl after sockets: False" in out, out
    # The handshake ran through the real ssl (an SSLError from the garbage, not asyncio's
    # "ssl module not available" RuntimeError or a NameError on sslproto.SSLAgainErrors).
    assert "tls: ssl SSLError" in out, out


def test_the_builtin_sha256_and_openssl_agree(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = sha256()
    h.update(data[:1000])
    h.update(data[1000:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hash_file(path) == (hashlib.sha256(data).hexdigest(), len(data))
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_small_files_hash_without_openssl_and_bulk_takes_it(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"x" * 100)
    out = _run(
        "import sys\n"
        "from runyard.runtime.core import digest\n"
        f"a = digest.hash_file({str(small)!r})\n"
        "digest.sha256(b'audit line').hexdigest()\n"
        "print('openssl after small:', '_hashlib' in sys.modules)\n"
        "digest._budget[0] = 10  # the process has hashed its BUILTIN_BULK with the builtin\n"
        f"b = digest.hash_file({str(small)!r})\n"
        "print('openssl after bulk:', '_hashlib' in sys.modules, a == b)\n"
    )
    assert "openssl after small: False" in out, out
    assert "openssl after bulk: True True" in out, out


def test_proctable_reads_what_psutil_gave_the_daemon() -> None:
    """The daemon reads start times from /proc itself (no psutil import): a create_time recorded
    in state.json by a daemon that used psutil must still name the same process."""
    import os

    import psutil

    from runyard.daemon import proctable

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert proctable.boot_time() == psutil.boot_time()
        for pid in (os.getpid(), child.pid):
            assert proctable.create_time(pid) == psutil.Process(pid).create_time()
        assert {os.getpid(), child.pid} <= set(proctable.pids())
    finally:
        child.kill()
        child.wait()
    assert proctable.create_time(child.pid) is None  # reaped: gone


def test_the_daemon_log_rotates_as_rotating_file_handler_does(tmp_path: Path) -> None:
    """daemon.log's handler no longer comes from logging.handlers (0.2 MiB with pickle for an
    idle daemon): the same records give the same files as RotatingFileHandler's."""
    import logging
    import logging.handlers

    from runyard.daemon.logs.daemon_log import _PrivateRotatingFileHandler

    def write(handler: logging.Handler) -> dict[str, str]:
        logger = logging.getLogger(f"runyard.test.rotation.{id(handler)}")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            for i in range(10):
                logger.warning("record %02d %s", i, "x" * (i * 7))
        finally:
            logger.removeHandler(handler)
            handler.close()
        folder = Path(handler.baseFilename).parent
        return {p.name: p.read_text() for p in sorted(folder.iterdir())}

    (tmp_path / "ours").mkdir()
    (tmp_path / "stdlib").mkdir()
    ours = write(_PrivateRotatingFileHandler(tmp_path / "ours" / "daemon.log", 100, 2))
    stdlib = write(
        logging.handlers.RotatingFileHandler(
            tmp_path / "stdlib" / "daemon.log", maxBytes=100, backupCount=2, encoding="utf-8"
        )
    )
    assert sorted(ours) == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert ours == stdlib


#: A daemon launch that records, once its boot is done, which of runyard's classes were made by
#: @dataclass (each costs an exec of its generated methods: 15 of them were ~9 ms of a ~250 ms
#: cold start of 50 services).
LAUNCH_RECORDING_IMPORTS = """
import dataclasses, json, os, sys
made = []
real = dataclasses._process_class

def counted(cls, *args, **kwargs):
    if cls.__module__.startswith("runyard"):
        made.append(f"{cls.__module__}.{cls.__qualname__}")
    return real(cls, *args, **kwargs)

dataclasses._process_class = counted
from runyard.daemon.cli import main
from runyard.daemon import supervisor

boot = supervisor.Supervisor.boot

async def recorded(self, *args, **kwargs):
    await boot(self, *args, **kwargs)
    record = {"dataclasses": made}
    with open(os.environ["LEAN"], "w") as f:
        json.dump(record, f)

supervisor.Supervisor.boot = recorded
sys.argv = ["runyard", *sys.argv[1:]]
sys.exit(main())
"""


def test_a_daemon_launch_makes_no_dataclass(root, daemons, monkeypatch) -> None:
    """Regression (issue 16, cold start): 15 dataclasses took ~9 ms of a launch's imports."""
    import json

    from daemonkit import build_tree, wait_for

    tree = build_tree(root, {"idle": "import time\ntime.sleep(1000)\n"}, "")
    script = root.parent / "lean.py"
    script.write_text(LAUNCH_RECORDING_IMPORTS)
    record = root.parent / "lean.json"
    monkeypatch.setenv("LEAN", str(record))
    d = daemons(tree, [sys.executable, str(script)]).start()
    with d.client() as c:  # the daemon works: the boot's doctor checks and state writes ran
        wait_for(lambda: [s.state for s in c.status().services] == ["running"], 30, "running")
    got = json.loads(record.read_text())
    assert got == {"dataclasses": []}, got
