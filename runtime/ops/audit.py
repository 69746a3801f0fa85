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
import contextvars
import datetime
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runyard.runtime.core.atomic import atomic_write_bytes
from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.errors import FileRefused

__all__ = [
    "AUDIT_RELPATH",
    "GENESIS",
    "HEAD_RELPATH",
    "MAX_DEPTH",
    "AuditProblem",
    "AuditReport",
    "audit_path",
    "current_actor",
    "head_path",
    "line_hash",
    "record",
    "tail",
    "verify_chain",
]

#: Where the log lives, relative to the tree's ``logs/`` directory.
AUDIT_RELPATH = Path("runyard") / "audit.jsonl"
#: The seq and hash of the last entry, rewritten atomically on every append.
HEAD_RELPATH = Path("runyard") / "audit.head"
#: Deepest nesting an entry may have (ours have 3 levels); deeper lines are malformed.
MAX_DEPTH = 32
#: The ``prev`` of the first entry.
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "target", "result", "detail", "prev")

_CHUNK = 8192
_SECRET_NAME = re.compile(
    r"(?i)(secret|token|passw|passwd|passphrase|credential|apikey|api_key|private|auth|cookie"
    r"|session|signature|bearer|(^|[^a-z])key($|[^a-z]))"
)
_NAMES_ONLY = frozenset({"env", "environ", "environment", "context"})
REDACTED = "[redacted]"

#: Who is acting in this context when ``record`` is given no ``actor``: the daemon sets it
#: around each request, so a seal made for a client (in a worker thread: ``asyncio.to_thread``
#: copies the context) names that client, not "cli".
current_actor: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "runyard_audit_actor", default=None
)


def audit_path(logs_dir: str | os.PathLike[str]) -> Path:
    """The audit log of the tree whose ``logs/`` directory is ``logs_dir``."""
    return Path(logs_dir) / AUDIT_RELPATH


def head_path(log: str | os.PathLike[str]) -> Path:
    """The head file beside the audit log ``log``."""
    return Path(log).with_name(HEAD_RELPATH.name)


def _loads(raw: bytes) -> Any:
    """``json.loads`` that refuses deep nesting with a ValueError instead of a RecursionError."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            stack.extend(
                (c, depth + 1) for c in (item.values() if isinstance(item, dict) else item)
            )
    return value


def line_hash(line: bytes) -> str:
    """The ``prev`` the entry after ``line`` carries (``line`` without its newline)."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


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
    if actor is None:
        actor = current_actor.get()
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


def _last_lines(fd: int, size: int) -> Iterator[bytes]:
    """The complete lines of the file, last first, read backwards in chunks from ``size``."""
    pos = size
    buf = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        parts = buf.split(b"\n")
        buf = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part
    if buf:
        yield buf


def _tail_state(fd: int) -> tuple[int, str, bool]:
    """(next seq, prev hash, whether the file ends mid-line) for an append."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 1, GENESIS, False
    torn = os.pread(fd, 1, size - 1) != b"\n"
    prev = ""
    skipped = 0
    for line in _last_lines(fd, size):
        if not prev:
            prev = line_hash(line)
        try:
            seq = _loads(line)["seq"]
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

    ``actor`` defaults to ``current_actor`` when set, else this process's uid and ``cli``.

    Raises ``OSError`` when the log cannot be written (a caller that must go on catches it).
    """
    path = audit_path(logs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
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
        for line in _last_lines(fd, os.fstat(fd).st_size):
            if len(out) >= n:
                break
            try:
                value = _loads(line)
                out.append(
                    value if isinstance(value, dict) else {"raw": line.decode("utf-8", "replace")}
                )
            except ValueError:
                out.append({"raw": line.decode("utf-8", "replace")})
    finally:
        os.close(fd)
    out.reverse()
    return out


@dataclass(frozen=True)
class AuditProblem:
    #: 1-based line number in the file (0 when the problem is not one line's).
    line: int
    #: The entry's seq when it could be read.
    seq: int | None
    #: edited | missing | reordered | duplicate | malformed | moved | anchor | head
    kind: str
    message: str


@dataclass
class AuditReport:
    path: Path
    entries: int = 0
    #: seq and line hash of the last entry: the value to keep elsewhere as an anchor.
    head_seq: int | None = None
    head_hash: str | None = None
    problems: list[AuditProblem] = field(default_factory=list)
    #: One line each; not failures (e.g. a log written before audit.head existed).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problems": [p.__dict__ for p in self.problems],
            "warnings": list(self.warnings),
        }


@dataclass
class _Line:
    no: int
    hash: str
    seq: int | None
    prev: str | None
    error: str | None


def _read_lines(fh: BinaryIO) -> Iterator[_Line]:
    """Every line of the log as a _Line; one longer than SMALL_FILE is hashed as it streams
    by (so the chain still checks) but never held whole or parsed."""
    no = 0
    while raw := fh.readline(SMALL_FILE + 1):
        no += 1
        if len(raw) <= SMALL_FILE or raw.endswith(b"\n"):
            yield _read_line(no, raw)
            continue
        digest = hashlib.sha256(raw)
        while (more := fh.readline(SMALL_FILE)) and not more.endswith(b"\n"):
            digest.update(more)
        digest.update(more.rstrip(b"\n"))
        why = f"longer than {SMALL_FILE} bytes; not parsed"
        yield _Line(no, digest.hexdigest(), None, None, why)


def _read_line(no: int, raw: bytes) -> _Line:
    digest = line_hash(raw)
    try:
        value = _loads(raw)
    except ValueError as exc:
        why = str(exc) if str(exc).startswith("nested") else ""
        return _Line(no, digest, None, None, "not valid JSON" + (f" ({why})" if why else ""))
    if not isinstance(value, dict):
        return _Line(no, digest, None, None, "not a JSON object")
    seq, prev = value.get("seq"), value.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        seq = None
    if not isinstance(prev, str):
        prev = None
    missing = [f for f in FIELDS if f not in value]
    error = f"missing {', '.join(missing)}" if missing else None
    if error is None and (seq is None or prev is None):
        error = "bad seq or prev"
    return _Line(no, digest, seq, prev, error)


def _name(line: _Line) -> str:
    return f"entry {line.no}" + (f" (seq {line.seq})" if line.seq is not None else "")


def _read_head(path: Path) -> tuple[int, str] | str | None:
    """(seq, sha256) of the head file, a one-line reason it is unreadable, or None (absent)."""
    try:
        raw = read_capped(path, SMALL_FILE)
    except FileNotFoundError:
        return None
    except FileRefused as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    try:
        doc = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not valid JSON: {exc}"
    seq = doc.get("seq") if isinstance(doc, dict) else None
    digest = doc.get("sha256") if isinstance(doc, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        return 'expected {"seq": N, "sha256": "..."}'
    return seq, digest


def _check_head(report: AuditReport, lines: list[_Line], where: dict[int, list[_Line]]) -> None:
    hp = head_path(report.path)
    head = _read_head(hp)
    if head is None:
        if lines:
            report.warnings.append(
                f"{hp}: missing (a log written before heads existed, or the head was "
                "deleted): removal of the last entries cannot be checked without --anchor"
            )
        return
    after = len(lines) + 1  # problems of the tail sort last
    if isinstance(head, str):
        report.problems.append(AuditProblem(after, None, "head", f"{hp}: {head}"))
        return
    seq, digest = head
    last = next((ln.seq for ln in reversed(lines) if ln.seq is not None), 0)
    found = where.get(seq, [])
    if found and found[-1].hash == digest:
        if found[-1] is not lines[-1]:
            report.warnings.append(
                f"{hp}: names seq {seq}, the log goes on to entry {len(lines)} "
                "(an append interrupted before its head was written?)"
            )
        return
    report.problems.append(
        AuditProblem(
            after,
            seq,
            "head",
            f"entries after seq {min(last, seq)} removed or last entry edited "
            f"({hp.name} names seq {seq} sha256 {digest[:16]}..., the log ends at seq {last})",
        )
    )


def verify_chain(
    path: str | os.PathLike[str],
    anchor: tuple[int, str] | None = None,
    *,
    check_head: bool = True,
) -> AuditReport:
    """Walk the audit log at ``path`` and report every break in it.

    ``anchor`` is a ``(seq, hash)`` pair kept outside the box (``head`` of an earlier report):
    the entry with that seq must still be there with that hash, which catches a truncated tail
    or an edited last entry up to that point even when ``audit.head`` was rewritten too.
    ``check_head`` compares the log's end with ``audit.head`` (a missing head: a warning).
    """
    report = AuditReport(Path(path))
    lines: list[_Line] = []
    try:
        with open(path, "rb") as fh:
            lines.extend(_read_lines(fh))
    except FileNotFoundError:
        if anchor is not None:
            report.problems.append(
                AuditProblem(
                    0, anchor[0], "anchor", f"{path}: missing, but the anchor names seq {anchor[0]}"
                )
            )
        if check_head and head_path(path).exists():
            report.problems.append(
                AuditProblem(0, None, "head", f"{path}: missing, but {head_path(path).name} exists")
            )
        return report
    report.entries = len(lines)
    if lines:
        report.head_seq, report.head_hash = lines[-1].seq, lines[-1].hash
    problems = report.problems
    by_hash = {ln.hash: ln for ln in lines}
    where: dict[int, list[_Line]] = {}
    for ln in lines:
        if ln.error:
            problems.append(
                AuditProblem(
                    ln.no, ln.seq, "malformed", f"{_name(ln)}: edited or torn — {ln.error}"
                )
            )
        if ln.seq is not None:
            where.setdefault(ln.seq, []).append(ln)

    # Sequence numbers: gaps, duplicates, order.
    for seq, found in sorted(where.items()):
        if len(found) > 1:
            at = ", ".join(str(ln.no) for ln in found)
            problems.append(
                AuditProblem(
                    found[1].no,
                    seq,
                    "duplicate",
                    f"seq {seq} appears {len(found)} times (entries {at})",
                )
            )
    unread = [ln.no for ln in lines if ln.seq is None]
    present = sorted(where)
    if present:
        expected = 1
        for seq in present:
            low = where[expected - 1][0].no if expected > 1 else 0
            high = where[seq][0].no
            # Unreadable lines where the gap is explain it: they are reported as malformed.
            if seq > expected and sum(low < no < high for no in unread) < seq - expected:
                gap = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}-{seq - 1}"
                after = f"after {expected - 1}" if expected > 1 else "at the start of the log"
                problems.append(
                    AuditProblem(where[seq][0].no, expected, "missing", f"{gap} missing {after}")
                )
            expected = seq + 1
    last_seq: _Line | None = None
    for ln in lines:
        if ln.seq is None:
            continue
        if last_seq is not None and ln.seq < last_seq.seq:  # type: ignore[operator]
            problems.append(
                AuditProblem(
                    ln.no,
                    ln.seq,
                    "reordered",
                    f"{_name(ln)}: reordered — it comes after {_name(last_seq)}",
                )
            )
        last_seq = ln

    # The hash chain: a break not explained by the sequence numbers is an edit.
    for i, ln in enumerate(lines):
        if ln.prev is None:
            continue
        before = lines[i - 1] if i else None
        want = before.hash if before else GENESIS
        if ln.prev == want:
            continue
        if before is None:
            if ln.seq == 1:
                problems.append(
                    AuditProblem(
                        ln.no,
                        ln.seq,
                        "edited",
                        f"{_name(ln)}: edited — its prev is not the genesis value",
                    )
                )
            continue  # a missing start is reported by the seq walk
        if before.seq is None or ln.seq is None or ln.seq != before.seq + 1:
            continue  # explained by a gap, a reorder or a malformed neighbour
        target = by_hash.get(ln.prev)
        if target is not None:
            problems.append(
                AuditProblem(
                    ln.no,
                    ln.seq,
                    "moved",
                    f"{_name(ln)}: chained to entry {target.no}, not to entry {before.no}",
                )
            )
        else:
            problems.append(
                AuditProblem(
                    before.no,
                    before.seq,
                    "edited",
                    f"{_name(before)}: edited — its hash does not match entry {ln.no}'s prev",
                )
            )

    if anchor is not None:
        seq, digest = anchor
        found = where.get(seq, [])
        if not found:
            problems.append(
                AuditProblem(
                    0, seq, "anchor", f"seq {seq} named by the anchor is gone (truncated log?)"
                )
            )
        elif found[0].hash != digest:
            problems.append(
                AuditProblem(
                    found[0].no,
                    seq,
                    "anchor",
                    f"{_name(found[0])}: edited — its hash does not match the anchor",
                )
            )
    if check_head:
        _check_head(report, lines, where)
    problems.sort(key=lambda p: (p.line or 0, p.seq or 0))
    return report
