#!/usr/bin/env python3
"""Build the demo runtime's archives and catalog.json from the sources under examples/.

    examples/build_catalog.py --out DIR      (default DIR: examples/dist)

Writes into DIR:

    hello-http-1.0.0.tar.gz  hello-http-1.1.0.tar.gz   bin/hello-http, VERSION
    ticker-1.0.0.zip                                    ticker
    heat1d-1.0.0.tar.xz                                 bin/heat1d, share/heat1d/sample-input.json,
                                                        definitions/* (the engine definitions)
    heatstats-1.0.0.tar.xz                              bin/heatstats, share/heatstats/...,
                                                        definitions/*
    catalog.json                                        {"version": "1", "archives": [...]}

The programs are portable Python scripts, so one archive serves every arch: the catalog lists
each archive for linux-amd64 and linux-arm64. Archive URLs in the catalog are relative (the
file name), so DIR can be served or copied as a whole.

The archives are byte-for-byte reproducible: entries sorted, fixed mtime (2026-01-01T00:00:00Z),
owner 0/0 with empty names, modes 0755 for programs and directories and 0644 for the rest, no
gzip timestamp or file name, fixed zip dates with Unix attributes, and sources read with
``\\n`` line endings whatever the checkout did. The compressed bytes come from the zlib and
liblzma that Python links; those are stable across ordinary builds (a zlib-ng based zlib would
compress differently). Stdlib only, so it runs before Runyard is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import re
import stat
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "dist"

#: 2026-01-01T00:00:00Z, the mtime of every archive member.
FIXED_MTIME = 1_767_225_600
FIXED_DATE_TIME = (2026, 1, 1, 0, 0, 0)
EXEC_MODE = 0o755
FILE_MODE = 0o644

CATALOG_OS = "linux"
CATALOG_ARCHES = ("amd64", "arm64")
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8": "arm64",
}

_VERSION_LINE = re.compile(r'^__version__ = "[^"\n]*"$', re.MULTILINE)


@dataclass(frozen=True)
class Member:
    """One regular file inside an archive."""

    path: str
    data: bytes
    executable: bool = False

    @property
    def mode(self) -> int:
        return EXEC_MODE if self.executable else FILE_MODE


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive and the catalog defaults that go with it."""

    name: str
    version: str
    fmt: str  # "tar.gz" | "tar.xz" | "zip"
    bin_path: str
    members: tuple[Member, ...]
    kind: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    default_ports: tuple[dict[str, Any], ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.{self.fmt}"


def normalize_arch(machine: str) -> str:
    """`x86_64` -> `amd64`, `aarch64` -> `arm64`; anything else lower-cased as is."""
    return _ARCH_ALIASES.get(machine.strip().lower(), machine.strip().lower())


def read_source(rel: str) -> bytes:
    """A source file's bytes with ``\\n`` line endings."""
    return (HERE / rel).read_bytes().replace(b"\r\n", b"\n")


def stamp_version(source: bytes, version: str, rel: str) -> bytes:
    """Replace the one ``__version__ = "..."`` line of a program with ``version``."""
    text = source.decode("utf-8")
    stamped, count = _VERSION_LINE.subn(f'__version__ = "{version}"', text)
    if count != 1:
        raise SystemExit(f"build_catalog: {rel}: expected one __version__ line, found {count}")
    return stamped.encode("utf-8")


def program(rel: str, version: str, path: str) -> Member:
    return Member(path, stamp_version(read_source(rel), version, rel), executable=True)


def archive_specs() -> list[ArchiveSpec]:
    """Everything the demo catalog offers."""
    specs: list[ArchiveSpec] = []
    for version in ("1.0.0", "1.1.0"):
        specs.append(
            ArchiveSpec(
                name="hello-http",
                version=version,
                fmt="tar.gz",
                bin_path="bin/hello-http",
                members=(
                    program("services/hello-http/hello_http.py", version, "bin/hello-http"),
                    Member("VERSION", f"{version}\n".encode()),
                ),
                kind="service",
                args=("--port", "18080"),
                env={"HELLO_GREETING": "hello from the demo runtime"},
                default_ports=({"name": "http", "port": 18080, "protocol": "http"},),
            )
        )
    specs.append(
        ArchiveSpec(
            name="ticker",
            version="1.0.0",
            fmt="zip",
            bin_path="ticker",
            members=(program("services/ticker/ticker.py", "1.0.0", "ticker"),),
            kind="service",
            args=("--interval", "0.5"),
        )
    )
    specs.append(
        ArchiveSpec(
            name="heat1d",
            version="1.0.0",
            fmt="tar.xz",
            bin_path="bin/heat1d",
            members=(
                program("engines/heat1d/heat1d.py", "1.0.0", "bin/heat1d"),
                Member(
                    "share/heat1d/sample-input.json",
                    read_source("engines/heat1d/sample-input.json"),
                ),
                *definitions("heat1d", "1.0.0"),
            ),
            kind="engine",
        )
    )
    specs.append(
        ArchiveSpec(
            name="heatstats",
            version="1.0.0",
            fmt="tar.xz",
            bin_path="bin/heatstats",
            members=(
                program("engines/heatstats/heatstats.py", "1.0.0", "bin/heatstats"),
                Member(
                    "share/heatstats/sample-input.json",
                    read_source("engines/heatstats/sample-input.json"),
                ),
                *definitions("heatstats", "1.0.0"),
            ),
            kind="engine",
        )
    )
    return specs


#: The engine definition files an engine archive ships under ``definitions/``; Runyard copies
#: them into ``config/{engine}/`` of the tree when they are missing there.
DEFINITION_FILES = (
    "COUPLING_RULES.json",
    "ENGINE_GOVERNANCE.md",
    "ENGINE_MANIFEST.json",
    "INPUT_SCHEMA.json",
    "OUTPUT_SCHEMA.json",
    "PHYSICS_CAPABILITIES.md",
    "SEALING_SPEC.md",
)


def definitions(engine: str, version: str) -> tuple[Member, ...]:
    """``engines/{engine}/definitions/*`` as ``definitions/*`` members; the manifest's
    engine_version must be the archive's version."""
    members = []
    for name in DEFINITION_FILES:
        rel = f"engines/{engine}/definitions/{name}"
        data = read_source(rel)
        if name == "ENGINE_MANIFEST.json":
            declared = json.loads(data).get("engine_version")
            if declared != version:
                raise SystemExit(
                    f"build_catalog: {rel}: engine_version {declared!r}, archive is {version}"
                )
        members.append(Member(f"definitions/{name}", data))
    return tuple(members)


# --- archives ---------------------------------------------------------------------------------


def _parent_dirs(paths: list[str]) -> set[str]:
    dirs: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def tar_bytes(members: tuple[Member, ...]) -> bytes:
    """An uncompressed ustar archive: directories and files sorted by path, fixed metadata."""
    by_path = {m.path: m for m in members}
    if len(by_path) != len(members):
        raise SystemExit("build_catalog: duplicate member path")
    names = sorted(set(by_path) | _parent_dirs(list(by_path)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            member = by_path.get(name)
            if member is None:
                info.type = tarfile.DIRTYPE
                info.mode = EXEC_MODE
                tar.addfile(info)
            else:
                info.mode = member.mode
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    """gzip with header mtime 0 and no file name, so only the content decides the bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def xz_bytes(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def zip_bytes(members: tuple[Member, ...]) -> bytes:
    """A deflated zip: sorted entries, fixed dates, Unix modes in external_attr."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w") as zf:
        for member in sorted(members, key=lambda m: m.path):
            info = zipfile.ZipInfo(member.path, date_time=FIXED_DATE_TIME)
            info.create_system = 3  # Unix, so extractors honour the mode bits
            info.external_attr = (stat.S_IFREG | member.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return buf.getvalue()


def archive_bytes(spec: ArchiveSpec) -> bytes:
    if spec.bin_path not in {m.path for m in spec.members}:
        raise SystemExit(f"build_catalog: {spec.filename}: binPath {spec.bin_path} is not a member")
    if spec.fmt == "tar.gz":
        return gzip_bytes(tar_bytes(spec.members))
    if spec.fmt == "tar.xz":
        return xz_bytes(tar_bytes(spec.members))
    if spec.fmt == "zip":
        return zip_bytes(spec.members)
    raise SystemExit(f"build_catalog: {spec.filename}: unknown format {spec.fmt!r}")


# --- output -----------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` via a temp file in the same directory (mode 0644)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def catalog_entries(spec: ArchiveSpec, data: bytes) -> list[dict[str, Any]]:
    """The catalog entries of one archive, one per arch."""
    entries = []
    for arch in CATALOG_ARCHES:
        entry: dict[str, Any] = {
            "name": spec.name,
            "version": spec.version,
            "os": CATALOG_OS,
            "arch": arch,
            "url": spec.filename,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "binPath": spec.bin_path,
        }
        if spec.kind:
            entry["kind"] = spec.kind
        if spec.args:
            entry["args"] = list(spec.args)
        if spec.env:
            entry["env"] = dict(spec.env)
        if spec.default_ports:
            entry["defaultPorts"] = [dict(p) for p in spec.default_ports]
        entries.append(entry)
    return entries


def catalog_bytes(archives: list[dict[str, Any]]) -> bytes:
    ordered = sorted(archives, key=lambda a: (a["name"], a["version"], a["os"], a["arch"]))
    doc = {"version": "1", "archives": ordered}
    return (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode("utf-8")


def build(out: Path, log: bool = True) -> dict[str, Any]:
    """Build every archive and catalog.json into ``out``; returns the catalog."""
    out.mkdir(parents=True, exist_ok=True)
    archives: list[dict[str, Any]] = []
    for spec in archive_specs():
        data = archive_bytes(spec)
        atomic_write(out / spec.filename, data)
        entries = catalog_entries(spec, data)
        archives.extend(entries)
        if log:
            print(
                f"built {spec.filename:<24} {len(data):>6} bytes  "
                f"sha256 {entries[0]['sha256'][:16]}...  {spec.kind or ''} {spec.bin_path}"
            )
    body = catalog_bytes(archives)
    atomic_write(out / "catalog.json", body)
    if log:
        platforms = ", ".join(f"{CATALOG_OS}-{arch}" for arch in CATALOG_ARCHES)
        print(f"wrote {out / 'catalog.json'}: {len(archives)} entries ({platforms})")
        here = normalize_arch(platform.machine())
        if here not in CATALOG_ARCHES:
            print(
                f"note: this machine's arch {here!r} is not in the catalog "
                f"({', '.join(CATALOG_ARCHES)})",
                file=sys.stderr,
            )
    result: dict[str, Any] = json.loads(body)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        build(args.out, log=not args.quiet)
    except OSError as exc:
        print(f"build_catalog: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
