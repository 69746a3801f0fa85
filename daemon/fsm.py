"""The lifecycle of one supervised process: a state enum, a trigger enum, one transition table.

    stopped ──start──▶ starting ──start_secs up──▶ running
       ▲                  │ exit                     │ exit
       │                  ▼                          ▼
       │     retry ◀── backoff ◀──(policy: retry)────┤
       │                  (policy: done) ──▶ exited  │
       │                  (policy: give up) ──▶ fatal
       └──stopped── stopping ◀──stop── starting | running

Readiness is not a state: it is a separate condition reported by probes. The *wanted* state
(`Wanted`: up or down, what the operator asked for) is kept apart from this actual state, as s6
keeps it. `next_state` is pure and raises on an illegal transition, so a bug shows up as an
error, not a silently odd state. ``recall_fatal`` brings back, at boot, a service that was
``fatal`` when the previous daemon ended: a new daemon does not retry what its predecessor gave
up on.
"""

from __future__ import annotations

import enum

from runyard.runtime.core.errors import IllegalTransition

__all__ = ["IllegalTransition", "ServiceState", "Trigger", "Wanted", "next_state"]


class ServiceState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    EXITED = "exited"
    FATAL = "fatal"


class Wanted(enum.StrEnum):
    """What the operator asked for, apart from what is (s6's ``want up`` / ``want down``)."""

    UP = "up"
    DOWN = "down"


class Trigger(enum.StrEnum):
    START = "start"  # wanted up: spawn now
    STARTED = "started"  # stayed up start_secs
    EXIT_RETRY = "exit_retry"  # exited; the restart policy says try again after a delay
    EXIT_DONE = "exit_done"  # exited; the policy says leave it (never / on-failure with 0)
    EXIT_FATAL = "exit_fatal"  # exited or could not spawn; too many failures in a row
    RETRY = "retry"  # the backoff delay is over
    STOP = "stop"  # wanted down
    STOPPED = "stopped"  # the process group is gone after a stop
    ADOPT = "adopt"  # found alive after a daemon restart
    RECALL_FATAL = "recall_fatal"  # was fatal when the previous daemon ended


S, T = ServiceState, Trigger

TRANSITIONS: dict[tuple[ServiceState, Trigger], ServiceState] = {
    (S.STOPPED, T.START): S.STARTING,
    (S.STOPPED, T.ADOPT): S.RUNNING,
    (S.STOPPED, T.RECALL_FATAL): S.FATAL,
    (S.STARTING, T.STARTED): S.RUNNING,
    (S.STARTING, T.EXIT_RETRY): S.BACKOFF,
    (S.STARTING, T.EXIT_DONE): S.EXITED,
    (S.STARTING, T.EXIT_FATAL): S.FATAL,
    (S.STARTING, T.STOP): S.STOPPING,
    (S.RUNNING, T.EXIT_RETRY): S.BACKOFF,
    (S.RUNNING, T.EXIT_DONE): S.EXITED,
    (S.RUNNING, T.EXIT_FATAL): S.FATAL,
    (S.RUNNING, T.STOP): S.STOPPING,
    (S.STOPPING, T.STOPPED): S.STOPPED,
    (S.BACKOFF, T.RETRY): S.STARTING,
    (S.BACKOFF, T.START): S.STARTING,
    (S.BACKOFF, T.STOP): S.STOPPED,
    (S.EXITED, T.START): S.STARTING,
    (S.EXITED, T.STOP): S.STOPPED,
    (S.FATAL, T.START): S.STARTING,
    (S.FATAL, T.STOP): S.STOPPED,
}

#: States in which a process of the service may be alive.
ALIVE = frozenset({S.STARTING, S.RUNNING, S.STOPPING})


def next_state(state: ServiceState, trigger: Trigger) -> ServiceState:
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(f"no transition from {state} on {trigger}") from None
