"""Verifying the audit trail: ``verify_chain`` names every edited, removed, duplicated, moved or
reordered entry of ``logs/runyard/audit.jsonl`` (runtime/ops/audit.py says what it holds).

The walk, in the order ``verify_chain`` takes it: read every line (one longer than SMALL_FILE is
hashed as it streams by, never parsed); lines that do not parse; seqs duplicated, missing or out
of order; then the hash chain, where a break that the seqs do not already explain is an edit
(or an entry moved); then the anchor, when one is given; then the head file. Problems come back
sorted by line, each on one line naming the entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runyard.runtime.core.capped import SMALL_FILE, read_capped
from runyard.runtime.core.digest import sha256
from runyard.runtime.core.errors import FileRefused
from runyard.runtime.ops.audit_chain import FIELDS, GENESIS, head_path, line_hash, loads

__all__ = ["AuditProblem", "AuditReport", "verify_chain"]


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
        digest = sha256(raw)
        while (more := fh.readline(SMALL_FILE)) and not more.endswith(b"\n"):
            digest.update(more)
        digest.update(more.rstrip(b"\n"))
        why = f"longer than {SMALL_FILE} bytes; not parsed"
        yield _Line(no, digest.hexdigest(), None, None, why)


def _read_line(no: int, raw: bytes) -> _Line:
    digest = line_hash(raw)
    try:
        value = loads(raw)
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
        doc = loads(raw)
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
    try:
        with open(path, "rb") as fh:
            lines = list(_read_lines(fh))
    except FileNotFoundError:
        report.problems.extend(_missing_log(Path(path), anchor, check_head))
        return report
    report.entries = len(lines)
    if lines:
        report.head_seq, report.head_hash = lines[-1].seq, lines[-1].hash
    where: dict[int, list[_Line]] = {}
    for ln in lines:
        if ln.seq is not None:
            where.setdefault(ln.seq, []).append(ln)
    problems = report.problems
    problems.extend(_malformed(lines))
    # Sequence numbers first: what they explain is not reported again as a chain break.
    problems.extend(_duplicates(where))
    problems.extend(_gaps(lines, where))
    problems.extend(_reordered(lines))
    problems.extend(_chain_breaks(lines))
    if anchor is not None:
        problems.extend(_anchor_problems(anchor, where))
    if check_head:
        _check_head(report, lines, where)
    problems.sort(key=lambda p: (p.line or 0, p.seq or 0))
    return report


def _missing_log(
    path: Path, anchor: tuple[int, str] | None, check_head: bool
) -> Iterator[AuditProblem]:
    """No log at all: a problem only when an anchor or a head says there was one."""
    if anchor is not None:
        yield AuditProblem(
            0, anchor[0], "anchor", f"{path}: missing, but the anchor names seq {anchor[0]}"
        )
    if check_head and head_path(path).exists():
        yield AuditProblem(0, None, "head", f"{path}: missing, but {head_path(path).name} exists")


def _malformed(lines: list[_Line]) -> Iterator[AuditProblem]:
    """Lines that do not parse as entries: edited, or torn by a power cut."""
    for ln in lines:
        if ln.error:
            yield AuditProblem(
                ln.no, ln.seq, "malformed", f"{_name(ln)}: edited or torn — {ln.error}"
            )


def _duplicates(where: dict[int, list[_Line]]) -> Iterator[AuditProblem]:
    """A seq that appears more than once (an entry copied in)."""
    for seq, found in sorted(where.items()):
        if len(found) > 1:
            at = ", ".join(str(ln.no) for ln in found)
            yield AuditProblem(
                found[1].no,
                seq,
                "duplicate",
                f"seq {seq} appears {len(found)} times (entries {at})",
            )


def _gaps(lines: list[_Line], where: dict[int, list[_Line]]) -> Iterator[AuditProblem]:
    """Seqs missing between those present (entries removed), unless unreadable lines stand
    where the gap is: those are reported as malformed."""
    unread = [ln.no for ln in lines if ln.seq is None]
    expected = 1
    for seq in sorted(where):
        low = where[expected - 1][0].no if expected > 1 else 0
        high = where[seq][0].no
        if seq > expected and sum(low < no < high for no in unread) < seq - expected:
            gap = f"seq {expected}" if seq == expected + 1 else f"seqs {expected}-{seq - 1}"
            after = f"after {expected - 1}" if expected > 1 else "at the start of the log"
            yield AuditProblem(where[seq][0].no, expected, "missing", f"{gap} missing {after}")
        expected = seq + 1


def _reordered(lines: list[_Line]) -> Iterator[AuditProblem]:
    """An entry whose seq is lower than the one before it in the file (lines swapped)."""
    last: _Line | None = None
    for ln in lines:
        if ln.seq is None:
            continue
        if last is not None and ln.seq < last.seq:  # type: ignore[operator]
            yield AuditProblem(
                ln.no, ln.seq, "reordered", f"{_name(ln)}: reordered — it comes after {_name(last)}"
            )
        last = ln


def _chain_breaks(lines: list[_Line]) -> Iterator[AuditProblem]:
    """A ``prev`` that is not the hash of the line before: an edit, or an entry moved, when the
    sequence numbers do not already explain it."""
    by_hash = {ln.hash: ln for ln in lines}
    for i, ln in enumerate(lines):
        if ln.prev is None:
            continue
        before = lines[i - 1] if i else None
        if ln.prev == (before.hash if before else GENESIS):
            continue
        if before is None:
            if ln.seq == 1:
                why = f"{_name(ln)}: edited — its prev is not the genesis value"
                yield AuditProblem(ln.no, ln.seq, "edited", why)
            continue  # a missing start is reported by the seq walk
        if before.seq is None or ln.seq is None or ln.seq != before.seq + 1:
            continue  # explained by a gap, a reorder or a malformed neighbour
        target = by_hash.get(ln.prev)
        if target is not None:
            why = f"{_name(ln)}: chained to entry {target.no}, not to entry {before.no}"
            yield AuditProblem(ln.no, ln.seq, "moved", why)
        else:
            why = f"{_name(before)}: edited — its hash does not match entry {ln.no}'s prev"
            yield AuditProblem(before.no, before.seq, "edited", why)


def _anchor_problems(
    anchor: tuple[int, str], where: dict[int, list[_Line]]
) -> Iterator[AuditProblem]:
    """The entry an anchor kept off the box names must still be there, unchanged."""
    seq, digest = anchor
    found = where.get(seq, [])
    if not found:
        yield AuditProblem(
            0, seq, "anchor", f"seq {seq} named by the anchor is gone (truncated log?)"
        )
    elif found[0].hash != digest:
        why = f"{_name(found[0])}: edited — its hash does not match the anchor"
        yield AuditProblem(found[0].no, seq, "anchor", why)
