"""The wheelhouse of a runtime bundle (``runyard bundle pack --with-wheels``).

``collect_wheels(dest)`` fills ``dest`` with Runyard's own wheel and the wheels of its locked
runtime dependencies, so a box with only Python installs Runyard with no network;
``install_script()`` is the ``install.sh`` that does it (``pip install --no-index --find-links
wheels --require-hashes``), to be packed beside the ``wheels/`` directory. The lock and the
target box are read in ``wheel_lock.py``; the script's text is in ``install_sh.py``.

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
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

from runyard.runtime.core.atomic import atomic_output, fsync_dir
from runyard.runtime.core.capped import read_toml_capped
from runyard.runtime.core.digest import file_sha256
from runyard.runtime.core.errors import FileRefused, WheelhouseError
from runyard.runtime.core.locking import FileLock
from runyard.runtime.core.own_version import installed_version

from .install_sh import render_install_sh
from .wheel_lock import (
    LOCK_FILE,
    Lock,
    Pin,
    Target,
    load_lock,
    normalize_name,
    parse_lock,
    this_target,
)

__all__ = ["WheelhouseError", "collect_wheels", "install_script", "parse_lock"]

PROJECT = "runyard"
# 1980-01-01T00:00:00Z, the earliest time a zip entry can carry: the mtime of every member of
# Runyard's own wheel unless SOURCE_DATE_EPOCH is set already.
DEFAULT_SOURCE_DATE_EPOCH = "315532800"
# install.sh writes the absolute path of the wheels it installed from into this file of the venv,
# so a Runyard installed from a bundle can pack its own wheelhouse again.
WHEELHOUSE_MARKER = "runyard-wheelhouse"
PIP_TIMEOUT = 900  # seconds for one pip download or build


# -- where we run from ---------------------------------------------------------------------------


def source_root() -> Path | None:
    """The source checkout this module runs from, or None when Runyard is installed."""
    root = Path(__file__).resolve().parents[2]
    try:
        project = read_toml_capped(root / "pyproject.toml")
    except (OSError, FileRefused, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("project", {}).get("name") == PROJECT else None


# -- helpers -------------------------------------------------------------------------------------


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
    with FileLock(cache / ".lock", mode=0o644):
        yield


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
        if file_sha256(path) in pin.hashes and found is None:
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
                    p for p in got.glob("*.whl") if pin.matches(p) and file_sha256(p) in pin.hashes
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
    _LAST_BUILT[str(root)] = (result.name, file_sha256(result))
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
            pins.append(Pin(normalize_name(parts[0]), parts[1], frozenset({file_sha256(path)})))
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
    lock = load_lock(root)
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
            if file_sha256(copy) not in pin.hashes:
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
        lock = load_lock(root)
        target = this_target(lock)
        cache = cache_dir()
        with _locked(cache):
            name, sha = _own_sha256(root, lock, target, cache)
        version = name.split("-")[1]
        requirements = [p.requirement() for p in lock.runtime]
        requirements.append(Pin(PROJECT, version, frozenset({sha})).requirement())
    return render_install_sh(version, target, requirements)
