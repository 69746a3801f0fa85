"""The on-disk runtime tree: where every directory lives, how it is laid out, how a root is found.

runtime/
  manifest.json
  bin/{service}/{version}/{os}-{arch}/   extracted binaries
  data/{service}/                        service state (engines: data/{engine}/runs/)
  logs/{service}/                        captured output; logs/runyard/ is Runyard's own
  config/{service}/                      templates; config/runyard/ is Runyard's own
  cache/                                 archives/ and index.json
  temp/                                  lock, state, sockets (mode 0700)
"""

from __future__ import annotations

import functools
import os
import re
import stat
from pathlib import Path

from runyard.runtime.core.errors import TreeError

__all__ = [
    "RESERVED_NAMES",
    "RuntimeTree",
    "check_name",
    "find_project_file",
    "resolve_root",
]

#: The name under which Runyard keeps its own logs and config; no service may take it.
RESERVED_NAMES = frozenset({"runyard"})

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

TOP_DIRS = ("bin", "data", "logs", "config", "cache", "temp")


def check_name(name: str, what: str = "service name") -> str | None:
    """Return a problem with ``name`` as a path component, or None when it is fine."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        return f"{what} {name!r} must be 1-64 of a-z 0-9 . _ - and start with a letter or digit"
    return None


class RuntimeTree:
    """Paths of one runtime tree. Creating the object touches nothing on disk.

    ``root`` is fixed at creation, so its top-level dirs are made once, on first use (a start of
    N services asked for each of them N times, a pathlib join each).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"RuntimeTree({str(self.root)!r})"

    @functools.cached_property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @functools.cached_property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @functools.cached_property
    def data_dir(self) -> Path:
        return self.root / "data"

    @functools.cached_property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @functools.cached_property
    def config_dir(self) -> Path:
        return self.root / "config"

    @functools.cached_property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @functools.cached_property
    def temp_dir(self) -> Path:
        return self.root / "temp"

    @property
    def archives_dir(self) -> Path:
        return self.cache_dir / "archives"

    @property
    def cache_index_path(self) -> Path:
        return self.cache_dir / "index.json"

    @property
    def own_config_dir(self) -> Path:
        """Runyard's own settings inside the tree (the remembered catalog, ...)."""
        return self.config_dir / "runyard"

    def install_dir(self, service: str, version: str, os_name: str, arch: str) -> Path:
        return self.bin_dir / service / version / f"{os_name}-{arch}"

    def service_dirs(self, service: str) -> dict[str, Path]:
        """The per-service directories, by category."""
        return {
            "bin": self.bin_dir / service,
            "data": self.data_dir / service,
            "logs": self.logs_dir / service,
            "config": self.config_dir / service,
        }

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def require(self) -> RuntimeTree:
        """Raise TreeError unless the tree has been initialised."""
        if not self.exists():
            if os.path.exists(self.manifest_path):  # /dev/zero, a FIFO, a directory...
                raise TreeError(f"{self.manifest_path}: is not a regular file")
            raise TreeError(
                f"no runtime tree at {self.root} (manifest.json missing; "
                f"run `runyard runtime init {self.root}`)"
            )
        return self

    def contains(
        self, path: str | os.PathLike[str], *, real_root: str | None = None, resolved: bool = False
    ) -> bool:
        """True when ``path``, symlinks resolved, stays inside the tree.

        A top-level dir of the tree (``data``, ``logs``...) may itself be a symlink: an
        installed runtime bundle shares them across versions (``versions/1.2.0/data ->
        ../../data``). What resolves inside such a dir counts as inside, unless the link points
        at the tree itself or above it (that would let everything in). ``real_root``: the
        root's real path, resolved once by a caller that checks many paths in one go;
        ``resolved``: ``path`` is a real path already (the caller resolved it).
        """
        real_root = os.path.realpath(self.root) if real_root is None else real_root
        if not resolved and _plain_below(os.fspath(path), str(self.root), real_root):
            return True
        real = os.fspath(path) if resolved else os.path.realpath(path)
        if _inside(real, real_root):
            return True
        for name in TOP_DIRS:
            top = self.root / name
            if not os.path.islink(top):
                continue
            real_top = os.path.realpath(top)
            if _inside(real_root, real_top) or not os.path.isdir(real_top):
                continue
            if _inside(real, real_top):
                return True
        return False


def _plain_below(path: str, root: str, real_root: str) -> bool:
    """``path`` lies below ``root`` and no part of it below the root is a symlink, ``..`` or
    missing (one lstat each, from ``real_root``): its realpath is then ``real_root``/the rest,
    what ``os.path.realpath`` would find at about a third of its cost (it resolves every
    component from /). False says nothing: the caller resolves it in full."""
    if not path.startswith(root + "/") or real_root == "/" or root == "/":
        return False
    real = real_root
    for part in path[len(root) + 1 :].split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return False
        real = f"{real}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(real).st_mode):
                return False
        except OSError:
            return False
    return True


def _inside(path: str, directory: str) -> bool:
    """``path`` is ``directory`` or below it (both already real paths)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def find_project_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """``runyard.toml`` in the working directory, if there is one."""
    candidate = Path(start or os.getcwd()) / "runyard.toml"
    return candidate if candidate.is_file() else None


def resolve_root(
    explicit: str | os.PathLike[str] | None = None,
    project_root: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Path:
    """``--root`` > ``RUNYARD_ROOT`` > ``root`` of the project file > ``./runtime`` > user data dir."""
    base = Path(cwd or os.getcwd())
    if explicit:
        return (base / Path(explicit).expanduser()).absolute()
    env_root = os.environ.get("RUNYARD_ROOT")
    if env_root:
        return (base / Path(env_root).expanduser()).absolute()
    if project_root:
        return (base / Path(project_root).expanduser()).absolute()
    local = base / "runtime"
    if (local / "manifest.json").is_file():
        return local.absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir("runyard")) / "runtime"
