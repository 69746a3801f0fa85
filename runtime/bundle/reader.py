"""Reading a bundle file in one sequential pass: ``manifest.json`` first, then every member.

A tar.gz bundle is read as a stream (one decompression pass, no seeking: ``install`` works
from a pipe), a zip through its central directory, in archive order. Each member goes through
the same per-member rules as a service archive (``runtime.acquisition.archive_rules``: traversal, absolute
names, devices, FIFOs, setuid/setgid/sticky, bad link targets); a member that breaks one is
handed on as a problem, so ``verify`` can report every member and ``install`` can stop at
the first. The rules that need the whole archive are checked against the manifest's plan
(``plan.py``), which lists every member before any of them is read.
"""

from __future__ import annotations

import contextlib
import gzip
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from runyard.runtime.acquisition.archive_rules import Entry, reading, tar_entry, zip_entry
from runyard.runtime.core.errors import UnsafeArchiveError

from .layout import MANIFEST, BundleError, bundle_format

__all__ = ["MAX_MANIFEST_BYTES", "BundleReader", "Item"]

#: A manifest listing 500,000 files is about 50 MB; more than this is not a manifest.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20


@dataclass
class Item:
    """One member after manifest.json: its checked entry, or why the rules refused it."""

    raw: str
    entry: Entry | None
    problem: str | None
    open: Callable[[], IO[bytes]] | None = None


class BundleReader:
    """``with BundleReader(path) as r: r.read_manifest(); for item in r.items(): ...``"""

    def __init__(self, path: str | Path, fmt: str | None = None) -> None:
        self.path = Path(path)
        self.label = self.path.name
        #: ``fmt`` (``--format``) for a file whose name does not say it; both must agree.
        self.format = bundle_format(self.path, fmt)
        self._stack = contextlib.ExitStack()
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        self._members: Iterator[tarfile.TarInfo] | Iterator[zipfile.ZipInfo] | None = None

    def __enter__(self) -> BundleReader:
        try:
            with reading(self.label):
                if self.format == "zip":
                    self._zip = self._stack.enter_context(zipfile.ZipFile(self.path))
                    self._members = iter(self._zip.infolist())
                else:
                    raw = self._stack.enter_context(open(self.path, "rb"))
                    gz = self._stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                    # "r:" over the GzipFile rather than tarfile's own "r|gz" stream: every
                    # seek is forward (GzipFile reads and discards), so a pipe works, and
                    # headers are read without _Stream copying its whole buffer each time.
                    self._tar = self._stack.enter_context(
                        tarfile.open(fileobj=gz, mode="r:", encoding="utf-8")  # type: ignore[call-overload]
                    )
                    self._members = iter(self._tar)
        except FileNotFoundError:
            self._stack.close()
            raise BundleError(f"{self.path}: no such file") from None
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _next(self) -> tarfile.TarInfo | zipfile.ZipInfo | None:
        assert self._members is not None
        with reading(self.label):
            return next(self._members, None)

    def _entry(self, member: tarfile.TarInfo | zipfile.ZipInfo) -> Entry:
        with reading(self.label):
            if isinstance(member, zipfile.ZipInfo):
                assert self._zip is not None
                return zip_entry(self._zip, member, self.label)
            return tar_entry(member, self.label)

    def _opener(self, member: tarfile.TarInfo | zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
        def open_member() -> IO[bytes]:
            with reading(self.label):
                if isinstance(member, zipfile.ZipInfo):
                    assert self._zip is not None
                    return self._zip.open(member)
                assert self._tar is not None
                fh = self._tar.extractfile(member)
                if fh is None:
                    raise UnsafeArchiveError(f"{self.label}: member {member.name!r} has no data")
                return fh

        return open_member

    def read_manifest(self) -> bytes:
        """The bytes of the first member, which must be a regular file named manifest.json."""
        first = self._next()
        if first is None:
            raise BundleError(f"{self.label}: empty archive; a bundle starts with {MANIFEST}")
        entry = self._entry(first)
        if entry.name != MANIFEST or entry.kind != "file":
            raise BundleError(
                f"{self.label}: the first member is {entry.name!r}, not {MANIFEST}: "
                "not a runtime bundle"
            )
        if entry.size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{self.label}: {MANIFEST} is {entry.size} bytes; too big")
        with self._opener(first)() as fh, reading(self.label):
            data = fh.read(MAX_MANIFEST_BYTES + 1)
        return data

    def items(self) -> Iterator[Item]:
        """Every member after the manifest, in archive order.

        A damaged archive (bad gzip, truncated, CRC) raises UnsafeArchiveError from here.
        """
        while (member := self._next()) is not None:
            raw = member.orig_filename if isinstance(member, zipfile.ZipInfo) else member.name
            try:
                entry = self._entry(member)
            except UnsafeArchiveError as exc:
                yield Item(raw, None, str(exc))
                continue
            yield Item(raw, entry, None, self._opener(member) if entry.kind == "file" else None)


def copy_member(src: IO[bytes], sink: Callable[[bytes], object], size: int, label: str) -> int:
    """Feed exactly ``size`` bytes of a member to ``sink``, chunk by chunk: never reads more
    than one byte past ``size`` (to find a member longer than declared), refuses a member
    longer or shorter than declared."""
    total = 0
    while total < size:
        with reading(label):
            chunk = src.read(min(_CHUNK, size - total))
        if not chunk:
            raise UnsafeArchiveError(
                f"{label}: a member holds {total} bytes, fewer than its declared {size}"
            )
        total += len(chunk)
        sink(chunk)
    with reading(label):
        extra = src.read(1)
    if extra:
        raise UnsafeArchiveError(f"{label}: a member holds more than its declared {size} bytes")
    return total
