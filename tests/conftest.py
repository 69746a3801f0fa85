"""Shared test helpers: system tools that may be missing, a fresh runtime tree."""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from runyard.runtime.core.manifest import init_tree
from runyard.runtime.core.tree import RuntimeTree

# CI runs the same examples every time (no flaky reds); locally hypothesis explores freely.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: a test at full strength that takes 30 s or more (-m 'not slow' skips it)"
    )


def require_tool(name: str) -> str:
    """Path of a system tool; skip when it is missing, but fail under CI=true.

    CI installs every tool the suite needs (.ci/run), so a skip there would hide a gap.
    """
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"system tool {name!r} is missing under CI=true (.ci/run must install it)")
    pytest.skip(f"system tool {name!r} is not installed")


@pytest.fixture
def tree(tmp_path: Path) -> RuntimeTree:
    """An initialised, empty runtime tree under tmp_path."""
    t = RuntimeTree(tmp_path / "runtime")
    init_tree(t)
    return t


class CountingServer:
    """A real http.server on loopback (127.0.0.1, or ``host``) serving one directory, counting
    the requests it gets.

    ``authorizations`` holds the Authorization header of every request (None when absent).
    With ``basic_auth=(user, password)`` a request without exactly those credentials gets
    401; ``redirects`` maps a request path to the Location of a 302 answering it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        host: str = "127.0.0.1",
        basic_auth: tuple[str, str] | None = None,
        redirects: dict[str, str] | None = None,
    ) -> None:
        import base64
        import functools
        import http.server
        import threading

        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        self.redirects = redirects if redirects is not None else {}
        outer = self
        expected = None
        if basic_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(basic_auth).encode()).decode()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                outer.authorizations.append(self.headers.get("Authorization"))
                if expected is not None and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="runyard-test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                super().do_GET()

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def http_dir(tmp_path: Path):
    """(directory, server): files written into directory are served over loopback HTTP."""
    served = tmp_path / "served"
    served.mkdir()
    server = CountingServer(served)
    try:
        yield served, server
    finally:
        server.close()


@pytest.fixture
def http_server() -> Iterator[Callable[..., CountingServer]]:
    """``http_server(directory, basic_auth=..., redirects=...)``: a CountingServer closed when
    the test ends."""
    started: list[CountingServer] = []

    def make(directory: Path, **options: object) -> CountingServer:
        server = CountingServer(directory, **options)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def root() -> Iterator[Path]:
    """A runtime tree path under /tmp short enough for ipc sockets; removed afterwards."""
    from daemonkit import short_root

    r = short_root()
    yield r
    shutil.rmtree(r.parent, ignore_errors=True)


def _runyard_cgroups() -> set[Path]:
    from runyard.daemon import cgroup as cg

    mount, own = cg.cgroup2_mount(), cg.cgroup_of()
    if mount is None or own is None:
        return set()
    return set((mount / own.lstrip("/")).glob("runyard-*"))


@pytest.fixture(scope="session", autouse=True)
def no_cgroup_left_behind() -> Iterator[None]:
    """Finding: daemons killed with -9 by tests left their cgroups (runyard-HASH/SERVICE) behind
    under the cgroup2 mount. Every cgroup a test makes is removed; the session fails otherwise.
    The short /tmp/ry-* trees daemon tests use (daemonkit.short_root) are removed here too."""
    before = _runyard_cgroups()
    yield
    from daemonkit import SHORT_ROOTS  # the /tmp/ry-* trees of daemon tests: gone with them

    for base in SHORT_ROOTS:
        shutil.rmtree(base, ignore_errors=True)
    # Another test session on the same machine (a second checkout) makes its own: not ours to judge.
    deadline = time.monotonic() + (5.0 if _other_pytest_sessions() else 0.5)
    while (left := sorted(str(p) for p in _runyard_cgroups() - before)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    if left and _other_pytest_sessions():
        warnings.warn(f"runyard cgroups left while other test sessions run: {left}", stacklevel=1)
        return
    assert not left, f"cgroups left behind by the tests: {left}"


def _other_pytest_sessions() -> list[int]:
    """Pids of pytest processes that are neither this session nor its parents or children."""
    mine = {os.getpid(), os.getppid()}
    others = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"pytest" in cmdline and ppid not in mine:
            others.append(int(entry.name))
    return others


@pytest.fixture
def daemons() -> Iterator[Callable[..., object]]:
    """``daemons(tree)`` makes a daemonkit.Daemon that is stopped (and its children killed)
    when the test ends, however it ends."""
    from daemonkit import Daemon

    started: list[Daemon] = []

    def make(tree: RuntimeTree, launcher: list[str] | None = None) -> Daemon:
        d = Daemon(tree, launcher)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()
