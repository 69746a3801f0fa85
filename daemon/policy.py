"""Restart policy and backoff as pure functions, so they can be tested without a process."""

from __future__ import annotations

import random

import msgspec

from .fsm import Trigger

__all__ = ["BackoffPolicy", "RestartDecision", "backoff_delay", "decide_restart", "ran_stable"]


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


def ran_stable(running_since: float | None, stable_at: float | None, now: float) -> bool:
    """Whether a run that ends ``now`` stayed up long enough to reset the failure count: it was
    running (since ``running_since``) at ``stable_at``, its start + ``stable_secs`` (all
    monotonic). Judged when the run ends rather than by a timer at ``stable_at``, so a start
    leaves no wake-up behind (issue 16: 50 starts woke an idle daemon 10 s later)."""
    if running_since is None or stable_at is None:
        return False
    return running_since <= stable_at <= now


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
