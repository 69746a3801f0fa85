"""The wheelhouse of a runtime bundle (runtime/bundle/wheels.py): Runyard's own wheel plus its
locked dependency wheels, and the install.sh that installs them with no network.

Real pip, real venvs, real sockets: a counting TCP server on 127.0.0.1 stands in for every index,
find-links URL and proxy pip could be pointed at, and records each connection it gets, so
"offline" is shown by a count of zero, next to a control in which pip does reach it.

The package index is needed the first time (CI reaches it): the wheels are then kept in the
repository's .cache/wheels (RUNYARD_WHEEL_CACHE), so later runs download nothing. Runyard's own
wheel is built from a snapshot of the source taken by the test, so edits made meanwhile in the
work tree do not change the bytes under comparison.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runyard.runtime.bundle.wheels import parse_lock

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheels"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
VERSION = PYPROJECT["project"]["version"]
OWN = f"runyard-{VERSION}-py3-none-any.whl"

pytestmark = pytest.mark.timeout(600)


# -- helpers ---------------------------------------------------------------------------------------


class ConnectionCounter:
    """A TCP server on 127.0.0.1 that accepts every connection, records it, and closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_ready(self, timeout: float) -> bool:
        if not select.select([self.sock], [], [], timeout)[0]:
            return False
        conn, peer = self.sock.accept()
        self.peers.append(peer)
        conn.close()
        return True

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._accept_ready(0.1)

    def close(self) -> int:
        """Stop; connections still in the backlog are counted too. The number of connections."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=10)
            while self._accept_ready(0):
                pass
            self.sock.close()
        return len(self.peers)


@pytest.fixture
def counter():
    server = ConnectionCounter()
    try:
        yield server
    finally:
        server.close()


def hostile_env(server: ConnectionCounter, **extra: str) -> dict[str, str]:
    """An environment in which any index, find-links or proxy pip would use is the counter."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("no_proxy", "runyard_root", "source_date_epoch", "pythonpath")
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = server.url
    env.update(
        PIP_INDEX_URL=f"{server.url}/simple",
        PIP_EXTRA_INDEX_URL=f"{server.url}/extra",
        PIP_FIND_LINKS=f"{server.url}/links",
        PIP_RETRIES="0",
        PIP_TIMEOUT="5",
    )
    env.update(extra)
    return env


def plain_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("runyard_root", "source_date_epoch", "pythonpath")
    }
    env.update(extra)
    return env


def run(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    """subprocess.run in its own process group; the whole group is killed at the deadline."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def snapshot_source(dest: Path, source: Path = ROOT) -> Path:
    """A copy of what a wheel build reads, with fresh mtimes (no bytecode caches)."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", ".gitignore", "requirements.lock"):
        shutil.copy(source / name, dest / name)
    for package in PACKAGES:
        shutil.copytree(
            source / package,
            dest / package,
            copy_function=shutil.copy,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*.tmp"),
        )
    return dest


COLLECT = """
import json, sys
from pathlib import Path
import runyard.runtime.bundle.wheels as w
from runyard.runtime.core.errors import RunyardError
here = Path(w.__file__).resolve()
assert here.is_relative_to(Path(sys.argv[1]).resolve()), here
try:
    paths = w.collect_wheels(Path(sys.argv[2]))
    Path(sys.argv[3]).write_bytes(w.install_script())
except RunyardError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
print(json.dumps([str(p) for p in paths]))
"""


def collect(
    python: str | Path, out: Path, env: dict[str, str], *, src: Path | None = None, home: Path
) -> subprocess.CompletedProcess[str]:
    """collect_wheels(out/wheels) and install_script() > out/install.sh, run by ``python``
    importing runyard from ``src`` (a source snapshot) or from where it is installed; the test
    checks the module comes from under ``home``."""
    out.mkdir(parents=True, exist_ok=True)
    if src is not None:
        env = dict(env, PYTHONPATH=str(src))
    return run(
        [str(python), "-c", COLLECT, str(home), str(out / "wheels"), str(out / "install.sh")],
        env=env,
        cwd=src or out,
        timeout=540,
    )


def tree_state(path: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*.whl"))
    }


def sha_of_lock_pins() -> dict[str, frozenset[str]]:
    lock = parse_lock((ROOT / "requirements.lock").read_text())
    return {p.name: p.hashes for p in lock.runtime}


def install_offline(
    bundle: Path, venv: Path, server: ConnectionCounter
) -> subprocess.CompletedProcess[str]:
    """Run bundle/install.sh into ``venv`` with every index and proxy pointing at ``server``."""
    elsewhere = bundle.parent / "cwd"
    elsewhere.mkdir(exist_ok=True)
    return run(
        ["sh", str(bundle / "install.sh"), "--venv", str(venv)],
        env=hostile_env(server),
        cwd=elsewhere,
        timeout=300,
    )


# -- the build of a snapshot, shared by the tests --------------------------------------------------


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> dict:
    """The first collect_wheels of a source snapshot, with the index reachable (it fills the
    cache when it is empty): {"src", "out", "paths"}."""
    base = tmp_path_factory.mktemp("wheels")
    src = snapshot_source(base / "src-a")
    out = base / "out-a"
    env = plain_env(RUNYARD_WHEEL_CACHE=str(CACHE))
    proc = collect(sys.executable, out, env, src=src, home=src)
    assert proc.returncode == 0, proc.stderr
    return {"src": src, "out": out, "paths": json.loads(proc.stdout)}


# -- the lock --------------------------------------------------------------------------------------


def test_lock_covers_every_runtime_dependency() -> None:
    lock = parse_lock((ROOT / "requirements.lock").read_text())
    pinned = {p.name: p for p in lock.runtime}
    assert lock.python == "cp311" and set(lock.machines) == {"x86_64", "aarch64"}
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, f"requirements.lock does not pin {name}: run scripts/lock"
        assert req.specifier.contains(pinned[name].version), f"{name}: run scripts/lock"
    for pin in lock.runtime:
        assert pin.hashes and all(len(h) == 64 for h in pin.hashes), pin
    # only the runtime closure: no test tool unless a runtime dependency needs it
    for text in PYPROJECT["project"]["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(text).name) not in pinned
    built = {p.name: p for p in lock.build}
    for text in PYPROJECT["build-system"]["requires"]:
        req = Requirement(text)
        assert req.specifier.contains(built[canonicalize_name(req.name)].version)


def test_every_package_is_in_the_wheel_config() -> None:
    """A new top-level package (a directory with __init__.py) must go into the wheel too."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "examples"}
    assert packages <= set(PACKAGES), f"add {sorted(packages - set(PACKAGES))} to hatch packages"


# -- collect_wheels --------------------------------------------------------------------------------


def test_collect_twice_second_run_downloads_nothing_same_bytes(
    first, tmp_path: Path, counter: ConnectionCounter
) -> None:
    paths = [Path(p) for p in first["paths"]]
    assert paths == sorted(paths) and all(p.suffix == ".whl" for p in paths)
    names = {p.name for p in paths}
    assert OWN in names
    pins = sha_of_lock_pins()
    for p in paths:
        if p.name != OWN:
            dist = canonicalize_name(p.name.split("-")[0])
            assert hashlib.sha256(p.read_bytes()).hexdigest() in pins.pop(dist), p.name
    assert not pins, f"no wheel for {sorted(pins)}"

    # Again, from a copy of that snapshot (another path, newer mtimes; the work tree may have
    # changed since), with every index and proxy pointing at the counter: nothing is
    # downloaded, the bytes are the same.
    cache_before = tree_state(CACHE)
    src_b = snapshot_source(tmp_path / "src-b", first["src"])
    out_b = tmp_path / "out-b"
    env = hostile_env(counter, RUNYARD_WHEEL_CACHE=str(CACHE))
    proc = collect(sys.executable, out_b, env, src=src_b, home=src_b)
    assert proc.returncode == 0, proc.stderr
    assert counter.close() == 0, f"pip reached out: {counter.peers}"
    assert tree_state(CACHE) == cache_before
    second = [Path(p) for p in json.loads(proc.stdout)]
    assert [p.name for p in second] == [p.name for p in paths]
    for a, b in zip(paths, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert (out_b / "install.sh").read_bytes() == (first["out"] / "install.sh").read_bytes()


def test_own_wheel_has_every_file_and_fixed_times(first) -> None:
    wheel = first["out"] / "wheels" / OWN
    src: Path = first["src"]
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        names = {i.filename for i in infos}
        entry_points = zf.read(f"runyard-{VERSION}.dist-info/entry_points.txt").decode()
    expected = {
        p.relative_to(src).as_posix()
        for package in PACKAGES
        for p in (src / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "tui/app.tcss" in names
    assert {"schemas/catalog.schema.json", "schemas/manifest.schema.json"} <= names
    assert "runyard = daemon.cli:main" in entry_points
    # SOURCE_DATE_EPOCH (1980-01-01, wheels.py's default) reached hatchling: every member has it
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def test_cold_cache_goes_to_the_index(first, tmp_path: Path, counter: ConnectionCounter) -> None:
    """The control: with nothing cached, collect_wheels does ask the index (here the counter,
    which answers nothing), and says so on one line."""
    env = hostile_env(counter, RUNYARD_WHEEL_CACHE=str(tmp_path / "empty-cache"))
    proc = collect(sys.executable, tmp_path / "out", env, src=first["src"], home=first["src"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "downloading" in proc.stderr and "pip failed" in proc.stderr
    assert counter.close() > 0


# -- install.sh ------------------------------------------------------------------------------------


def make_bundle(first, where: Path) -> Path:
    where.mkdir(parents=True)
    shutil.copytree(first["out"] / "wheels", where / "wheels")
    shutil.copy(first["out"] / "install.sh", where / "install.sh")
    return where


def test_install_offline_then_runyard_works(
    first, tmp_path: Path, counter: ConnectionCounter
) -> None:
    bundle = make_bundle(first, tmp_path / "bundle")
    venv = tmp_path / "venv"
    proc = install_offline(bundle, venv, counter)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert counter.close() == 0, f"pip reached out: {counter.peers}"
    assert f"RUNYARD_ROOT=PREFIX/current {venv}/bin/runyard up" in proc.stdout

    env = plain_env()
    runyard = str(venv / "bin" / "runyard")
    where = run([str(venv / "bin" / "python"), "-c", "import runyard.runtime as runtime; print(runtime.__file__)"],
                env=env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel, not this checkout
    assert run([runyard, "--help"], env=env, cwd=tmp_path, timeout=60).returncode == 0
    tree = tmp_path / "tree"
    init = run([runyard, "runtime", "init", str(tree)], env=env, cwd=tmp_path, timeout=60)
    assert init.returncode == 0, init.stderr
    ls = run([runyard, "runtime", "ls", "--root", str(tree)], env=env, cwd=tmp_path, timeout=60)
    assert ls.returncode == 0, ls.stderr
    check = run([str(venv / "bin" / "python"), "-m", "pip", "check"],
                env=dict(env, PIP_NO_INDEX="1"), cwd=tmp_path, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    # The installed Runyard packs its own wheelhouse again (no source checkout now): the same
    # wheels, and an install.sh pinning the same runyard wheel; offline too.
    python = venv / "bin" / "python"
    again = ConnectionCounter()
    try:
        repack = collect(python, tmp_path / "repack", hostile_env(again), home=venv)
    finally:
        assert again.close() == 0, f"pip reached out: {again.peers}"
    assert repack.returncode == 0, repack.stderr
    repacked = [Path(p) for p in json.loads(repack.stdout)]
    originals = sorted((bundle / "wheels").glob("*.whl"))
    assert [p.name for p in repacked] == [p.name for p in originals]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(repacked, originals, strict=True))

    def own_pin(script: Path) -> list[str]:
        return [ln for ln in script.read_text().splitlines() if ln.startswith("runyard==")]

    assert own_pin(tmp_path / "repack" / "install.sh") == own_pin(bundle / "install.sh")
    assert len(own_pin(bundle / "install.sh")) == 1

    # ... and says what is missing, on one line, when that wheelhouse is gone.
    (bundle / "wheels").rename(bundle / "moved")
    lost = collect(python, tmp_path / "lost", plain_env(), home=venv)
    assert lost.returncode == 1
    assert lost.stderr.strip().splitlines() == [lost.stderr.strip()]
    assert lost.stderr.startswith(f"no runyard {VERSION} wheel to pack"), lost.stderr


def test_install_refuses_a_tampered_wheel(
    first, tmp_path: Path, counter: ConnectionCounter
) -> None:
    bundle = make_bundle(first, tmp_path / "bundle")
    victim = next((bundle / "wheels").glob("mdurl-*.whl"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    proc = install_offline(bundle, tmp_path / "venv", counter)
    assert proc.returncode == 1
    assert "DO NOT MATCH THE HASHES" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("install.sh: pip could not install")
    assert counter.close() == 0


def test_install_script_usage_errors(first, tmp_path: Path) -> None:
    bundle = make_bundle(first, tmp_path / "bundle")
    script = str(bundle / "install.sh")
    bad = run(["sh", script, "--frobnicate"], env=plain_env(), cwd=tmp_path, timeout=30)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "install.sh: unknown option --frobnicate (see --help)"
    )
    shutil.rmtree(bundle / "wheels")
    gone = run(["sh", script], env=plain_env(), cwd=tmp_path, timeout=30)
    assert gone.returncode == 1 and gone.stderr.strip().startswith("install.sh: no wheels")
    usage = run(["sh", script, "--help"], env=plain_env(), cwd=tmp_path, timeout=30)
    assert usage.returncode == 0 and "--no-index" in usage.stdout


# -- runyard bundle pack --with-wheels -------------------------------------------------------------


def test_pack_with_wheels_installs_offline(
    tmp_path: Path, counter: ConnectionCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runyard bundle pack --with-wheels` (the library's pack_bundle while the command is not
    there), extracted, and its install.sh run offline."""
    pack_module = pytest.importorskip(
        "runtime.bundle.pack", reason="runtime/bundle/pack.py is not there yet"
    )
    from archives import publish, write_catalog
    from runyard import runtime
    from runyard.runtime.core.tree import RuntimeTree

    tree = RuntimeTree(tmp_path / "tree")
    tree.init()
    repo = tmp_path / "repo"
    repo.mkdir()
    write_catalog(repo / "catalog.json", [publish(repo, "tool", "1.0.0")])
    runtime.ensure_service("tool", "1.0.0", root=tree.root, catalog=str(repo / "catalog.json"))

    out = tmp_path / "bundle.tar.gz"
    runyard = str(Path(sys.executable).parent / "runyard")
    env = plain_env(RUNYARD_WHEEL_CACHE=str(CACHE))
    helptext = run([runyard, "bundle", "pack", "--help"], env=env, cwd=tmp_path, timeout=60)
    if helptext.returncode == 0 and "--with-wheels" in helptext.stdout:
        cmd = [runyard, "bundle", "pack", "--root", str(tree.root), "--with-wheels"]
        cmd += ["--version", "1.0.0", "-o", str(out)]
        pack = run(cmd, env=env, cwd=tmp_path, timeout=540)
        assert pack.returncode == 0, pack.stdout + pack.stderr
    else:
        pack_bundle = getattr(pack_module, "pack_bundle", None)
        if pack_bundle is None or "with_wheels" not in inspect.signature(pack_bundle).parameters:
            pytest.skip("neither `runyard bundle pack --with-wheels` nor pack_bundle(with_wheels)")
        monkeypatch.setenv("RUNYARD_WHEEL_CACHE", str(CACHE))
        pack_bundle(tree, out, with_wheels=True, version="1.0.0")

    extracted = tmp_path / "extracted"
    with tarfile.open(out) as tf:
        tf.extractall(extracted, filter="data")
    scripts = sorted(extracted.rglob("install.sh"))
    assert len(scripts) == 1, scripts
    bundle = scripts[0].parent
    assert (bundle / "wheels" / OWN).is_file()
    venv = tmp_path / "venv"
    proc = install_offline(bundle, venv, counter)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert counter.close() == 0, f"pip reached out: {counter.peers}"
    started = run([str(venv / "bin" / "runyard"), "--help"], env=env, cwd=tmp_path, timeout=60)
    assert started.returncode == 0, started.stderr
