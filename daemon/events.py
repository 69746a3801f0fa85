"""The event bus: per-topic sequence numbers and the hand-off to whatever sends events out.

The supervisor publishes through `EventBus.publish`; the server plugs the ZeroMQ PUB socket in
as the sink. Building an event is skipped when nobody listens to its topic (``wants``), which
keeps a flooding service's log lines from costing encode time when no client follows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runyard.protocol.messages import Event

__all__ = ["EventBus"]


class EventBus:
    def __init__(self, epoch: float | None = None) -> None:
        #: Stamped on every event: seqs belong to one daemon's lifetime.
        self.epoch = time.time() if epoch is None else epoch
        self.seqs: dict[str, int] = {}
        self._sink: Callable[[str, Event], None] | None = None
        self._wants: Callable[[str], bool] = lambda topic: True

    def attach(
        self, sink: Callable[[str, Event], None], wants: Callable[[str], bool] | None = None
    ) -> None:
        self._sink = sink
        if wants is not None:
            self._wants = wants

    def wants(self, topic: str) -> bool:
        return self._sink is not None and self._wants(topic)

    def next_seq(self, topic: str) -> int:
        seq = self.seqs.get(topic, 0) + 1
        self.seqs[topic] = seq
        return seq

    def publish_lines(self, topic: str, last_seq: int, make: Callable[[int, float], Event]) -> None:
        """Log topics are numbered by line: the event's seq is the seq of its last line, and a
        client sees a gap when the first line's seq is above the last one it has + 1."""
        self.seqs[topic] = last_seq
        if self._sink is not None and self._wants(topic):
            self._emit(topic, make(last_seq, time.time()))

    def publish(self, topic: str, make: Callable[[int, float], Event]) -> None:
        """Number the event and send it. The seq advances even with no listener, so a client
        that subscribes later still sees consistent numbers against the status snapshot."""
        seq = self.next_seq(topic)
        if self._sink is not None and self._wants(topic):
            self._emit(topic, make(seq, time.time()))

    def _emit(self, topic: str, event: Event) -> None:
        assert self._sink is not None
        event.epoch = self.epoch
        self._sink(topic, event)
