"""The embedded demo runtime: reproducible archives and catalog, and the programs themselves.

Everything runs for real: the builder and the programs as subprocesses, the services on
loopback ports. Every process a test starts is stopped by that test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUILDER = EXAMPLES / "build_catalog.py"
HELLO = EXAMPLES / "services" / "hello-http" / "hello_http.py"
TICKER = EXAMPLES / "services" / "ticker" / "ticker.py"
HEAT1D = EXAMPLES / "engines" / "heat1d" / "heat1d.py"
SAMPLE_INPUT = EXAMPLES / "engines" / "heat1d" / "sample-input.json"

FIXED_MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z
DEFINITION_FILES = (
    "COUPLING_RULES.json",
    "ENGINE_GOVERNANCE.md",
    "ENGINE_MANIFEST.json",
    "INPUT_SCHEMA.json",
    "OUTPUT_SCHEMA.json",
    "PHYSICS_CAPABILITIES.md",
    "SEALING_SPEC.md",
)

# The documented output of heat1d on sample-input.json (examples/README.md).
SAMPLE_OUTPUT = (
    b'{"metrics":{"cell_updates":15,"max_cell":2,"max_temperature":"5",'
    b'"total_heat_final":"12","total_heat_initial":"16"},'
    b'"outputs":{"alpha":"1/4","boundary":"fixed","cells":5,"steps":3,'
    b'"temperatures":["0","7/2","5","7/2","0"],'
    b'"temperatures_decimal":["0.000","3.500","5.000","3.500","0.000"]}}\n'
)
SAMPLE_PROFILE = (
    b"cell,initial,final,final_exact\n"
    b"0,0.000,0.000,0\n"
    b"1,0.000,3.500,7/2\n"
    b"2,16.000,5.000,5\n"
    b"3,0.000,3.500,7/2\n"
    b"4,0.000,0.000,0\n"
)

ARCHIVE_FILES = {
    "hello-http-1.0.0.tar.gz",
    "hello-http-1.1.0.tar.gz",
    "ticker-1.0.0.zip",
    "heat1d-1.0.0.tar.xz",
    "heatstats-1.0.0.tar.xz",
}


# --- helpers ----------------------------------------------------------------------------------


def build(
    out: Path, builder: Path = BUILDER, cwd: Path | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    """Run the builder as a real subprocess; it must succeed."""
    proc = subprocess.run(
        [sys.executable, str(builder), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        umask=umask,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELLO_", "RUNYARD_"))}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Make sure ``proc`` is gone: kill it if it still runs, then reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class LineReader:
    """Reads a child's stdout line by line with a deadline, never a blind sleep."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""
        self.lines: list[str] = []
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        """Read one chunk; False when the deadline passed first."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if self.selector.select(remaining):
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            self.buffer += chunk
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                self.lines.append(line.decode("utf-8"))
        return True

    def until(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> list[str]:
        """Every line so far, once one matches ``predicate``."""
        deadline = time.monotonic() + timeout
        while not any(predicate(line) for line in self.lines):
            if self.eof:
                raise AssertionError(f"stdout closed first; lines: {self.lines!r}")
            if not self._fill(deadline):
                raise AssertionError(f"no matching line within {timeout}s: {self.lines!r}")
        return self.lines

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every line up to end of file."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline):
                raise AssertionError(f"stdout still open after {timeout}s: {self.lines!r}")
        if self.buffer:
            self.lines.append(self.buffer.decode("utf-8"))
            self.buffer = b""
        self.selector.close()
        return self.lines


def member_bytes(archive: Path, name: str) -> bytes:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(name)
    with tarfile.open(archive) as tf:
        fh = tf.extractfile(name)
        assert fh is not None
        return fh.read()


def unpack_program(archive: Path, bin_path: str, dest: Path) -> Path:
    """The archive's program as an executable file under ``dest``."""
    path = dest / archive.name / bin_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(member_bytes(archive, bin_path))
    path.chmod(0o755)
    return path


def heat1d(
    stdin: bytes, program: Path = HEAT1D, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(program)],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env or clean_env(),
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out


@pytest.fixture(scope="module")
def catalog(dist: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((dist / "catalog.json").read_bytes())
    return doc


# --- the builder ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    first = build(tmp_path / "one")
    build(tmp_path / "two", cwd=tmp_path)
    one, two = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert set(one) == ARCHIVE_FILES | {"catalog.json"}
    assert one == two
    for name in ARCHIVE_FILES:
        assert name in first.stdout  # it says what it built


@pytest.mark.timeout(120)
def test_build_ignores_checkout_line_endings_modes_and_umask(tmp_path: Path) -> None:
    """What differs between machines (CRLF checkouts, file modes, umask) must not show."""
    build(tmp_path / "reference")
    copy = tmp_path / "checkout" / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    for source in [*copy.rglob("*.py"), *copy.rglob("*.json")]:
        source.write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))
        source.chmod(0o600 if source.name != "build_catalog.py" else 0o700)
    build(tmp_path / "other", builder=copy / "build_catalog.py", umask=0o077, cwd=copy)
    assert digests(tmp_path / "other") == digests(tmp_path / "reference")


def test_rebuild_in_place_leaves_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(out)
    before = digests(out)
    build(out)
    assert digests(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_catalog_format(dist: Path, catalog: dict[str, object]) -> None:
    raw = (dist / "catalog.json").read_text()
    assert raw.endswith("}\n")
    assert raw == json.dumps(catalog, sort_keys=True, indent=2) + "\n"
    assert catalog["version"] == "1"
    archives = catalog["archives"]
    assert isinstance(archives, list)
    keys = [(a["name"], a["version"], a["os"], a["arch"]) for a in archives]
    assert keys == sorted(keys)
    assert keys == [
        (name, version, "linux", arch)
        for name, version in [
            ("heat1d", "1.0.0"),
            ("heatstats", "1.0.0"),
            ("hello-http", "1.0.0"),
            ("hello-http", "1.1.0"),
            ("ticker", "1.0.0"),
        ]
        for arch in ("amd64", "arm64")
    ]
    allowed = {"name", "version", "os", "arch", "url", "sha256", "size", "binPath"}
    allowed |= {"kind", "args", "env", "defaultPorts"}
    for entry in archives:
        assert set(entry) <= allowed
        assert "/" not in entry["url"]
        assert entry["url"] in ARCHIVE_FILES


def test_catalog_digests_and_sizes_match_the_files(dist: Path, catalog: dict[str, object]) -> None:
    archives = catalog["archives"]
    assert isinstance(archives, list)
    for entry in archives:
        data = (dist / entry["url"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)


def test_catalog_defaults(catalog: dict[str, object]) -> None:
    archives = catalog["archives"]
    assert isinstance(archives, list)
    by_name = {a["name"]: a for a in archives}
    hello = by_name["hello-http"]
    assert hello["kind"] == "service"
    assert hello["binPath"] == "bin/hello-http"
    assert hello["args"] == ["--port", "18080"]
    assert hello["env"] == {"HELLO_GREETING": "hello from the demo runtime"}
    assert hello["defaultPorts"] == [{"name": "http", "port": 18080, "protocol": "http"}]
    ticker = by_name["ticker"]
    assert ticker["kind"] == "service"
    assert ticker["binPath"] == "ticker"
    assert ticker["args"] == ["--interval", "0.5"]
    assert "env" not in ticker and "defaultPorts" not in ticker
    engine = by_name["heat1d"]
    assert engine["kind"] == "engine"
    assert engine["binPath"] == "bin/heat1d"
    assert engine["url"] == "heat1d-1.0.0.tar.xz"


def test_catalog_loads_in_runyard(dist: Path) -> None:
    """The runtime's own catalog reader accepts the file and resolves the newest hello-http."""
    runtime_catalog = pytest.importorskip("runyard.runtime.acquisition.catalog")
    loaded = runtime_catalog.load_catalog(str(dist / "catalog.json"))
    for arch in ("amd64", "arm64"):
        assert loaded.resolve("hello-http", "*", "linux", arch).version == "1.1.0"
        assert loaded.resolve("heat1d", "*", "linux", arch).kind == "engine"


@pytest.mark.parametrize(
    ("archive", "expected"),
    [
        ("hello-http-1.0.0.tar.gz", {"VERSION": 0o644, "bin": 0o755, "bin/hello-http": 0o755}),
        ("hello-http-1.1.0.tar.gz", {"VERSION": 0o644, "bin": 0o755, "bin/hello-http": 0o755}),
        (
            "heat1d-1.0.0.tar.xz",
            {
                "bin": 0o755,
                "bin/heat1d": 0o755,
                "definitions": 0o755,
                **{f"definitions/{name}": 0o644 for name in DEFINITION_FILES},
                "share": 0o755,
                "share/heat1d": 0o755,
                "share/heat1d/sample-input.json": 0o644,
            },
        ),
    ],
)
def test_tar_members(dist: Path, archive: str, expected: dict[str, int]) -> None:
    with tarfile.open(dist / archive) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == sorted(expected)
    for m in members:
        assert m.mode == expected[m.name], m.name
        assert m.isdir() or m.isfile()
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (FIXED_MTIME, 0, 0, "", "")


def test_compression_headers_carry_nothing_variable(dist: Path) -> None:
    for name in ("hello-http-1.0.0.tar.gz", "hello-http-1.1.0.tar.gz"):
        head = (dist / name).read_bytes()[:10]
        assert head[:3] == b"\x1f\x8b\x08"
        assert head[3] == 0, "no FNAME or other optional header fields"
        assert head[4:8] == b"\0\0\0\0", "gzip mtime is 0"
        gzip.decompress((dist / name).read_bytes())
    assert (dist / "heat1d-1.0.0.tar.xz").read_bytes()[:6] == b"\xfd7zXZ\x00"
    lzma.decompress((dist / "heat1d-1.0.0.tar.xz").read_bytes())


def test_zip_members(dist: Path) -> None:
    with zipfile.ZipFile(dist / "ticker-1.0.0.zip") as zf:
        infos = zf.infolist()
        assert zf.testzip() is None
    assert [i.filename for i in infos] == ["ticker"]
    info = infos[0]
    assert info.create_system == 3
    assert info.date_time == (2026, 1, 1, 0, 0, 0)
    assert info.compress_type == zipfile.ZIP_DEFLATED
    mode = info.external_attr >> 16
    assert stat.S_ISREG(mode)
    assert stat.S_IMODE(mode) == 0o755


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("archive", "bin_path", "version"),
    [
        ("hello-http-1.0.0.tar.gz", "bin/hello-http", "hello-http 1.0.0"),
        ("hello-http-1.1.0.tar.gz", "bin/hello-http", "hello-http 1.1.0"),
        ("ticker-1.0.0.zip", "ticker", "ticker 1.0.0"),
        ("heat1d-1.0.0.tar.xz", "bin/heat1d", "heat1d 1.0.0"),
    ],
)
def test_archived_programs_carry_their_stamped_version(
    dist: Path, tmp_path: Path, archive: str, bin_path: str, version: str
) -> None:
    program = unpack_program(dist / archive, bin_path, tmp_path)
    assert program.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert b"\r\n" not in program.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(program), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == version


# --- heat1d -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_heat1d_sample_gives_documented_bytes_twice() -> None:
    first = heat1d(SAMPLE_INPUT.read_bytes())
    second = heat1d(SAMPLE_INPUT.read_bytes())
    assert first.returncode == 0, first.stderr
    assert first.stdout == SAMPLE_OUTPUT
    assert second.stdout == first.stdout
    assert first.stderr == b""


@pytest.mark.timeout(60)
def test_heat1d_writes_profile_to_artifacts_dir(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    proc = heat1d(SAMPLE_INPUT.read_bytes(), env=clean_env(RUNYARD_ARTIFACTS_DIR=str(artifacts)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SAMPLE_OUTPUT  # artifacts never change the output
    assert (artifacts / "profile.csv").read_bytes() == SAMPLE_PROFILE


@pytest.mark.timeout(60)
def test_heat1d_archived_program_matches_source(dist: Path, tmp_path: Path) -> None:
    program = unpack_program(dist / "heat1d-1.0.0.tar.xz", "bin/heat1d", tmp_path)
    sample = member_bytes(dist / "heat1d-1.0.0.tar.xz", "share/heat1d/sample-input.json")
    proc = heat1d(sample, program=program)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SAMPLE_OUTPUT


@pytest.mark.timeout(60)
def test_heat1d_reads_numbers_exactly_and_insulated_ends_keep_the_heat() -> None:
    run_input = {
        "engine": "heat1d",
        "inputs": {"cells": 7, "steps": 40, "alpha": 0.1, "initial": [0, 0, 0, 70, 0, 0, 0]},
        "parameters": {"boundary": "insulated", "steps": 1},
    }
    proc = heat1d(json.dumps(run_input).encode())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["outputs"]["alpha"] == "1/10"  # 0.1 read as 1/10, not a binary float
    assert result["outputs"]["steps"] == 40  # inputs win over parameters
    assert result["metrics"]["total_heat_final"] == "70"
    temps = result["outputs"]["temperatures"]
    assert temps == temps[::-1]  # symmetric start, symmetric result


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"inputs": []}',
        b'{"inputs": {"cells": 2, "steps": 1}}',
        b'{"inputs": {"cells": 5}}',
        b'{"inputs": {"cells": 5, "steps": true}}',
        b'{"inputs": {"cells": 5, "steps": 1, "alpha": "3/4"}}',
        b'{"inputs": {"cells": 5, "steps": 1, "alpha": "one"}}',
        b'{"inputs": {"cells": 4, "steps": 1, "initial": [1, 2, 3]}}',
        b'{"inputs": {"steps": 1, "initial": [1, 2, null]}}',
        b'{"inputs": {"cells": 5, "steps": 1, "boundary": "periodic"}}',
        b'{"inputs": {"cells": 5, "steps": NaN}}',
        b"\xff\xfe",
    ],
)
def test_heat1d_bad_input_exits_2_with_one_line(stdin: bytes) -> None:
    proc = heat1d(stdin)
    assert proc.returncode == 2
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert err.startswith("heat1d: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err


# --- ticker -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ticker_ticks_and_stops_on_signal(signum: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(TICKER), "--interval", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        reader = LineReader(proc)
        lines = reader.until(lambda line: line == "tick 12")
        assert lines[:12] == [f"tick {n}" for n in range(1, 13)]
        proc.send_signal(signum)
        lines = reader.rest()
        assert proc.wait(timeout=10) == 0
        assert lines[-1].startswith("ticker: stopped after ")
        assert lines[-1].endswith(f"({signum.name})")
        assert proc.stderr is not None
        warnings = proc.stderr.read().decode().splitlines()
        assert warnings[0] == "warning: tick 10"
    finally:
        stop(proc)


@pytest.mark.timeout(30)
def test_ticker_count_ends_by_itself() -> None:
    proc = subprocess.run(
        [sys.executable, str(TICKER), "--interval", "0.01", "--count", "3"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "tick 1",
        "tick 2",
        "tick 3",
        "ticker: stopped after 3 ticks",
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("interval", ["0", "-1", "nan", "soon"])
def test_ticker_refuses_bad_interval(interval: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(TICKER), "--interval", interval],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 2
    assert "--interval" in proc.stderr


# --- hello-http -------------------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        exc.close()
        return exc.code, body


def wait_until_answering(proc: subprocess.Popen[bytes], url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"hello-http exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def hello_http(
    dist: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str]]]:
    """Starts hello-http (source, or an archived version) on a free loopback port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(version: str | None = None, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        program = HELLO
        if version is not None:
            archive = dist / f"hello-http-{version}.tar.gz"
            program = unpack_program(archive, "bin/hello-http", tmp_path)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(program), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(**env),
            start_new_session=True,
        )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_until_answering(proc, base + "/healthz")
        return proc, base

    try:
        yield start
    finally:
        for proc in started:
            stop(proc)


@pytest.mark.timeout(30)
def test_hello_http_answers_and_stops_on_sigterm(
    hello_http: Callable[..., tuple[subprocess.Popen[bytes], str]],
) -> None:
    proc, base = hello_http(HELLO_GREETING="hi from the test")
    assert http_get(base + "/") == (200, "hi from the test\n")
    assert http_get(base + "/healthz") == (200, "ok\n")
    assert http_get(base + "/nope")[0] == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stdout is not None
    out = proc.stdout.read().decode().splitlines()
    assert (
        out[0].startswith("hello-http ") and f"http://127.0.0.1:{base.rsplit(':', 1)[1]}/" in out[0]
    )
    assert '127.0.0.1 "GET / HTTP/1.1" 200' in out
    assert '127.0.0.1 "GET /nope HTTP/1.1" 404' in out
    assert out[-1] == "hello-http: stopped"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("version", "has_version_route"), [("1.0.0", False), ("1.1.0", True)])
def test_hello_http_archived_versions(
    hello_http: Callable[..., tuple[subprocess.Popen[bytes], str]],
    version: str,
    has_version_route: bool,
) -> None:
    proc, base = hello_http(version)
    assert http_get(base + "/") == (200, "hello from runyard\n")
    status, body = http_get(base + "/version")
    if has_version_route:
        assert (status, body) == (200, f"{version}\n")
    else:
        assert status == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


@pytest.mark.timeout(30)
def test_hello_http_port_from_environment(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HELLO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(HELLO_PORT=str(port)),
        start_new_session=True,
    )
    try:
        wait_until_answering(proc, f"http://127.0.0.1:{port}/healthz")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        stop(proc)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "env"), [(["--port", "0"], {}), ([], {"HELLO_PORT": "http"})])
def test_hello_http_refuses_bad_port(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(HELLO), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=clean_env(**env),
        check=False,
    )
    assert proc.returncode == 2
    assert "hello-http: error:" in proc.stderr
