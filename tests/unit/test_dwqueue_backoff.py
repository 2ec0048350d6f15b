"""Retry delays: properties that hold for every policy, attempt and random draw."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwqueue import backoff

policies = st.builds(
    lambda base, factor, attempts, jitter: backoff.Policy(base, base * factor, attempts, jitter),
    st.floats(0.01, 100),
    st.floats(1, 1000),
    st.integers(1, 20),
    st.sampled_from(list(backoff.Jitter)),
)
attempts = st.integers(1, 10_000)
draws = st.floats(0, 1, exclude_max=True)


@given(policies, attempts, draws)
def test_a_delay_is_never_negative_nor_above_the_cap(
    policy: backoff.Policy, attempt: int, draw: float
) -> None:
    assert 0 <= backoff.delay(policy, attempt, draw) <= policy.cap_s


@given(policies, attempts, draws)
def test_full_jitter_stays_below_the_exponential(
    policy: backoff.Policy, attempt: int, draw: float
) -> None:
    full = backoff.Policy(policy.base_s, policy.cap_s, policy.max_attempts, backoff.Jitter.FULL)
    assert backoff.delay(full, attempt, draw) <= backoff.exponential(full, attempt)


@given(policies, attempts, draws, st.floats(0, 10_000))
def test_decorrelated_jitter_waits_at_least_the_base(
    policy: backoff.Policy, attempt: int, draw: float, previous: float
) -> None:
    p = backoff.Policy(
        policy.base_s, policy.cap_s, policy.max_attempts, backoff.Jitter.DECORRELATED
    )
    assert backoff.delay(p, attempt, draw, previous) >= p.base_s


@given(policies, st.integers(1, 200))
def test_the_unjittered_delay_never_shrinks_as_attempts_grow(
    policy: backoff.Policy, attempt: int
) -> None:
    assert backoff.exponential(policy, attempt + 1) >= backoff.exponential(policy, attempt)


@given(st.integers(0, 50), st.integers(1, 50))
def test_retries_stop_exactly_at_max_attempts(made: int, max_attempts: int) -> None:
    assert backoff.should_retry(made, max_attempts) == (made < max_attempts)


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 5.0), (2, 10.0), (3, 20.0), (7, 320.0), (8, 600.0), (99, 600.0)]
)
def test_the_exponential_doubles_from_the_base_up_to_the_cap(attempt: int, expected: float) -> None:
    policy = backoff.Policy(base_s=5, cap_s=600, jitter=backoff.Jitter.NONE)
    assert backoff.delay(policy, attempt, 0.5) == expected


def test_full_jitter_scales_the_exponential_by_the_draw() -> None:
    policy = backoff.Policy(base_s=5, cap_s=600, jitter=backoff.Jitter.FULL)
    assert backoff.delay(policy, 3, 0.25) == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_s": 0}, "base_s"),
        ({"base_s": 10, "cap_s": 5}, "cap_s"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_a_policy_refuses_impossible_settings(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff.Policy(**kwargs)  # type: ignore[arg-type]


def test_a_draw_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="draw"):
        backoff.delay(backoff.Policy(), 1, 1.0)
