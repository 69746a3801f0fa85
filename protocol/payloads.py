"""The shapes inside replies and events: ports, disk usage, binaries, runs and their reports.

These are wire structs, not the files or objects they describe: the daemon builds them from
``runtime``'s structs (``from_runtime``), and this package never imports ``runtime``. Like every
wire struct they accept fields they do not know (a newer daemon adds some), and every field has
a default, so a field an older daemon does not send is no error either. Names whose set may grow
(a port's protocol, a run's status, a step's kind) are plain ``str``: a value a newer daemon
adds is read as it is, and shown as it is.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import msgspec

__all__ = [
    "RUN_DIR_WIRE_KEY",
    "ArtifactEntry",
    "Binary",
    "Check",
    "DiskReport",
    "ErrorCode",
    "FileDifference",
    "Port",
    "ReplayReport",
    "RunDetails",
    "RunOutcome",
    "RunStep",
    "RunSummary",
    "ServiceSetup",
    "ServiceUsage",
    "StatSample",
    "Usage",
    "ValueDifference",
    "VerifyReport",
    "WireStruct",
    "from_runtime",
    "run_dir_field",
]


class ErrorCode(enum.StrEnum):
    """The code of an ErrorReply. The daemon only sends these; a client reads ``code`` as a plain
    str, so a code a newer daemon adds is still read (as a plain ``RemoteError``)."""

    BAD_REQUEST = "bad_request"  # malformed frame, wrong types, unknown op, a bad name
    UNSUPPORTED_VERSION = "unsupported_version"  # hello with a protocol we do not speak
    NOT_FOUND = "not_found"  # no such service (or sealed run)
    CONFLICT = "conflict"  # the request contradicts the current state (start while shutting down)
    TOO_LARGE = "too_large"  # message over MAX_MESSAGE_BYTES
    FAILED = "failed"  # the operation ran and failed (ensure: checksum mismatch, ...)
    INTERNAL = "internal"  # a bug in the daemon; it is logged with its traceback


class WireStruct(msgspec.Struct, kw_only=True):
    """Base of every payload struct: keyword-only, unknown fields ignored (msgspec's default,
    spelled out so that nobody "fixes" it into forbid_unknown_fields)."""


W = TypeVar("W", bound=WireStruct)

#: The key a sealed run's directory travels under. Runyard once called a sealed run a "bundle",
#: before the word was kept for runtime bundles; the Python name is ``run_dir`` everywhere, but
#: the wire keeps the old key, so that clients and daemons of either age still read each other
#: (docs/ARCHITECTURE.md, "Names on the wire"). Never reuse it for anything else.
RUN_DIR_WIRE_KEY = "bundle"


def run_dir_field(default: Any = msgspec.NODEFAULT) -> Any:
    """A ``run_dir`` field, sent and read under ``RUN_DIR_WIRE_KEY``."""
    return msgspec.field(default=default, name=RUN_DIR_WIRE_KEY)


def from_runtime(obj: object, kind: type[W]) -> W:
    """``obj`` (a runtime struct, or plain data) as the wire struct ``kind``: fields are matched
    by their Python name (``run_dir`` too, whatever key it travels under), and one ``kind``
    does not have is left out."""
    return msgspec.convert(_wire_keyed(msgspec.to_builtins(obj), kind), kind)


def _wire_keyed(data: Any, kind: Any) -> Any:
    """``data`` (keyed by Python names) keyed as ``kind`` is on the wire, nested structs too.
    Structs inside lists or unions are passed as they are: none has a renamed field today."""
    if not (isinstance(data, dict) and isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
        return data
    return {
        f.encode_name: _wire_keyed(data[f.name], f.type)
        for f in msgspec.structs.fields(kind)
        if f.name in data
    }


class ServiceSetup(WireStruct):
    """How a service is set up, beyond what its status says: what the TUI's detail pane shows.
    Every field is empty from a daemon that predates it (issue 15)."""

    #: The program the service runs (its argv[0], as the daemon resolved it).
    bin: str = ""
    #: always | on-failure | never
    restart: str = ""
    #: Restarts in a row before the service is fatal.
    max_restarts: int | None = None
    #: The backoff between restarts, for people: "0.5s, x2, up to 30s".
    backoff: str = ""
    #: The resource limits set, for people: "memory_max 256 MiB, tasks_max 64"; "" for none.
    limits: str = ""


class Port(WireStruct):
    """A port a service listens on by default."""

    name: str = ""
    port: int = 0
    #: tcp | udp | http | https (a str: a newer daemon may know more)
    protocol: str = "tcp"


class Usage(WireStruct):
    bytes: int = 0
    files: int = 0


class ServiceUsage(WireStruct):
    name: str = ""
    bin: Usage = msgspec.field(default_factory=Usage)
    data: Usage = msgspec.field(default_factory=Usage)
    logs: Usage = msgspec.field(default_factory=Usage)
    config: Usage = msgspec.field(default_factory=Usage)
    cache: Usage = msgspec.field(default_factory=Usage)
    total: Usage = msgspec.field(default_factory=Usage)


class DiskReport(WireStruct):
    """Usage of a whole tree; ``other`` is what belongs to no service."""

    root: str = ""
    services: list[ServiceUsage] = []
    other: Usage = msgspec.field(default_factory=Usage)
    total: Usage = msgspec.field(default_factory=Usage)
    #: The filesystem the tree is on: bytes free (for us) and its size; None from an older
    #: daemon.
    disk_free: int | None = None
    disk_size: int | None = None


class Binary(WireStruct):
    """An installed service binary, as ``ensure`` reports it."""

    name: str = ""
    version: str = ""
    os: str = ""
    arch: str = ""
    kind: str = ""
    checksum: str = ""
    size: int = 0
    bin_path: str = ""
    install_dir: str = ""
    #: This call downloaded the archive / extracted it into bin/.
    fetched: bool = False
    installed: bool = False


class RunOutcome(WireStruct):
    """What ``run`` answers. Sealed: the run's facts (run_dir, hashes, files); rejected:
    ``stage``, ``reason`` and ``record`` (the rejection record's path, if one was written)."""

    run_id: str = ""
    engine: str = ""
    engine_code: str = ""
    engine_version: str = ""
    project_id: str = ""
    run_dir: str = run_dir_field("")
    inputs_hash: str = ""
    outputs_hash: str = ""
    files: int = 0
    bytes: int = 0
    duration: float = 0.0
    signed_by: str | None = None
    stage: str = ""
    reason: str = ""
    record: str | None = None


class RunSummary(WireStruct):
    """One line of ``runs.list``: a sealed run or a rejected record."""

    run_id: str = ""
    engine: str = ""
    #: sealed | rejected
    status: str = ""
    path: str = ""
    engine_code: str = ""
    engine_version: str = ""
    project_id: str = ""
    started_at: str = ""
    duration: float | None = None
    signed: bool = False
    reason: str = ""


class RunDetails(WireStruct):
    """One sealed run (``runs.show``): its summary and the run directory's own JSON documents, which
    are the engine's to shape (so plain JSON, not structs)."""

    summary: RunSummary = msgspec.field(default_factory=RunSummary)
    run_input: dict[str, Any] = {}
    run_output: dict[str, Any] = {}
    run_meta: dict[str, Any] = {}


class ArtifactEntry(WireStruct):
    """One ARTIFACT_INDEX.json entry of a sealed run."""

    path: str = ""
    size: int | None = None
    sha256: str = ""
    role: str = ""


class Check(WireStruct):
    name: str = ""
    ok: bool = False
    detail: str = ""
    skipped: bool = False


class VerifyReport(WireStruct):
    run_dir: str = run_dir_field("")
    checks: list[Check] = []
    run_id: str = ""
    engine: str = ""
    #: Every check passed.
    ok: bool = False


class ValueDifference(WireStruct):
    """A JSON path where a replayed RUN_OUTPUT differs, both values as (truncated) JSON text."""

    path: str = ""
    original: str = ""
    replayed: str = ""


class FileDifference(WireStruct):
    """An artifact whose bytes differ in a replay; None for a side without it."""

    path: str = ""
    original_size: int | None = None
    replayed_size: int | None = None
    original_sha256: str | None = None
    replayed_sha256: str | None = None


class ReplayReport(WireStruct):
    """Replayable only when verify passed and the re-executed RUN_OUTPUT is byte-identical."""

    run_dir: str = run_dir_field("")
    run_id: str = ""
    engine: str = ""
    engine_version: str = ""
    verify: VerifyReport = msgspec.field(default_factory=VerifyReport)
    replayable: bool = False
    reason: str = ""
    #: JSON paths where the replayed RUN_OUTPUT differs.
    differences: list[str] = []
    #: Artifacts whose bytes differ (informational).
    artifact_differences: list[str] = []
    replay_id: str | None = None
    record: str | None = None
    #: ``differences`` with the original and the replayed value (compact JSON, truncated).
    value_differences: list[ValueDifference] = []
    #: ``artifact_differences`` with their sizes and digests.
    file_differences: list[FileDifference] = []


class RunStep(WireStruct):
    """What a ``run.<run_id>`` event says beyond its kind; each kind fills some fields:
    started (engine_version), sealed (run_dir, outputs_hash), rejected (stage, reason),
    replay_started (replay_id), replayed (replay_id, replayable, reason)."""

    engine_version: str = ""
    run_dir: str = run_dir_field("")
    outputs_hash: str = ""
    stage: str = ""
    reason: str = ""
    replay_id: str | None = None
    replayable: bool | None = None


class StatSample(msgspec.Struct, array_like=True, gc=False):
    """One CPU/RSS sample of a service (``stats`` replies): wall time, percent of one CPU,
    resident bytes. Array-like (three numbers a sample, ninety samples a service)."""

    ts: float
    cpu_percent: float
    rss: int
