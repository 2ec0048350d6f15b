"""What another resolver process says, applied to this one's `cooldown.Tracker`: its openings
(as durations), its closings and its figures."""

from __future__ import annotations

import pytest

from runtimestate.resolver import cooldown

KEY = "gpu-1/m:1b"


def _tracker() -> cooldown.Tracker:
    return cooldown.Tracker(cooldown.Policy(cooldown_s=30.0, max_cooldown_s=300.0))


def test_a_remote_opening_blocks_the_provider_for_the_remaining_time_on_this_clock() -> None:
    t = _tracker()
    assert t.open_for(KEY, now=500.0, remaining_s=12.0, cooldown_s=30.0)
    assert t.gate(KEY, 511.9) is cooldown.Gate.OPEN
    assert t.gate(KEY, 512.0) is cooldown.Gate.TRIAL_DUE
    assert t.breaker(KEY, 502.0) == (10.0, 30.0)


def test_a_remote_opening_shorter_than_the_local_one_changes_nothing() -> None:
    t = _tracker()
    for _ in range(3):
        t.record(KEY, False, 0.1, now=100.0)  # open here until 130
    assert not t.open_for(KEY, now=110.0, remaining_s=5.0, cooldown_s=30.0)
    assert t.opened_until(KEY) == 130.0
    assert t.open_for(KEY, now=110.0, remaining_s=50.0, cooldown_s=60.0)
    assert t.opened_until(KEY) == 160.0


def test_a_remote_opening_is_capped_at_the_longest_cooldown() -> None:
    t = _tracker()
    t.open_for(KEY, now=0.0, remaining_s=1e9, cooldown_s=1e9)
    assert t.breaker(KEY, 0.0) == (300.0, 300.0)


def test_a_failed_trial_after_a_remote_opening_doubles_the_remote_cooldown() -> None:
    t = _tracker()
    t.open_for(KEY, now=0.0, remaining_s=10.0, cooldown_s=60.0)
    token = t.start_trial(KEY, 10.0)
    t.record(KEY, False, 0.1, 11.0, token)
    assert t.breaker(KEY, 11.0) == (120.0, 120.0)


def test_a_remote_closing_unblocks_and_forgets_the_recent_failures() -> None:
    t = _tracker()
    for _ in range(3):
        t.record(KEY, False, 0.1, now=100.0)
    assert t.penalty
    assert t.close(KEY)
    assert t.gate(KEY, 101.0) is cooldown.Gate.CLOSED
    assert t.penalty == {}
    assert not t.close(KEY)  # closed already: nothing to do


@pytest.mark.parametrize(
    ("latency", "errors", "penalty", "latencies"),
    [
        (0.4, 0.3, {KEY: 0.3}, {KEY: 0.4}),
        (None, 0.005, {}, {}),  # a negligible error rate and no success: nothing to rank by
    ],
)
def test_adopted_figures_replace_the_local_ones(
    latency: float | None,
    errors: float,
    penalty: dict[str, float],
    latencies: dict[str, float],
) -> None:
    t = _tracker()
    t.record(KEY, True, 2.0, now=1.0)
    t.record(KEY, False, 0.1, now=2.0)
    t.adopt(KEY, cooldown.Figures(latency, errors, 9, 5.0))
    assert (t.penalty, t.latency) == (penalty, latencies)
    assert t.figures_of(KEY) == cooldown.Figures(latency, errors, 9, 5.0)
    assert t.gate(KEY, 5.0) is cooldown.Gate.CLOSED  # figures never move the breaker
