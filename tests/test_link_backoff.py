"""Jittered exponential backoff: pure, so every delay is checked exactly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ion.errors import ConfigError
from node.link.backoff import Backoff, BackoffPolicy


def test_defaults_double_from_half_a_second_to_thirty() -> None:
    policy = BackoffPolicy()
    assert [policy.ceiling(n) for n in range(9)] == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0,
    ]  # fmt: skip


def test_jitter_cuts_at_most_the_jitter_fraction() -> None:
    policy = BackoffPolicy(initial_s=1.0, max_s=10.0, jitter=0.5)
    assert policy.delay(0, 0.0) == 1.0
    assert policy.delay(0, 1.0) == 0.5
    assert policy.delay(3, 0.5) == 6.0


def test_no_jitter_is_deterministic() -> None:
    policy = BackoffPolicy(jitter=0.0)
    assert policy.delay(2, 0.9) == 2.0


def test_multiplier_one_is_a_constant_delay() -> None:
    policy = BackoffPolicy(initial_s=2.0, max_s=2.0, multiplier=1.0, jitter=0.0)
    assert {policy.ceiling(n) for n in range(100)} == {2.0}


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert BackoffPolicy().ceiling(10**9) == 30.0


def test_backoff_counts_attempts_and_resets() -> None:
    values = itertools.cycle([0.0])
    backoff = Backoff(BackoffPolicy(), random=lambda: next(values))
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff.attempts == 4
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.5


def test_backoff_uses_the_injected_random() -> None:
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(BackoffPolicy(jitter=1.0), random=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == [0.5, 0.0, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": -1.0},
        {"initial_s": 5.0, "max_s": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_bad_policies_are_config_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BackoffPolicy(**kwargs)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy().ceiling(-1)
    with pytest.raises(ValueError):
        BackoffPolicy().delay(0, 2.0)


@given(
    initial=st.floats(0.001, 10),
    factor=st.floats(1, 10),
    multiplier=st.floats(1, 4),
    jitter=st.floats(0, 1),
    attempt=st.integers(0, 10_000),
    rand=st.floats(0, 1),
)
def test_delays_stay_within_bounds(
    initial: float, factor: float, multiplier: float, jitter: float, attempt: int, rand: float
) -> None:
    policy = BackoffPolicy(initial, initial * factor, multiplier, jitter)
    ceiling = policy.ceiling(attempt)
    assert initial <= ceiling <= initial * factor + 1e-9
    delay = policy.delay(attempt, rand)
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
    assert policy.ceiling(attempt) <= policy.ceiling(attempt + 1) + 1e-9
