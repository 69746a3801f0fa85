"""Gap tracking and backfill of an event stream, free of I/O: what both event streams share.

A stream subscribes first, then takes a ``status`` snapshot; ``GapTracker`` then drops what the
snapshot already holds and reports gaps, which are backfilled (``logs.tail`` for log events,
``status`` for state events) before the live event. Log topics are numbered by line (a log
event's seq is its last line's): a log event follows on when its first line is the one after
the last line seen.

``StreamCore`` holds that bookkeeping for one stream; the sync and async streams only move
frames and requests in and out of it.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from .messages import (
    Event,
    LogEvent,
    LogsReply,
    LogsTail,
    Reply,
    Request,
    StateEvent,
    Status,
    StatusReply,
    decode_event,
)

__all__ = ["BACKFILL_MAX_LINES", "Gap", "GapTracker", "StreamCore", "Verdict", "parse_event"]

#: The most log lines one gap backfill asks for (keeps the reply well under MAX_MESSAGE_BYTES).
BACKFILL_MAX_LINES = 1000


class Verdict(enum.Enum):
    DROP = "drop"  # at or below what the client already has (snapshot or an earlier event)
    OK = "ok"  # the next one of its topic


@dataclass(frozen=True)
class Gap:
    """Events ``first..last`` (inclusive) of ``topic`` never arrived."""

    topic: str
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class GapTracker:
    """The last seq seen per topic; says of each new (topic, seq) whether it is new and whole.

    Starts from a snapshot's ``seqs``; a topic the snapshot does not name starts at 0.
    """

    def __init__(self, seqs: Mapping[str, int] | None = None) -> None:
        self._last: dict[str, int] = dict(seqs or {})

    def last(self, topic: str) -> int:
        return self._last.get(topic, 0)

    def observe(self, topic: str, seq: int, first: int | None = None) -> Verdict | Gap:
        """An event that covers seqs ``first..seq``: a log event is numbered by its lines (its
        seq is its last line's), any other event covers its own seq alone."""
        first = seq if first is None else first
        last = self.last(topic)
        if seq <= last:
            return Verdict.DROP
        self._last[topic] = seq
        if first <= last + 1:
            return Verdict.OK
        return Gap(topic, last + 1, first - 1)

    def advance(self, topic: str, seq: int) -> None:
        """Everything up to ``seq`` is known (a fresher snapshot of the topic came in)."""
        self._last[topic] = max(self.last(topic), seq)


def parse_event(frames: Sequence[bytes]) -> Event | None:
    """The event in ``[topic, JSON]``; None when the frames are not a well-formed event."""
    if len(frames) != 2:
        return None
    try:
        event = decode_event(frames[1])
    except msgspec.DecodeError:
        return None
    if frames[0] != event.topic.encode():
        return None
    return event


class StreamCore:
    """Snapshot, gap tracking and backfill bookkeeping of an event stream, free of I/O."""

    def __init__(self, snapshot: StatusReply) -> None:
        self.snapshot = snapshot
        self.tracker = GapTracker(snapshot.seqs)
        #: The daemon lifetime the tracked seqs belong to (0: a daemon that does not say).
        self.epoch = snapshot.epoch
        self.pending: deque[Event] = deque()
        self.malformed = 0
        self.gaps = 0
        self.unfilled = 0

    def take(self, frames: Sequence[bytes]) -> tuple[Event, Gap | None] | None:
        """(event, gap before it) to deliver, or None to skip the frames."""
        event = parse_event(frames)
        if event is None:
            self.malformed += 1
            return None
        if event.epoch and event.epoch != self.epoch:
            # A new daemon: its seqs start again at 1, so nothing of the old numbering applies.
            self.epoch = event.epoch
            self.tracker = GapTracker()
        first = event.seq
        if isinstance(event, LogEvent) and event.lines:
            first = event.lines[0].seq
        before = self.tracker.last(event.topic)
        verdict = self.tracker.observe(event.topic, event.seq, first)
        if verdict is Verdict.DROP:
            return None
        if isinstance(event, LogEvent) and first <= before:
            # Part of it is already known: keep only the new lines.
            lines = [ln for ln in event.lines if ln.seq > before]
            event = msgspec.structs.replace(event, lines=lines)
        if verdict is Verdict.OK:
            return event, None
        assert isinstance(verdict, Gap)
        self.gaps += 1
        return event, verdict

    @staticmethod
    def backfill_request(gap: Gap, live: Event) -> Request | None:
        if isinstance(live, LogEvent):
            n = min(gap.size, BACKFILL_MAX_LINES)
            return LogsTail(service=live.service, after_seq=gap.first - 1, n=n)
        if isinstance(live, StateEvent):
            return Status(services=[live.service.name])
        # du events carry a whole report; daemon events have no history to ask for.
        return None

    def fill(self, gap: Gap, live: Event, reply: Reply | None) -> None:
        """Queue what the backfill ``reply`` recovered, then (unless superseded) the live event."""
        if isinstance(live, LogEvent):
            upper = live.lines[0].seq if live.lines else live.seq + 1
            lines = []
            if isinstance(reply, LogsReply):
                lines = [ln for ln in reply.lines if gap.first <= ln.seq < upper]
            if len(lines) < gap.size:
                self.unfilled += 1
            if lines:
                self.pending.append(
                    LogEvent(
                        topic=live.topic,
                        seq=lines[-1].seq,
                        ts=lines[-1].ts,
                        service=live.service,
                        lines=lines,
                    )
                )
        elif isinstance(live, StateEvent):
            name = live.service.name
            fresh = None
            if isinstance(reply, StatusReply):
                fresh = next((s for s in reply.services if s.name == name), None)
            if fresh is None:
                self.unfilled += 1
            else:
                # The status was taken after the live event was published: it is at least as
                # new, so it replaces the live event, and events it covers are dropped.
                seq = max(reply.seqs.get(live.topic, 0), live.seq)
                self.tracker.advance(live.topic, seq)
                self.pending.append(
                    StateEvent(topic=live.topic, seq=seq, ts=time.time(), service=fresh)
                )
                return
        self.pending.append(live)
