"""The audit trail: an append-only, hash-chained JSON Lines file, ``logs/runyard/audit.jsonl``.

One line per recorded action, written by ``record()``::

    {"seq": 7, "time": "2025-01-02T03:04:05.678Z", "actor": {"uid": 1000, "client": "cli"},
     "action": "start", "target": "redis", "result": "ok", "detail": {}, "prev": "<64 hex>"}

- ``seq`` counts from 1; ``time`` is RFC 3339 UTC with milliseconds;
- ``actor`` is who asked: ``uid`` (this process's for a local command or the daemon itself; the
  connecting process's over ipc, with its ``pid``, from SO_PEERCRED as libzmq reports it, else
  ``socket_owner_uid``; none over TCP, which has ``address`` instead), ``client`` (the name a
  client gave in ``hello``, or ``cli`` for a local command), ``via`` (ipc | tcp) and ``key``
  (a CurveZMQ client's authorized key) when known;
- ``result`` is ``ok`` or the error code of the refusal;
- ``prev`` is the sha256 (hex) of the previous line's bytes, newline excluded; the first line's
  ``prev`` is ``GENESIS`` (64 zeros).

Appends from several processes are serialised by an exclusive ``flock`` on the file itself; the
last line is found by reading backwards from the end, so an append costs the same whatever the
size of the log; each append is one ``write`` followed by ``fsync``. Secrets never go in:
``detail`` keys with a secret-looking name are redacted and ``env``/``context`` maps are reduced
to their sorted key names (callers should pass names, never values, in the first place).

Each append also replaces ``logs/runyard/audit.head`` (``{"seq": N, "sha256": "<hash of line
N>"}``) atomically (temp file, fsync, rename, under the same flock), so ``verify_chain()``
notices the removal of the last entries or an edit of the very last entry, which no later
entry's ``prev`` covers ("entries after seq N removed or last entry edited"). A log without a
head file (written before heads existed, or the head deleted) verifies with a warning.

A line that does not decode (torn by a power cut, edited, or JSON nested deeper than
``MAX_DEPTH``) never stops an append: the chain goes on over its raw bytes (the next entry's
``prev`` is the sha256 of that line as it is), its seq is counted, and ``verify_chain`` names it.

``verify_chain()`` walks the file and names every edited, removed, duplicated or reordered
entry. What it cannot see without an external anchor (``verify_chain(anchor=...)``): a
rewrite by someone who can write both ``audit.jsonl`` and ``audit.head`` (the daemon's uid,
root): truncating the tail and rewriting the head, or rewriting the whole file with a freshly
computed chain. Only an anchor kept off the box protects against that.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.locking import lock_fd
from runyard.runtime.ops.audit_chain import (
    AUDIT_RELPATH,
    FIELDS,
    GENESIS,
    HEAD_RELPATH,
    MAX_DEPTH,
    audit_path,
    head_path,
    last_lines,
    line_hash,
    loads,
)

if TYPE_CHECKING:
    from runyard.runtime.ops.audit_verify import AuditProblem, AuditReport, verify_chain

__all__ = [
    "AUDIT_RELPATH",
    "FIELDS",
    "GENESIS",
    "HEAD_RELPATH",
    "MAX_DEPTH",
    "AuditProblem",
    "AuditReport",
    "audit_path",
    "head_path",
    "line_hash",
    "record",
    "tail",
    "verify_chain",
]

#: Re-exported from audit_verify.py, imported on first use (``__getattr__``).
_VERIFY = frozenset({"AuditProblem", "AuditReport", "verify_chain"})


def __getattr__(name: str) -> Any:
    """The chain's verification, imported when first asked for: a daemon writes the trail and
    never verifies it, and its dataclasses cost ~1.5 ms of every launch (issue 16, cold start)."""
    if name in _VERIFY:
        from runyard.runtime.ops import audit_verify

        return getattr(audit_verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SECRET_NAME = re.compile(
    r"(?i)(secret|token|passw|passwd|passphrase|credential|apikey|api_key|private|auth|cookie"
    r"|session|signature|bearer|(^|[^a-z])key($|[^a-z]))"
)
_NAMES_ONLY = frozenset({"env", "environ", "environment", "context"})
REDACTED = "[redacted]"


def _now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _clean(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with secret-looking keys redacted."""
    if depth > 8:
        return "..."
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if _SECRET_NAME.search(key):
                out[key] = REDACTED
            elif key.lower() in _NAMES_ONLY and isinstance(v, Mapping):
                out[key] = sorted(str(n) for n in v)
            else:
                out[key] = _clean(v, depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_clean(v, depth + 1) for v in items]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _default_actor(actor: Mapping[str, Any] | None) -> dict[str, Any]:
    # A caller that names an actor says all it knows: "cli" is only the default of a command.
    # A peer of the daemon's sockets (``via``) comes as the server found it: over TCP there is
    # no uid, and over ipc it is the peer's own (or only ``socket_owner_uid``), never ours.
    if actor is None:
        out: dict[str, Any] = {"uid": os.getuid(), "client": "cli"}
    elif actor.get("via"):
        out = {}
    else:
        out = {"uid": os.getuid()}
    if actor:
        out.update({str(k): v for k, v in actor.items() if v is not None and v != ""})
    # Built by us, never redacted (a CurveZMQ key name is not a secret), only made JSON-safe.
    return {k: v if isinstance(v, int | str) else str(v) for k, v in out.items()}


def _tail_state(fd: int) -> tuple[int, str, bool]:
    """(next seq, prev hash, whether the file ends mid-line) for an append."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 1, GENESIS, False
    torn = os.pread(fd, 1, size - 1) != b"\n"
    prev = ""
    skipped = 0
    for line in last_lines(fd, size):
        if not prev:
            prev = line_hash(line)
        try:
            seq = loads(line)["seq"]
            if isinstance(seq, int) and not isinstance(seq, bool):
                return seq + skipped + 1, prev, torn
        except (ValueError, KeyError, TypeError):
            pass  # torn, edited or nested too deeply: counted, and chained over as it is
        skipped += 1
    return skipped + 1, prev or GENESIS, torn


def record(
    logs_dir: str | os.PathLike[str],
    action: str,
    *,
    target: str = "",
    result: str = "ok",
    detail: dict[str, Any] | None = None,
    actor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one entry to the audit log of ``logs_dir`` and return it.

    ``actor`` defaults to this process's uid and ``cli``. Actions are recorded through
    ``runtime.audit_action.record_action`` (the one caller), which names the request's actor.

    Raises ``OSError`` when the log cannot be written (a caller that must go on catches it).
    """
    path = audit_path(logs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        lock_fd(fd)  # appends from several processes, one at a time
        seq, prev, torn = _tail_state(fd)
        entry = {
            "seq": seq,
            "time": _now(),
            "actor": _default_actor(actor),
            "action": str(action),
            "target": str(target),
            "result": str(result),
            "detail": _clean(detail or {}),
            "prev": prev,
        }
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        # A torn last line (power cut mid-append) is closed, kept as evidence and chained over.
        data = (b"\n" if torn else b"") + line + b"\n"
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"{path}: short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        except OSError:
            # Never leave half an entry behind (disk full): we hold the lock, so this is ours.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        head = json.dumps({"seq": seq, "sha256": line_hash(line)}, separators=(",", ":"))
        try:
            atomic_write_bytes(head_path(path), head.encode() + b"\n", 0o640)
        except OSError as exc:
            raise OSError(
                f"{head_path(path)}: seq {seq} appended, but the head file cannot be written: "
                f"{exc.strerror or exc}"
            ) from None
        return entry
    finally:
        os.close(fd)  # releases the flock


def tail(logs_dir: str | os.PathLike[str], n: int = 20) -> list[dict[str, Any]]:
    """The last ``n`` entries (oldest first); unparsable lines come back as ``{"raw": ...}``."""
    path = audit_path(logs_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    try:
        for line in last_lines(fd, os.fstat(fd).st_size):
            if len(out) >= n:
                break
            try:
                value = loads(line)
                out.append(
                    value if isinstance(value, dict) else {"raw": line.decode("utf-8", "replace")}
                )
            except ValueError:
                out.append({"raw": line.decode("utf-8", "replace")})
    finally:
        os.close(fd)
    out.reverse()
    return out
