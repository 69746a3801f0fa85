"""Build real archives and catalogs for tests."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from runyard.runtime.core.platform import current_arch, current_os


def make_tar(path: Path, files: dict[str, bytes], mode: int = 0o755) -> Path:
    comp = "xz" if path.name.endswith(".tar.xz") else "gz"
    with tarfile.open(path, f"w:{comp}") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tf.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes], mode: int = 0o755) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return path


def program(text: str = "hello") -> bytes:
    return f"#!/bin/sh\necho {text}\n".encode()


def archive_record(
    path: Path, name: str, version: str, url: str | None = None, **extra: object
) -> dict:
    data = path.read_bytes()
    record = {
        "name": name,
        "version": version,
        "os": current_os(),
        "arch": current_arch(),
        "url": url if url is not None else path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "binPath": "bin/" + name,
    }
    record.update(extra)
    return record


def write_catalog(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "1", "archives": records}, indent=2))
    return path


def publish(directory: Path, name: str, version: str, fmt: str = "tar.gz", **extra: object) -> dict:
    """An archive of ``bin/<name>`` for ``version`` in ``directory``, and its catalog record."""
    archive = directory / f"{name}-{version}.{fmt}"
    files = {f"bin/{name}": program(f"{name} {version}"), "README": b"docs\n"}
    (make_zip if fmt == "zip" else make_tar)(archive, files)
    return archive_record(archive, name, version, **extra)


# --- raw archives: any member, any type (for hostile and tampered bundles) --------------------


@dataclass
class Raw:
    """One member of a raw archive, exactly as given (no checks, no normalisation)."""

    name: str
    data: bytes = b""
    kind: str = "file"  # file dir symlink hardlink chr blk fifo
    mode: int = 0o644
    target: str = ""


_RAW_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_RAW_ZIP_TYPES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "chr": stat.S_IFCHR,
    "blk": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def make_raw_archive(path: Path, members: list[Raw], *, create_system: int = 3) -> Path:
    """A .tar.gz, .tar.xz or .zip (by ``path``'s suffix) holding ``members`` in the order given.

    ``create_system`` is the zip "made by" system (3 Unix; 0 DOS has no Unix mode bits).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for m in members:
                slash = "/" if m.kind == "dir" and not m.name.endswith("/") else ""
                info = zipfile.ZipInfo(m.name + slash)
                info.create_system = create_system
                info.external_attr = (_RAW_ZIP_TYPES[m.kind] | m.mode) << 16
                data = m.target.encode() if m.kind == "symlink" else m.data
                zf.writestr(info, data if m.kind in ("file", "symlink") else b"")
        return path
    mode = "w:xz" if path.name.endswith(".tar.xz") else "w:gz"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _RAW_TAR_TYPES[m.kind]
            info.mode = m.mode
            if m.kind == "file":
                info.size = len(m.data)
                tf.addfile(info, io.BytesIO(m.data))
            else:
                info.linkname = m.target
                tf.addfile(info)
    return path


def read_raw_archive(path: Path) -> list[Raw]:
    """Every member of a .tar.gz or .zip, in archive order (the inverse of make_raw_archive)."""
    out: list[Raw] = []
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                kind = {v: k for k, v in _RAW_ZIP_TYPES.items()}.get(stat.S_IFMT(mode), "file")
                data = zf.read(info) if kind in ("file", "symlink") else b""
                name = info.filename.rstrip("/")
                if kind == "symlink":
                    out.append(Raw(name, kind=kind, mode=stat.S_IMODE(mode), target=data.decode()))
                else:
                    out.append(Raw(name, data, kind, stat.S_IMODE(mode)))
        return out
    with tarfile.open(path, "r:gz") as tf:
        for m in tf.getmembers():
            kind = {v: k for k, v in _RAW_TAR_TYPES.items()}[m.type]
            data = tf.extractfile(m).read() if m.isreg() else b""  # type: ignore[union-attr]
            out.append(Raw(m.name, data, kind, m.mode, m.linkname))
    return out
