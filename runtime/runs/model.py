"""What the sealed-run library hands back: errors, events, results and reports.

The errors are defined in ``runtime.core.errors`` (where the whole tree is drawn) and re-exported
here: `RunError`, a run cannot be attempted (engine not installed, bad definitions, unknown
upstream run, a replay without the engine version...); `RunRejected`, a run was attempted and
refused (nothing sealed under runs/, a record with the reason under
data/{engine}/rejected/{run_id}/).

Every struct is a msgspec Struct with plain fields (paths as strings), so a daemon handler can
send it over the wire as it is and the CLI can print it with ``--json``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from runyard.runtime.core.checks import Check
from runyard.runtime.core.errors import RunError, RunRejected

__all__ = [
    "Check",
    "DeterminismReport",
    "EventKind",
    "FileDifference",
    "ReplayAttempt",
    "ReplayReport",
    "RunError",
    "RunMilestone",
    "RunRejected",
    "RunResult",
    "RunSummary",
    "ValueDifference",
    "VerifyReport",
]


EventKind = Literal["started", "sealed", "rejected", "replay_started", "replayed"]


class RunMilestone(msgspec.Struct, kw_only=True):
    """One step of a run, for ``on_event``; the daemon publishes it on ``run.<run_id>`` as the
    wire's ``protocol.messages.RunEvent`` (its ``data`` a ``RunStep``).

    ``run_id`` is always the run the event is about: a replay reports on the original run's id
    with ``data["replay_id"]``.
    """

    kind: EventKind
    run_id: str
    engine: str
    #: RFC 3339 UTC with microseconds.
    at: str
    data: dict[str, Any] = {}


class RunResult(msgspec.Struct, kw_only=True):
    """A sealed run."""

    run_id: str
    engine: str
    engine_code: str
    engine_version: str
    project_id: str
    #: Absolute path of data/{engine}/runs/{run_id}.
    run_dir: str
    inputs_hash: str
    outputs_hash: str
    #: Files in the run directory (SHA256SUMS.txt and the signature included) and their total size.
    files: int
    bytes: int
    duration: float
    #: Fingerprint of the signing key when the run is signed.
    signed_by: str | None = None


class VerifyReport(msgspec.Struct, kw_only=True):
    run_dir: str
    checks: list[Check]
    run_id: str = ""
    engine: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def failed_names(self) -> set[str]:
        return {c.name for c in self.checks if not c.ok}

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["ok"] = self.ok
        return out


class ValueDifference(msgspec.Struct, kw_only=True):
    """One JSON path where a replayed RUN_OUTPUT.json differs, with both values as compact JSON
    text, truncated (``runs/explain.py``); ``(absent)`` for a side that lacks the path."""

    path: str
    original: str
    replayed: str


class FileDifference(msgspec.Struct, kw_only=True):
    """An artifact whose bytes differ between a sealed run and its replay; a side without the
    file has None for its size and sha256."""

    path: str
    original_size: int | None
    replayed_size: int | None
    original_sha256: str | None
    replayed_sha256: str | None


class ReplayReport(msgspec.Struct, kw_only=True):
    """The verdict of ``replay_run``: replayable only when ``verify`` passed and the
    re-executed RUN_OUTPUT.json is byte-identical."""

    run_dir: str
    run_id: str
    engine: str
    engine_version: str
    verify: VerifyReport
    replayable: bool
    reason: str
    #: JSON paths (``$.outputs.value``) where the replayed RUN_OUTPUT differs.
    differences: list[str] = []
    #: Artifacts whose bytes differ (informational: the rule compares RUN_OUTPUT only).
    artifact_differences: list[str] = []
    replay_id: str | None = None
    #: data/{engine}/replays/{replay_id}, when the engine was re-executed.
    record: str | None = None
    #: ``differences`` with the original and the replayed value side by side.
    value_differences: list[ValueDifference] = []
    #: ``artifact_differences`` with their sizes and digests.
    file_differences: list[FileDifference] = []

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["verify"] = self.verify.to_builtins()
        return out


class ReplayAttempt(msgspec.Struct, kw_only=True):
    """One re-execution of ``check_determinism``: identical when its RUN_OUTPUT.json and every
    artifact are byte-identical to the sealed run's."""

    replay_id: str | None
    record: str | None
    identical: bool
    #: Which distinct result it gave (0: the sealed run's; 1, 2...: others, in order seen).
    variant: int
    reason: str


class DeterminismReport(msgspec.Struct, kw_only=True):
    """The verdict of ``runyard replay RUN --times N``: deterministic when the sealed run and
    all N re-executions are byte-identical (RUN_OUTPUT.json and every artifact)."""

    run_dir: str
    run_id: str
    engine: str
    engine_version: str
    times: int
    deterministic: bool
    reason: str
    #: Re-executions byte-identical to the sealed run, and distinct results seen (1: all same).
    identical: int = 0
    variants: int = 0
    attempts: list[ReplayAttempt] = []
    #: The differences of every attempt that differed, each path and file once (first seen).
    value_differences: list[ValueDifference] = []
    file_differences: list[FileDifference] = []


class RunSummary(msgspec.Struct, kw_only=True):
    """One line of ``runs``: a sealed run or a rejected record."""

    run_id: str
    engine: str
    status: Literal["sealed", "rejected"]
    path: str
    engine_code: str = ""
    engine_version: str = ""
    project_id: str = ""
    started_at: str = ""
    duration: float | None = None
    signed: bool = False
    reason: str = ""
