"""The wire contract between the daemon and its clients: msgspec Structs, JSON on the wire.

    control   client DEALER  --[request JSON]-->  daemon ROUTER   one request, one reply, same ``id``
    events    daemon PUB     --[topic, event JSON]-->  client SUB

Requests are a tagged union on ``op``, replies on ``reply``, events on ``event``. A tag is never
reused; new fields always get defaults; decoders tolerate unknown fields so an older client can
talk to a newer daemon (the protocol version in ``hello`` says what each side speaks).
Events carry ``topic`` and a per-topic ``seq`` (1, 2, 3, ...). A client subscribes first, then
asks for ``status``, whose reply holds the current ``seq`` of every topic: events at or below
it are already in the snapshot, a jump above ``last + 1`` is a gap to backfill (``logs.tail``
with ``after_seq`` for log topics, ``status`` for state topics).

Every struct here and in ``payloads`` (what replies and events carry) accepts unknown fields and
never reuses a struct of a file we own (those forbid unknown fields): a newer daemon may add a
field anywhere without breaking an older client. Names whose set grows (a service's state and
wanted state, an error code, an event's kind) travel as plain ``str``: a state a newer daemon
adds reaches an older client as its name, shown as it is, never as a decode error. This
package imports nothing from ``runtime``'s structs (tests/test_wire.py walks the imports).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from .payloads import (
    ArtifactEntry,
    Binary,
    DiskReport,
    ErrorCode,
    Port,
    ReplayReport,
    RunDetails,
    RunOutcome,
    RunStep,
    RunSummary,
    ServiceSetup,
    StatSample,
    VerifyReport,
    run_dir_field,
)

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "ActionReply",
    "DaemonEvent",
    "Du",
    "DuEvent",
    "DuReply",
    "Ensure",
    "EnsureReply",
    "ErrorCode",
    "ErrorReply",
    "Event",
    "Hello",
    "HelloReply",
    "LogEvent",
    "LogLine",
    "LogsReply",
    "LogsTail",
    "Reload",
    "ReplayReply",
    "ReplayRun",
    "Reply",
    "Request",
    "Restart",
    "Run",
    "RunEvent",
    "RunReply",
    "RunShowReply",
    "RunsList",
    "RunsReply",
    "RunsShow",
    "ServiceStatus",
    "Shutdown",
    "Signal",
    "Start",
    "StateEvent",
    "Status",
    "StatusReply",
    "Stop",
    "VerifyReply",
    "VerifyRun",
    "decode_event",
    "decode_reply",
    "decode_request",
    "encode",
]

PROTOCOL_VERSION = 1
#: Anything larger is refused unread: no request needs more, and a flood must not cost memory.
MAX_MESSAGE_BYTES = 1024 * 1024


class Request(msgspec.Struct, tag_field="op", kw_only=True):
    #: Chosen by the client; echoed in the reply.
    id: str = ""


class Hello(Request, tag="hello"):
    protocol: int = PROTOCOL_VERSION
    client: str = ""


class Status(Request, tag="status"):
    #: Empty: every service.
    services: list[str] = []


class Start(Request, tag="start"):
    services: list[str] = []
    all: bool = False


class Stop(Request, tag="stop"):
    services: list[str] = []
    all: bool = False
    #: Reply when the stop has finished (True) or at once (False).
    wait: bool = True


class Restart(Request, tag="restart"):
    services: list[str] = []
    all: bool = False


class Signal(Request, tag="signal"):
    service: str
    #: A name (TERM, HUP, USR1) or a number.
    signal: str


class Reload(Request, tag="reload"):
    pass


class LogsTail(Request, tag="logs.tail"):
    service: str
    n: int = 100
    #: Only lines with a larger seq (backfill after a gap).
    after_seq: int | None = None
    #: Only lines with a smaller seq: the ``n`` lines before it, from the ring and the log files
    #: (rotated ones too), for scrolling back. An older daemon ignores it (and sends the newest
    #: lines): a client keeps only the lines below it.
    before_seq: int | None = None


class Du(Request, tag="du"):
    pass


class Ensure(Request, tag="ensure"):
    name: str
    version_spec: str = "latest"
    catalog: str | None = None


class Shutdown(Request, tag="shutdown"):
    pass


class Run(Request, tag="run"):
    """Execute an engine once and seal the run (runtime/runs)."""

    engine: str
    inputs: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    context: dict[str, Any] = {}
    project_id: str = "default"
    #: RUN_ID or RUN_ID:GLOB of upstream runs whose artifacts feed this one.
    from_runs: list[str] = []
    #: Absolute path of an Ed25519 private key (PEM) on the daemon's host.
    sign_key: str | None = None
    timeout: float = 600.0


class RunsList(Request, tag="runs.list"):
    engine: str | None = None
    include_rejected: bool = True


class RunsShow(Request, tag="runs.show"):
    run_id: str


class VerifyRun(Request, tag="verify"):
    #: A sealed run: its directory or its run id in the daemon's tree (sent as "bundle").
    run_dir: str = run_dir_field()
    pubkey: str | None = None


class ReplayRun(Request, tag="replay"):
    #: Like ``VerifyRun.run_dir`` (sent as "bundle").
    run_dir: str = run_dir_field()
    timeout: float = 600.0


class Stats(Request, tag="stats"):
    services: list[str] = []  # empty: every service


RequestUnion = (
    Hello
    | Status
    | Start
    | Stop
    | Restart
    | Signal
    | Reload
    | LogsTail
    | Du
    | Ensure
    | Shutdown
    | Run
    | RunsList
    | RunsShow
    | VerifyRun
    | ReplayRun
    | Stats
)


class ServiceStatus(msgspec.Struct, kw_only=True, gc=False):
    name: str
    version: str = ""
    kind: str = "service"
    #: stopped starting running stopping backoff exited fatal; a str, so a state a newer
    #: daemon adds is read as its name.
    state: str = "stopped"
    #: up | down: what the operator asked for, apart from what is.
    wanted: str = "down"
    #: None: no readiness probe configured (running counts as ready).
    ready: bool | None = None
    ready_detail: str = ""
    pid: int | None = None
    pgid: int | None = None
    #: Epoch seconds of the current process's start.
    started_at: float | None = None
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: float | None = None
    #: Why the service is fatal, failed to spawn, or waits (dependency, backoff).
    reason: str = ""
    #: Seconds until the next start attempt, in backoff.
    next_start_in: float | None = None
    cpu_percent: float | None = None
    rss: int | None = None
    ports: list[Port] = []
    autostart: bool = True
    depends_on: dict[str, str] = {}
    # liveness (daemon/liveness.py); defaults, so a status from an older daemon still decodes.
    #: The last liveness probe's answer; None: no liveness probe, or none answered yet.
    live: bool | None = None
    live_detail: str = ""
    # --- containment (issue 12) ---
    #: cgroup | subreaper: how the service's processes are kept from escaping a stop; "" from
    #: a daemon that predates containment.
    containment: str = ""
    # --- resource limits ---
    #: A limit that is set but enforced by nothing here (cpu_max without the cpu controller).
    limits_note: str = ""
    # --- sd_notify ---
    #: The last STATUS= text the service sent over NOTIFY_SOCKET ("" when none).
    notify_status: str = ""
    #: How it is set up (bin, restart policy, limits): the TUI's detail pane (issue 15).
    setup: ServiceSetup = msgspec.field(default_factory=ServiceSetup)


class LogLine(msgspec.Struct, array_like=True, gc=False):
    seq: int
    ts: float
    stream: str
    line: str


class Reply(msgspec.Struct, tag_field="reply", kw_only=True):
    id: str = ""


class ErrorReply(Reply, tag="error"):
    #: One of ErrorCode; typed as str so a client tolerates codes a newer daemon adds.
    code: str
    message: str


class HelloReply(Reply, tag="hello"):
    protocol: int
    daemon_version: str
    pid: int
    root: str
    #: Where the events PUB socket listens.
    events: str


class StatusReply(Reply, tag="status"):
    services: list[ServiceStatus]
    #: topic -> last seq published: events at or below it are in this snapshot.
    seqs: dict[str, int]
    daemon_pid: int
    daemon_started_at: float
    #: Same as Event.epoch: the daemon start time the seqs belong to.
    epoch: float = 0.0


class ActionReply(Reply, tag="action"):
    #: The services the action touched, as they are after it.
    services: list[ServiceStatus]
    message: str = ""


class LogsReply(Reply, tag="logs"):
    service: str
    lines: list[LogLine]
    #: The newest seq of the service's log (gap detection).
    last_seq: int


class DuReply(Reply, tag="du"):
    report: DiskReport


class EnsureReply(Reply, tag="ensure"):
    binary: Binary


class RunReply(Reply, tag="run"):
    #: sealed | rejected
    status: str
    #: sealed: the run's facts; rejected: run_id, engine, stage, reason, record.
    result: RunOutcome


class RunsReply(Reply, tag="runs"):
    #: Oldest first (run ids sort by time).
    runs: list[RunSummary]


class RunShowReply(Reply, tag="runs.show"):
    run: RunDetails
    #: The run directory's ARTIFACT_INDEX.json entries, in index order; empty from a daemon that
    #: predates the field or when the index is unreadable.
    artifacts: list[ArtifactEntry] = []


class VerifyReply(Reply, tag="verify"):
    report: VerifyReport


class ReplayReply(Reply, tag="replay"):
    report: ReplayReport


class StatsReply(Reply, tag="stats"):
    samples: dict[str, list[StatSample]] = {}  # oldest first, every 2 s, the last 3 minutes


ReplyUnion = (
    ErrorReply
    | HelloReply
    | StatusReply
    | ActionReply
    | LogsReply
    | DuReply
    | EnsureReply
    | RunReply
    | RunsReply
    | RunShowReply
    | VerifyReply
    | ReplayReply
    | StatsReply
)


class Event(msgspec.Struct, tag_field="event", kw_only=True):
    topic: str
    seq: int
    ts: float
    #: The daemon's start time: seqs restart at 1 with a new daemon, so a client that sees a
    #: new epoch takes a new snapshot instead of dropping "old" seqs.
    epoch: float = 0.0


class StateEvent(Event, tag="state"):
    service: ServiceStatus


class LogEvent(Event, tag="log"):
    service: str
    lines: list[LogLine]


class DuEvent(Event, tag="du"):
    report: DiskReport


class DaemonEvent(Event, tag="daemon"):
    #: started | reloaded | stopping
    kind: str
    message: str = ""


class RunEvent(Event, tag="run"):
    """A step of a sealed run on topic ``run.<run_id>``."""

    run_id: str
    engine: str
    #: started | sealed | rejected | replay_started | replayed
    kind: str
    data: RunStep = msgspec.field(default_factory=RunStep)


EventUnion = StateEvent | LogEvent | DuEvent | DaemonEvent | RunEvent

_encoder = msgspec.json.Encoder()


@functools.cache
def _decoder(union: Any) -> msgspec.json.Decoder[Any]:
    """Made at first use: a decoder resolves every struct of its union (~1-2 ms on a small box),
    and the daemon decodes only requests, a client replies and events (issue 16)."""
    return msgspec.json.Decoder(union)


def encode(message: Request | Reply | Event) -> bytes:
    return _encoder.encode(message)


def decode_request(data: bytes) -> Request:
    """Raises msgspec.DecodeError (malformed, wrong type, unknown op)."""
    return _decoder(RequestUnion).decode(data)


def decode_reply(data: bytes) -> Reply:
    return _decoder(ReplyUnion).decode(data)


def decode_event(data: bytes) -> Event:
    return _decoder(EventUnion).decode(data)
