"""The lifecycle table and the restart policy, on their own (pure functions)."""

from __future__ import annotations

import random

import pytest

from runyard.daemon.fsm import TRANSITIONS, IllegalTransition, ServiceState, Trigger, next_state
from runyard.daemon.policy import BackoffPolicy, RunClock, backoff_delay, decide_restart

S, T = ServiceState, Trigger


def test_every_state_can_be_stopped_or_is_already_down() -> None:
    for state in S:
        if state in (S.STOPPED, S.STOPPING):
            continue
        assert next_state(state, T.STOP) in (S.STOPPING, S.STOPPED)


def test_every_state_is_reachable_from_stopped() -> None:
    seen, frontier = {S.STOPPED}, [S.STOPPED]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src == state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(S)


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (S.STOPPED, T.STOP),
        (S.RUNNING, T.START),
        (S.STOPPING, T.START),
        (S.STOPPED, T.STARTED),
        (S.EXITED, T.RETRY),
    ],
)
def test_illegal_transitions_raise(state, trigger) -> None:
    with pytest.raises(IllegalTransition, match=f"from {state} on {trigger}"):
        next_state(state, trigger)


def test_backoff_grows_geometrically_and_caps() -> None:
    policy = BackoffPolicy(initial=0.5, max=4.0, multiplier=2.0, jitter=0.0)
    assert [backoff_delay(policy, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_its_fraction() -> None:
    policy = BackoffPolicy(initial=1.0, max=10.0, multiplier=2.0, jitter=0.25)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 3, rng) for _ in range(500)]
    assert min(delays) >= 3.0 and max(delays) <= 5.0
    assert max(delays) - min(delays) > 1.0  # it does spread


@pytest.mark.parametrize(
    ("restart", "code", "failures", "trigger"),
    [
        ("never", 1, 1, T.EXIT_DONE),
        ("never", 0, 1, T.EXIT_DONE),
        ("on-failure", 0, 1, T.EXIT_DONE),
        ("on-failure", 2, 1, T.EXIT_RETRY),
        ("on-failure", None, 1, T.EXIT_RETRY),
        ("always", 0, 1, T.EXIT_RETRY),
        ("always", 1, 3, T.EXIT_RETRY),
        ("always", 1, 4, T.EXIT_FATAL),
        ("on-failure", -9, 4, T.EXIT_FATAL),
    ],
)
def test_restart_decision(restart, code, failures, trigger) -> None:
    decision = decide_restart(
        restart=restart,
        exit_code=code,
        failures=failures,
        max_restarts=3,
        backoff=BackoffPolicy(jitter=0),
    )
    assert decision.trigger is trigger
    if trigger is T.EXIT_FATAL:
        assert "gave up after 3 restarts" in decision.reason
    if trigger is T.EXIT_RETRY:
        assert decision.delay == 0.5 * 2 ** (failures - 1)


def test_a_run_is_stable_when_it_was_running_at_its_mark() -> None:
    """RunClock gives the answers the per-start stable_secs timer gave (issue 16)."""
    clock = RunClock()
    assert not clock.left(5.0)  # never started, never running
    clock.start(10.0, now=0.0)
    assert not clock.left(0.1)  # left while starting (an exit, a spawn failure): no answer yet
    clock.running(1.0, from_start=False)
    assert not clock.left(9.9)  # ended before its mark
    clock.start(10.0, now=0.0)
    clock.running(1.0, from_start=False)
    assert clock.left(10.0) and not clock.left(30.0)  # running at its mark; one answer per run
    clock.start(10.0, now=0.0)
    clock.running(11.0, from_start=False)  # still starting at its mark (start_secs 11)
    assert not clock.left(30.0)
    clock.start(0.0, now=0.0)  # stable_secs 0 and running from the start: always stable
    clock.running(0.001, from_start=True)
    assert clock.left(0.002)
    clock.start(10.0, now=0.0)  # stopped after its mark: stable too
    clock.running(0.0, from_start=True)
    clock.running(4.0, from_start=False)  # a second commit while running changes nothing
    assert clock.left(15.0)
