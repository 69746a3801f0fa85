"""The lifecycle table and the restart policy, on their own (pure functions)."""

from __future__ import annotations

import random

import pytest

from runyard.daemon.fsm import TRANSITIONS, IllegalTransition, ServiceState, Trigger, next_state
from runyard.daemon.policy import BackoffPolicy, backoff_delay, decide_restart, ran_stable

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


@pytest.mark.parametrize(
    ("running_since", "stable_at", "now", "stable"),
    [
        (None, 10.0, 20.0, False),  # never running (exited while starting, or a spawn failed)
        (1.0, None, 20.0, False),  # no run attached
        (1.0, 10.0, 9.9, False),  # ended before its mark
        (1.0, 10.0, 10.0, True),  # running at its mark
        (1.0, 10.0, 30.0, True),
        (11.0, 10.0, 30.0, False),  # still starting at its mark (start_secs > stable_secs)
    ],
)
def test_a_run_is_stable_when_it_was_running_at_its_mark(running_since, stable_at, now, stable):
    assert ran_stable(running_since, stable_at, now) is stable
