"""Build real archives and catalogs for tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

from runtime.platform import current_arch, current_os


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
