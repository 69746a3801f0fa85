"""Writing a bundle archive, byte for byte the same for the same members (tar.gz and zip).

The rules that make two packs of one tree identical:

- members in a fixed order: ``manifest.json`` first, then by UTF-8 bytes of the name;
- every member gets the same mtime (the bundle's ``createdAt``; zip: its UTC date and time,
  1980-01-01 at the earliest), uid/gid 0, no user or group name, mode 0644, 0755 (files
  listed as executables, directories) or 0777 (symlinks);
- tar: POSIX pax format (long and non-ASCII names in pax records, nothing else), one gzip
  stream with no file name and mtime 0 in its header, a fixed compression level;
- zip: Unix attributes (``create_system`` 3), no extra fields, no comment; each file deflated,
  or stored when 4 samples of 64 KiB spread over it do not compress (already-compressed
  data), a rule that looks at the bytes only.

The archive goes to a temp file beside the output, is fsynced, then renamed over it: a reader
never sees half a bundle, and a failed pack leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, BinaryIO

from runyard.runtime.core.atomic import atomic_output

from .collect import Member
from .layout import DIR_MODE, MANIFEST, BundleError

__all__ = ["DEFAULT_LEVEL", "write_bundle"]

#: gzip/deflate level: what `tar czf` (gzip -6) uses; see scripts/bench_bundle.py.
DEFAULT_LEVEL = 6
_COPY = 1 << 20
_SAMPLE = 64 * 1024
_SAMPLES = 4
#: A file whose sample deflates to more than this fraction of its size is stored as is.
_STORE_ABOVE = 0.95
_ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z, the earliest date a zip entry can carry


def write_bundle(
    out: Path,
    fmt: str,
    manifest: bytes,
    members: Iterable[Member],
    *,
    mtime: int,
    level: int = DEFAULT_LEVEL,
) -> None:
    """Write the archive to ``out`` atomically (temp file, fsync, rename, fsync the dir)."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    head = Member(MANIFEST, "file", data=manifest, size=len(manifest))
    ordered = [head, *members]
    with atomic_output(out, 0o644) as fh:
        if fmt == "zip":
            _write_zip(fh, ordered, mtime, level)
        else:
            _write_tar_gz(fh, ordered, mtime, level)


@contextlib.contextmanager
def _source(m: Member):  # type: ignore[no-untyped-def]
    """The bytes of a file member; refuses a file that changed since it was hashed."""
    if m.data is not None:
        yield io.BytesIO(m.data)
        return
    assert m.path is not None
    with open(m.path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != m.stamp:
            raise BundleError(f"{m.name}: changed while being packed; pack again")
        yield fh


# --- tar.gz ----------------------------------------------------------------------------------


def _tar_info(m: Member, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(m.name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if m.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = DIR_MODE
    elif m.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = m.target
    else:
        info.type = tarfile.REGTYPE
        info.mode = m.mode
        info.size = m.size
    return info


def _write_tar_gz(fh: BinaryIO, members: list[Member], mtime: int, level: int) -> None:
    # filename="" and mtime=0: the gzip header names no file and no time.
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=level, mtime=0)
    with (
        gz,
        tarfile.open(
            fileobj=gz,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            copybufsize=_COPY,
        ) as tf,
    ):
        for m in members:
            info = _tar_info(m, mtime)
            if m.kind == "file":
                with _source(m) as src:
                    tf.addfile(info, src)
            else:
                tf.addfile(info)


# --- zip -------------------------------------------------------------------------------------


def _zip_info(m: Member, mtime: int) -> zipfile.ZipInfo:
    when = time.gmtime(max(mtime, _ZIP_EPOCH))[:6]
    name = m.name + "/" if m.kind == "dir" else m.name
    info = zipfile.ZipInfo(name, date_time=when)
    info.create_system = 3
    if m.kind == "dir":
        info.external_attr = ((stat.S_IFDIR | DIR_MODE) << 16) | 0x10  # 0x10: MS-DOS directory
    elif m.kind == "symlink":
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    else:
        info.external_attr = (stat.S_IFREG | m.mode) << 16
        info.file_size = m.size
    info.compress_type = zipfile.ZIP_STORED
    return info


def _compresses(src: IO[bytes], size: int) -> bool:
    """Whether deflate is worth it, judged on 4 samples spread over the file, then rewound."""
    if size < 512:
        return size > 0
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    raw = packed = 0
    for i in range(_SAMPLES):
        src.seek(size * i // _SAMPLES)
        sample = src.read(_SAMPLE)
        raw += len(sample)
        packed += len(packer.compress(sample))
    packed += len(packer.flush())
    src.seek(0)
    return packed <= raw * _STORE_ABOVE


def _write_zip(fh: BinaryIO, members: list[Member], mtime: int, level: int) -> None:
    with zipfile.ZipFile(fh, "w", allowZip64=True) as zf:
        for m in members:
            info = _zip_info(m, mtime)
            if m.kind == "dir":
                zf.writestr(info, b"")
            elif m.kind == "symlink":
                zf.writestr(info, m.target.encode("utf-8"))
            else:
                with _source(m) as src:
                    if _compresses(src, m.size):
                        info.compress_type = zipfile.ZIP_DEFLATED
                        # ZipInfo's level: `_compresslevel` up to 3.12, `compress_level` after.
                        info._compresslevel = level  # type: ignore[attr-defined]
                        with contextlib.suppress(AttributeError):
                            info.compress_level = level  # type: ignore[attr-defined]
                    with zf.open(info, "w") as dst:
                        while chunk := src.read(_COPY):
                            dst.write(chunk)
