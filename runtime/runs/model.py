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
    "EventKind",
    "ReplayReport",
    "RunError",
    "RunMilestone",
    "RunRejected",
    "RunResult",
    "RunSummary",
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

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["verify"] = self.verify.to_builtins()
        return out


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
