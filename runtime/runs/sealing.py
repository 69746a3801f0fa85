"""Sealing a run directory: hash every file (fsyncing it on the way), write ARTIFACT_INDEX.json and
SHA256SUMS.txt, sign, fsync the directories. And the readers of those two files for verify.

SHA256SUMS.txt is exactly what ``sha256sum -c --strict`` accepts: one ``<64 lowercase hex>
<two spaces><path>\\n`` line per file, sorted by the path's UTF-8 bytes, covering every file of
the run directory except itself and ``SHA256SUMS.txt.sig``. Paths that GNU would have to escape
(backslash, newline, any control character) or that are not UTF-8 are refused in a sealed run.

Hashing reads each file once (through mmap from 1 MiB up) on a small thread pool, while
another thread fsyncs the same files (hashlib and fsync release the GIL).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from runyard.runtime.core.atomic import fsync_dir
from runyard.runtime.core.errors import SealedFileError
from runyard.runtime.signing.ed25519 import key_identity, sign

from .jsonio import canonical
from .layout import (
    ARTIFACTS_DIR,
    DEFINITION_FILES,
    INDEX_FILE,
    INPUTS_DIR,
    REPLAY_FILE,
    RUN_FILES,
    SIG_FILE,
    SUMS_FILE,
)

__all__ = [
    "SealedFileError",
    "file_digest",
    "list_files",
    "parse_sums",
    "path_problem",
    "role_of",
    "seal_run",
    "sums_bytes",
    "write_synced",
]

_BLOCK = 1024 * 1024
_SUMS_LINE = re.compile(rb"^([0-9a-f]{64})  ([^\n]+)$")
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def path_problem(rel: str) -> str | None:
    """Why ``rel`` cannot be a path in a sealed run, or None."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8"
    if _BAD_CHARS.search(rel):
        return "holds a control character or a backslash (sha256sum would escape it)"
    if rel.startswith("/") or ".." in rel.split("/"):
        return "is not a plain relative path"
    return None


def role_of(rel: str) -> str | None:
    """The role of a path in ARTIFACT_INDEX.json; None for a file a sealed run cannot hold."""
    if rel in RUN_FILES:
        return "run"
    if rel in DEFINITION_FILES:
        return "definition"
    if rel == REPLAY_FILE:
        return "replay"
    top, _, rest = rel.partition("/")
    if not rest:
        return None
    return {ARTIFACTS_DIR: "artifact", INPUTS_DIR: "input", "logs": "log"}.get(top)


def list_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a posix path, sorted by UTF-8 bytes.

    SealedFileError for a symlink, a device, a FIFO, a socket or a path that cannot be sealed.
    """
    found: list[str] = []
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        for name in [*dirs, *files]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            problem = path_problem(rel)
            if problem:
                raise SealedFileError(f"{rel!r} {problem}")
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise SealedFileError(f"{rel} is a symlink (only regular files can be sealed)")
            if name in files and not stat.S_ISREG(mode):
                raise SealedFileError(f"{rel} is not a regular file")
            if name in files:
                found.append(rel)
    found.sort(key=lambda p: p.encode("utf-8"))
    return found


def file_digest(path: str | os.PathLike[str], sync: bool = False) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read once; ``sync`` also fsyncs it.

    Files of 1 MiB and more are hashed through a read-only mmap (no copy into Python, the GIL
    released for the whole file); smaller ones with one reused buffer.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size >= _BLOCK:
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                with contextlib.suppress(AttributeError, OSError):
                    mapped.madvise(mmap.MADV_SEQUENTIAL)
                h = hashlib.sha256(mapped)
                size = len(mapped)
        else:
            h = hashlib.sha256()
            buf = bytearray(_BLOCK)
            view = memoryview(buf)
            size = 0
            while n := os.readv(fd, [buf]):
                h.update(view[:n])
                size += n
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return h.hexdigest(), size


def _fsync_all(paths: list[Path], errors: list[OSError]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            errors.append(exc)
            return


def digests(root: Path, rels: list[str], sync: bool) -> dict[str, tuple[str, int]]:
    """file_digest of each path, on a thread pool; ``sync`` fsyncs every file too.

    The fsyncs run on their own thread *while* the files are hashed (fsync and sha256 both
    release the GIL), so freshly written artifacts cost about max(write-out, hash), not the sum.
    """
    if not rels:
        return {}
    errors: list[OSError] = []
    flusher = None
    if sync:
        flusher = threading.Thread(
            target=_fsync_all, args=([root / r for r in rels], errors), daemon=True
        )
        flusher.start()
    try:
        workers = max(1, min(8, os.cpu_count() or 1, len(rels)))
        if workers == 1:
            found = {rel: file_digest(root / rel) for rel in rels}
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = pool.map(lambda rel: file_digest(root / rel), rels)
                found = dict(zip(rels, results, strict=True))
    finally:
        if flusher is not None:
            flusher.join()
    if errors:
        raise errors[0]
    return found


def write_synced(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a new file and fsync it (its dir is fsynced when the run is sealed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def sums_bytes(hashes: dict[str, str]) -> bytes:
    """SHA256SUMS.txt for {path: sha256}."""
    ordered = sorted(hashes, key=lambda p: p.encode("utf-8"))
    return "".join(f"{hashes[p]}  {p}\n" for p in ordered).encode("utf-8")


def parse_sums(data: bytes) -> tuple[dict[str, str], list[str]]:
    """({path: sha256}, problems) of a SHA256SUMS.txt, strict about its format."""
    sums: dict[str, str] = {}
    problems: list[str] = []
    if data and not data.endswith(b"\n"):
        problems.append("the last line does not end with a newline")
    paths: list[str] = []
    for i, line in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        m = _SUMS_LINE.match(line)
        path = m.group(2).decode("utf-8", "replace") if m else ""
        if not m or path_problem(path):
            problems.append(f"line {i} is not '<64 lowercase hex>  <path>'")
            continue
        if path in sums:
            problems.append(f"line {i}: {path} is listed twice")
        sums[path] = m.group(1).decode("ascii")
        paths.append(path)
    if paths != sorted(paths, key=lambda p: p.encode("utf-8")):
        problems.append("lines are not sorted by path")
    return sums, problems


def _sync_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        fsync_dir(dirpath)


def seal_run(
    root: Path,
    known: dict[str, tuple[str, int]],
    *,
    run_id: str,
    signer: Ed25519PrivateKey | None = None,
    roles: Callable[[str], str | None] = role_of,
) -> tuple[list[dict[str, Any]], bytes]:
    """Write ARTIFACT_INDEX.json, SHA256SUMS.txt (and the .sig) into ``root``; fsync all.

    ``known`` holds the digests of files the caller wrote (and fsynced) itself; every other
    file is hashed and fsynced here. Returns (index entries, SHA256SUMS.txt bytes).
    SealedFileError for a file a sealed run cannot hold.
    """
    rels = list_files(root)
    for reserved in (INDEX_FILE, SUMS_FILE, SIG_FILE):
        if reserved in rels:
            raise SealedFileError(f"{reserved} exists before sealing")
    unknown = [r for r in rels if r not in known]
    found = {**{r: known[r] for r in rels if r in known}, **digests(root, unknown, sync=True)}
    entries: list[dict[str, Any]] = []
    for rel in rels:
        role = roles(rel)
        if role is None:
            raise SealedFileError(f"{rel} has no place in a sealed run")
        sha, size = found[rel]
        entries.append({"path": rel, "role": role, "sha256": sha, "size": size})
    index = canonical({"files": entries, "run_id": run_id})
    write_synced(root / INDEX_FILE, index)
    hashes = {e["path"]: e["sha256"] for e in entries}
    hashes[INDEX_FILE] = hashlib.sha256(index).hexdigest()
    sums = sums_bytes(hashes)
    write_synced(root / SUMS_FILE, sums)
    if signer is not None:
        write_synced(root / SIG_FILE, sign(signer, sums))
    _sync_dirs(root)
    return entries, sums


def signer_identity(signer: Ed25519PrivateKey) -> dict[str, str]:
    """The RUN_META members naming a signing key: fingerprint and raw public key (hex)."""
    fp, raw = key_identity(signer)
    return {"signing_key_fingerprint": fp, "signing_public_key": raw}


def make_read_only(root: Path) -> None:
    """Sealed files are 0444: a sealed run is not edited in place (dirs stay removable)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o444)
