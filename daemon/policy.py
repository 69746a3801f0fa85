"""Restart policy and backoff as pure functions, so they can be tested without a process."""

from __future__ import annotations

import random

import msgspec

from .fsm import Trigger

__all__ = ["BackoffPolicy", "RestartDecision", "RunClock", "backoff_delay", "decide_restart"]


class BackoffPolicy(msgspec.Struct, frozen=True):
    initial: float = 0.5
    max: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1


class RestartDecision(msgspec.Struct, frozen=True):
    trigger: Trigger
    #: Seconds to wait before the next start (EXIT_RETRY only).
    delay: float = 0.0
    reason: str = ""


def backoff_delay(policy: BackoffPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before restart ``attempt`` (1-based): initial * multiplier**(attempt-1), capped, +-jitter."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    base = (
        policy.initial * policy.multiplier ** (attempt - 1)
        if policy.multiplier > 1
        else policy.initial
    )
    base = min(policy.max, base)
    if policy.jitter:
        spread = (rng or random).uniform(-policy.jitter, policy.jitter)
        base *= 1.0 + spread
    return max(0.0, base)


class RunClock:
    """Whether a run stayed up ``stable_secs`` (its failure count then resets): it was running
    at its start + ``stable_secs``, the mark. Judged when the run leaves ``running`` (it
    exits, or is stopped) rather than by a timer at the mark, so a start leaves no wake-up
    behind (issue 16: the 50 timers of one pass woke an idle daemon 10 s later). The answers
    are the timer's: a run running from its start (``start_secs`` 0, or adopted) counts from
    its start, even with ``stable_secs`` 0; one still starting at its mark never counts.
    Monotonic seconds; one answer per run."""

    __slots__ = ("mark", "running_since", "started")

    def __init__(self) -> None:
        self.started: float | None = None
        self.mark: float | None = None
        self.running_since: float | None = None

    def start(self, stable_secs: float, now: float) -> None:
        self.started, self.mark, self.running_since = now, now + stable_secs, None

    def running(self, now: float, *, from_start: bool) -> None:
        if self.running_since is None:
            self.running_since = self.started if from_start else now

    def left(self, now: float) -> bool:
        """The run is no longer running (or never was): whether it was stable."""
        since, self.running_since = self.running_since, None
        if since is None:
            return False
        mark, self.mark = self.mark, None
        return mark is not None and since <= mark <= now


def decide_restart(
    *,
    restart: str,
    exit_code: int | None,
    failures: int,
    max_restarts: int,
    backoff: BackoffPolicy,
    rng: random.Random | None = None,
    cause: str = "",
) -> RestartDecision:
    """What to do after an unrequested exit.

    ``failures`` counts consecutive failed runs including this one (reset once a run stays up
    ``stable_secs``). ``exit_code`` None means unknown (a re-adopted process): it counts as a
    failure. ``restart`` is always | on-failure | never. ``cause``: the daemon ended the process
    because it failed a check (liveness): a failure whatever its exit code, and the reason.
    """
    clean = exit_code == 0 and not cause
    described = "exit status unknown" if exit_code is None else f"exited with {exit_code}"
    described = cause or described
    if restart == "never" or (restart == "on-failure" and clean):
        return RestartDecision(Trigger.EXIT_DONE, reason=described)
    if failures > max_restarts:
        return RestartDecision(
            Trigger.EXIT_FATAL,
            reason=f"{described}; gave up after {max_restarts} restarts in a row",
        )
    return RestartDecision(
        Trigger.EXIT_RETRY, delay=backoff_delay(backoff, max(1, failures), rng), reason=described
    )
