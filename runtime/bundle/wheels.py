"""The wheelhouse of a runtime bundle (``runyard bundle pack --with-wheels``).

``collect_wheels(dest)`` fills ``dest`` with Runyard's own wheel and the wheels of its locked
runtime dependencies, so a box with only Python installs Runyard with no network;
``install_script()`` is the ``install.sh`` that does it (``pip install --no-index --find-links
wheels --require-hashes``), to be packed beside the ``wheels/`` directory.

Where the wheels come from:

- From a source checkout (``pyproject.toml`` of ``runyard`` two levels above this package):
  Runyard's wheel is built from the checkout with ``pip wheel`` and the build backend locked in
  ``requirements.lock`` (``# build:`` lines), offline, with ``SOURCE_DATE_EPOCH`` set (hatchling
  honours it), so two builds of the same source give the same bytes. The dependency wheels are
  the pins of ``requirements.lock`` (made by ``scripts/lock``), downloaded with pip once into
  the wheel cache and checked against the lock's sha256 hashes every time they are used.
- From an installed Runyard: the wheelhouse it was installed from (``RUNYARD_WHEELHOUSE``, the
  directory ``install.sh`` recorded in the venv, or ``wheels/`` beside the venv), copied.

The wheel cache is ``RUNYARD_WHEEL_CACHE``, else ``$XDG_CACHE_HOME/runyard/wheels`` (platformdirs'
user cache dir). Dependency wheels are for this box's CPython and architecture; among the
manylinux wheels of a pinned version pip is told to prefer the oldest glibc, so the bundle also
installs on boxes older than the one that packed it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runyard.runtime.core.atomic import atomic_output, fsync_dir
from runyard.runtime.core.capped import SMALL_FILE, read_capped, read_toml_capped
from runyard.runtime.core.errors import FileRefused, RunyardError
from runyard.runtime.core.own_version import installed_version

__all__ = ["WheelhouseError", "collect_wheels", "install_script"]

PROJECT = "runyard"
LOCK_FILE = "requirements.lock"
# 1980-01-01T00:00:00Z, the earliest time a zip entry can carry: the mtime of every member of
# Runyard's own wheel unless SOURCE_DATE_EPOCH is set already.
DEFAULT_SOURCE_DATE_EPOCH = "315532800"
# install.sh writes the absolute path of the wheels it installed from into this file of the venv,
# so a Runyard installed from a bundle can pack its own wheelhouse again.
WHEELHOUSE_MARKER = "runyard-wheelhouse"
PIP_TIMEOUT = 900  # seconds for one pip download or build


class WheelhouseError(RunyardError):
    """The wheels of a bundle cannot be collected; str() says what is missing, on one line."""


# -- the lock ------------------------------------------------------------------------------------


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: frozenset[str]

    def requirement(self) -> str:
        """The pip requirement line, hash-pinned."""
        return " ".join(
            [f"{self.name}=={self.version}"] + [f"--hash=sha256:{h}" for h in sorted(self.hashes)]
        )

    def matches(self, wheel: Path) -> bool:
        """Whether a wheel file name is of this name and version."""
        parts = wheel.name.split("-")
        return len(parts) >= 5 and _normalize(parts[0]) == self.name and parts[1] == self.version


@dataclass(frozen=True)
class Lock:
    runtime: tuple[Pin, ...]
    build: tuple[Pin, ...]
    python: str  # "cp311"
    machines: tuple[str, ...]  # ("x86_64", "aarch64")


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)((?:\s+--hash=sha256:[0-9a-f]{64})+)")


def _parse_pin(text: str, where: str) -> Pin:
    m = _PIN.fullmatch(text.strip())
    if not m:
        raise WheelhouseError(f"{where}: not a hash-pinned requirement: {text.strip()[:80]}")
    hashes = frozenset(h.split(":", 1)[1] for h in m.group(3).split())
    return Pin(_normalize(m.group(1)), m.group(2), hashes)


def parse_lock(text: str, origin: str = LOCK_FILE) -> Lock:
    """The pins of a requirements.lock (runtime lines, then ``# build:`` comment lines)."""
    runtime: list[Pin] = []
    build: list[Pin] = []
    python, machines = "", ()
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        logical.append((start, pending + raw))
        pending = ""
    for number, line in logical:
        where = f"{origin} line {number}"
        stripped = line.strip()
        if stripped.startswith("# targets:"):
            words = stripped.split(":", 1)[1].split()
            python, machines = (words[0], tuple(words[2:])) if len(words) > 2 else ("", ())
        elif stripped.startswith("# build:"):
            build.append(_parse_pin(stripped.split(":", 1)[1], where))
        elif stripped and not stripped.startswith("#"):
            runtime.append(_parse_pin(stripped, where))
    if not python or not runtime:
        raise WheelhouseError(f"{origin}: no '# targets:' line or no pins: run scripts/lock")
    return Lock(tuple(runtime), tuple(build), python, machines)


# -- where we run from ---------------------------------------------------------------------------


def source_root() -> Path | None:
    """The source checkout this module runs from, or None when Runyard is installed."""
    root = Path(__file__).resolve().parents[2]
    try:
        project = read_toml_capped(root / "pyproject.toml")
    except (OSError, FileRefused, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("project", {}).get("name") == PROJECT else None


def _project(root: Path) -> dict:
    return read_toml_capped(root / "pyproject.toml")["project"]


def _load_lock(root: Path) -> Lock:
    path = root / LOCK_FILE
    try:
        text = read_capped(path, SMALL_FILE).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WheelhouseError(
            f"cannot read {path}: {exc.strerror or exc}: run scripts/lock"
        ) from None
    lock = parse_lock(text, str(path))
    pinned = {p.name for p in lock.runtime}
    names = (
        re.match(r"[A-Za-z0-9._-]+", d).group(0) for d in _project(root).get("dependencies", [])
    )
    missing = sorted({_normalize(n) for n in names} - pinned)
    if missing:
        raise WheelhouseError(f"{path} does not pin {', '.join(missing)}: run scripts/lock")
    return lock


@dataclass(frozen=True)
class Target:
    """This interpreter and box, as wheel tags see them."""

    python: str  # "cp311"
    version: tuple[int, int]
    machine: str  # "x86_64"
    glibc: tuple[int, int]

    @property
    def key(self) -> str:
        return f"{self.python}-manylinux_{self.glibc[0]}_{self.glibc[1]}_{self.machine}"

    def pip_args(self) -> list[str]:
        """pip's target options, manylinux platforms oldest first (pip prefers them in order)."""
        legacy = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}
        platforms: list[str] = []
        for minor in range(5, self.glibc[1] + 1):
            if minor in legacy:
                platforms.append(f"{legacy[minor]}_{self.machine}")
            platforms.append(f"manylinux_2_{minor}_{self.machine}")
        args = ["--only-binary=:all:", "--implementation", "cp", "--abi", self.python]
        args += ["--python-version", f"{self.version[0]}.{self.version[1]}"]
        for p in platforms:
            args += ["--platform", p]
        return args


def this_target(lock: Lock | None = None) -> Target:
    """The target of this box; a WheelhouseError when no manylinux wheel fits it."""
    impl = sys.implementation.name
    version = sys.version_info[:2]
    python = f"cp{version[0]}{version[1]}"
    machine = platform.machine()
    libc, libc_version = platform.libc_ver()
    if impl != "cpython" or not sys.platform.startswith("linux") or libc != "glibc":
        raise WheelhouseError(
            f"bundle wheels are manylinux wheels for CPython on glibc Linux; this is {impl} "
            f"on {sys.platform} ({libc or 'no glibc'})"
        )
    if lock is not None and (python != lock.python or machine not in lock.machines):
        raise WheelhouseError(
            f"{LOCK_FILE} is for {lock.python} on {', '.join(lock.machines)}, this is {python} on "
            f"{machine}: regenerate it with scripts/lock for this target"
        )
    major, minor = (int(x) for x in libc_version.split(".")[:2])
    return Target(python, version, machine, (major, minor))


# -- helpers -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cache_dir() -> Path:
    """Where downloaded wheels are kept between packs."""
    env = os.environ.get("RUNYARD_WHEEL_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir(PROJECT)) / "wheels"


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Hold the cache's flock: two packs sharing a cache do not download into it at once."""
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _copy_atomic(src: Path, dest: Path) -> None:
    with atomic_output(dest, 0o644) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)


def _offline_env() -> dict[str, str]:
    """The environment for a pip that must not reach the network: no pip settings of the user or
    of the machine, no index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )
    return env


def _pip(args: list[str], env: dict[str, str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise WheelhouseError(f"{what}: pip took longer than {PIP_TIMEOUT} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["(no output)"]
        raise WheelhouseError(f"{what}: pip failed: {errors[-1]}")


# -- dependency wheels ---------------------------------------------------------------------------


def _cached(directory: Path, pin: Pin) -> Path | None:
    """The verified wheel of ``pin`` in ``directory``; a same-version wheel with another hash
    (torn, tampered, or of another lock) is removed."""
    found = None
    for path in sorted(directory.glob("*.whl")):
        if not pin.matches(path):
            continue
        if _sha256(path) in pin.hashes and found is None:
            found = path
        elif found is None:
            path.unlink(missing_ok=True)
    return found


def _ensure_pins(pins: tuple[Pin, ...], directory: Path, target: Target, cache: Path) -> list[Path]:
    """The wheels of ``pins`` in ``directory`` (a cache subdirectory), downloading only the
    missing ones, each checked against the lock's hashes."""
    directory.mkdir(parents=True, exist_ok=True)
    found = {pin: _cached(directory, pin) for pin in pins}
    missing = [pin for pin, path in found.items() if path is None]
    if missing:
        with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("".join(p.requirement() + "\n" for p in missing), encoding="utf-8")
            got = Path(tmp) / "wheels"
            env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
            args = ["download", "--no-deps", "--require-hashes", "--progress-bar", "off"]
            args += [*target.pip_args(), "--dest", str(got), "-r", str(reqs)]
            what = f"downloading {len(missing)} wheel(s) for {target.key} into {directory}"
            _pip(args, env, f"{what} (the package index is needed once)")
            for pin in missing:
                fresh = [
                    p for p in got.glob("*.whl") if pin.matches(p) and _sha256(p) in pin.hashes
                ]
                if not fresh:
                    raise WheelhouseError(
                        f"pip downloaded no wheel of {pin.name}=={pin.version} that matches "
                        f"{LOCK_FILE}'s hashes"
                    )
                with open(fresh[0], "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(fresh[0], directory / fresh[0].name)
                found[pin] = directory / fresh[0].name
            fsync_dir(directory)
    return [found[pin] for pin in pins]  # type: ignore[misc]


# -- Runyard's own wheel -------------------------------------------------------------------------

# source root -> (file name, sha256) of the runyard wheel collect_wheels last put into a bundle:
# install.sh must pin those bytes, even if the source changed since.
_LAST_BUILT: dict[str, tuple[str, str]] = {}


def _build_own(root: Path, lock: Lock, target: Target, cache: Path, out: Path) -> Path:
    """Build Runyard's wheel from ``root`` into ``out``, offline, reproducibly."""
    backend = _ensure_pins(lock.build, cache / "build", target, cache)
    with tempfile.TemporaryDirectory(prefix="runyard-wheel-build-") as tmp:
        links = Path(tmp) / "find-links"  # exactly the locked, verified build backend
        links.mkdir()
        for wheel in backend:
            shutil.copyfile(wheel, links / wheel.name)
        built = Path(tmp) / "out"
        env = _offline_env()
        env.setdefault("SOURCE_DATE_EPOCH", DEFAULT_SOURCE_DATE_EPOCH)
        args = ["wheel", "--no-deps", "--no-index", "--find-links", str(links), "--no-cache-dir"]
        args += ["--wheel-dir", str(built), str(root)]
        _pip(args, env, f"building the runyard wheel from {root}")
        wheels = sorted(built.glob(f"{PROJECT}-*.whl"))
        if len(wheels) != 1:
            raise WheelhouseError(
                f"building the runyard wheel from {root} gave {len(wheels)} wheels"
            )
        out.mkdir(parents=True, exist_ok=True)
        _copy_atomic(wheels[0], out / wheels[0].name)
    result = out / wheels[0].name
    _LAST_BUILT[str(root)] = (result.name, _sha256(result))
    return result


def _own_sha256(root: Path, lock: Lock, target: Target, cache: Path) -> tuple[str, str]:
    """(file name, sha256) of the runyard wheel collect_wheels last built from ``root`` in this
    process, else of a new build (the same bytes while the source is unchanged)."""
    if str(root) not in _LAST_BUILT:
        with tempfile.TemporaryDirectory(prefix="runyard-wheel-") as tmp:
            _build_own(root, lock, target, cache, Path(tmp))
    return _LAST_BUILT[str(root)]


# -- an installed Runyard ------------------------------------------------------------------------


def _installed_version() -> str:
    version = installed_version()
    if version is None:
        raise WheelhouseError(
            "runyard is neither a source checkout nor an installed distribution here"
        )
    return version


def _wheelhouse() -> tuple[Path, str]:
    """The wheels directory an installed Runyard came with, and its version."""
    version = _installed_version()
    candidates: list[Path] = []
    if os.environ.get("RUNYARD_WHEELHOUSE"):
        candidates.append(Path(os.environ["RUNYARD_WHEELHOUSE"]).expanduser())
    marker = Path(sys.prefix) / WHEELHOUSE_MARKER
    with contextlib.suppress(OSError):
        candidates.append(Path(marker.read_text(encoding="utf-8").strip()))
    candidates.append(Path(sys.prefix).parent / "wheels")
    for directory in candidates:
        if any(directory.glob(f"{PROJECT}-{version}-*.whl")):
            return directory, version
    looked = ", ".join(str(c) for c in candidates)
    raise WheelhouseError(
        f"no runyard {version} wheel to pack: not a source checkout, and no wheelhouse with it "
        f"(looked in {looked}; set RUNYARD_WHEELHOUSE)"
    )


def _wheel_pins(directory: Path) -> list[Pin]:
    pins = []
    for path in sorted(directory.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) >= 5:
            pins.append(Pin(_normalize(parts[0]), parts[1], frozenset({_sha256(path)})))
    return pins


# -- the interface -------------------------------------------------------------------------------


def collect_wheels(dest: Path) -> list[Path]:
    """Fill ``dest`` with Runyard's own wheel and its locked dependency wheels; their paths, sorted.

    Only wheels (never sdists), for this box's CPython and architecture. ``dest`` should be a new
    or empty directory: other files in it are left alone, and not returned.
    """
    dest = Path(dest)
    root = source_root()
    if root is None:
        house, _ = _wheelhouse()
        dest.mkdir(parents=True, exist_ok=True)
        wheels = sorted(house.glob("*.whl"))
        for wheel in wheels:
            _copy_atomic(wheel, dest / wheel.name)
        fsync_dir(dest)
        return sorted(dest / w.name for w in wheels)
    lock = _load_lock(root)
    target = this_target(lock)
    cache = cache_dir()
    with _locked(cache):
        deps = _ensure_pins(lock.runtime, cache / "deps" / target.key, target, cache)
        dest.mkdir(parents=True, exist_ok=True)
        own = _build_own(root, lock, target, cache, dest)
        copies = []
        for pin, wheel in zip(lock.runtime, deps, strict=True):
            copy = dest / wheel.name
            _copy_atomic(wheel, copy)
            if _sha256(copy) not in pin.hashes:
                raise WheelhouseError(f"{copy} does not match {LOCK_FILE}'s hashes after the copy")
            copies.append(copy)
    fsync_dir(dest)
    return sorted([own, *copies])


def install_script() -> bytes:
    """The text of ``install.sh``: installs Runyard from ``wheels/`` beside it, offline.

    It pins every wheel by sha256: call it after ``collect_wheels`` for the same bundle (it pins
    the runyard wheel that call built; a build of the unchanged source gives the same bytes).
    """
    root = source_root()
    if root is None:
        house, version = _wheelhouse()
        pins = _wheel_pins(house)
        target = this_target()
        requirements = [p.requirement() for p in pins]
    else:
        lock = _load_lock(root)
        target = this_target(lock)
        cache = cache_dir()
        with _locked(cache):
            name, sha = _own_sha256(root, lock, target, cache)
        version = name.split("-")[1]
        requirements = [p.requirement() for p in lock.runtime]
        requirements.append(Pin(PROJECT, version, frozenset({sha})).requirement())
    text = (
        _SCRIPT.replace("@VERSION@", version)
        .replace("@PY@", f"{target.version[0]}.{target.version[1]}")
        .replace("@MACHINE@", target.machine)
        .replace("@REQUIREMENTS@", "\n".join(sorted(requirements)))
    )
    return text.encode("utf-8")


_SCRIPT = r"""#!/bin/sh
# install.sh: install Runyard @VERSION@ from the wheels beside this script, with no network.
#
#   sh install.sh [--venv DIR | DIR] [--wheels DIR] [--python PYTHON]
#
# Makes a virtual environment (default: venv/ beside this script) with PYTHON (default: $PYTHON,
# else python3; it must be CPython @PY@ on @MACHINE@ Linux, the wheels are built for it), then
# installs exactly the pinned wheels of wheels/, each checked against its sha256:
#   pip install --no-index --find-links wheels --require-hashes --only-binary=:all:
# pip never reaches the network: --no-index, PIP_NO_INDEX=1, every other PIP_* setting and pip
# config file ignored, no version check, no cache.
set -eu

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P)
venv=
wheels=$here/wheels
python=${PYTHON:-python3}

while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            sed -n '2,11s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        --venv | --wheels | --python)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --venv) venv=$2 ;;
                --wheels) wheels=$2 ;;
                --python) python=$2 ;;
            esac
            shift 2
            ;;
        --venv=*) venv=${1#--venv=}; shift ;;
        --wheels=*) wheels=${1#--wheels=}; shift ;;
        --python=*) python=${1#--python=}; shift ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$venv" ] || die "one venv directory only (got $venv and $1)"
            venv=$1
            shift
            ;;
    esac
done
[ -n "$venv" ] || venv=$here/venv
case $venv in /*) ;; *) venv=$(pwd -P)/$venv ;; esac
case $wheels in /*) ;; *) wheels=$(pwd -P)/$wheels ;; esac

[ -d "$wheels" ] || die "no wheels directory at $wheels"
set -- "$wheels"/runyard-@VERSION@-*.whl
[ -f "$1" ] || die "no runyard @VERSION@ wheel in $wheels"

# Nothing from the caller's pip setup applies: no index, no find-links or constraint URL, no
# --user or --target, no config file. Then pip is told, three ways, to stay offline.
for name in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$name"
done
unset PYTHONPATH PYTHONHOME
PIP_CONFIG_FILE=/dev/null
PIP_NO_INDEX=1
PIP_DISABLE_PIP_VERSION_CHECK=1
PIP_NO_INPUT=1
export PIP_CONFIG_FILE PIP_NO_INDEX PIP_DISABLE_PIP_VERSION_CHECK PIP_NO_INPUT

fits() {
    "$1" -c 'import platform, sys
ok = (sys.implementation.name, "%d.%d" % sys.version_info[:2], platform.machine())
sys.exit(ok != ("cpython", "@PY@", "@MACHINE@"))' 2>/dev/null
}
describe() {
    "$1" -c 'import platform; print(platform.python_implementation(), platform.python_version(),
"on", platform.machine())' 2>/dev/null || echo "not runnable"
}

if [ -x "$venv/bin/python" ]; then
    fits "$venv/bin/python" ||
        die "$venv has $(describe "$venv/bin/python"); the wheels need CPython @PY@ on @MACHINE@"
else
    command -v "$python" >/dev/null 2>&1 || die "$python not found: install CPython @PY@ or pass --python"
    fits "$python" || die "$python is $(describe "$python"); the wheels need CPython @PY@ on @MACHINE@"
    "$python" -m venv "$venv" ||
        die "could not make a venv at $venv (on Debian or Ubuntu: apt install python3-venv)"
fi

cat >"$venv/runyard-requirements.txt" <<'EOF'
@REQUIREMENTS@
EOF

"$venv/bin/python" -m pip install --no-index --find-links "$wheels" --require-hashes \
    --only-binary=:all: --no-cache-dir --disable-pip-version-check --no-input --quiet \
    -r "$venv/runyard-requirements.txt" ||
    die "pip could not install runyard @VERSION@ from $wheels (see above)"
printf '%s\n' "$wheels" >"$venv/runyard-wheelhouse"
"$venv/bin/runyard" --help >/dev/null || die "installed, but $venv/bin/runyard does not start"

echo "runyard @VERSION@ is installed in $venv"
parent=$(dirname -- "$here")
if [ "$(basename -- "$parent")" = versions ] && [ -e "$(dirname -- "$parent")/current" ]; then
    # this script is PREFIX/versions/V/install.sh of an installed bundle
    echo "  run it:            RUNYARD_ROOT=$(dirname -- "$parent")/current $venv/bin/runyard up"
else
    echo "  install a bundle:  $venv/bin/runyard bundle install BUNDLE --prefix PREFIX"
    echo "  run it:            RUNYARD_ROOT=PREFIX/current $venv/bin/runyard up"
fi
echo "  (or put $venv/bin on PATH)"
"""
