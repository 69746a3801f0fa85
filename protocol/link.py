"""What the control socket's monitor says about the daemon at the other end, free of I/O.

Both clients watch their DEALER with a zmq socket monitor (and heartbeats over tcp and a
``--host`` relay, so that a host that vanishes is noticed too: transport.heartbeats_for). Its events tell apart three things a bare timeout would blur:

    HANDSHAKE_SUCCEEDED  the link is up: a daemon answered the ZMTP (and Curve) handshake
    DISCONNECTED         after the link was up: the daemon died (closed, or missed heartbeats);
                         before it ever came up: only the end of a failed handshake, no news
    HANDSHAKE_FAILED_AUTH
                         the daemon's authenticator refused this client's CurveZMQ key
                         (libzmq then stops reconnecting: waiting longer cannot help)
    HANDSHAKE_FAILED_NO_DETAIL / _PROTOCOL
                         the handshake broke (most often: the daemon's public key given to this
                         client is not the daemon's); libzmq retries, so it is only a hint for
                         the message at the deadline

``LinkWatch`` keeps that reading for one socket; the sync and async clients only move monitor
frames into it and turn its ``LinkFailure`` into their error.
"""

from __future__ import annotations

import enum

import zmq

__all__ = ["MONITORED_EVENTS", "LinkFailure", "LinkWatch"]

#: The monitor events ``LinkWatch`` reads (the rest would only wake the client for nothing).
MONITORED_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)


class LinkFailure(enum.Enum):
    DIED = "died"  # the daemon's link went down after it was up
    REFUSED = "refused"  # the daemon refused this client's key


class LinkWatch:
    """The state of one control link, fed with monitor events in the order they came."""

    def __init__(self) -> None:
        self.up = False
        #: A handshake failed since the link was last up (cleared when one succeeds).
        self.handshake_failed = False

    def feed(self, event: int, value: int = 0) -> LinkFailure | None:
        """Take one monitor event; a LinkFailure when it ends what is waiting on the link."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up, self.handshake_failed = True, False
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.up = False
            return LinkFailure.REFUSED
        if event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            self.handshake_failed = True
            return None
        if event == zmq.EVENT_DISCONNECTED and self.up:
            self.up = False
            return LinkFailure.DIED
        return None
