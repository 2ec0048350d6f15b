"""The rate limit of triggered cycles (`controller.throttle`): one start per window."""

from __future__ import annotations

import pytest

from controller import throttle


@pytest.mark.parametrize(
    ("last_start", "now", "wait_s"),
    [
        (None, 5.0, 0.0),  # nothing ran yet: at once
        (10.0, 10.0, 1.0),  # just started: the whole window
        (10.0, 10.25, 0.75),  # inside the window: until its end
        (10.0, 11.0, 0.0),  # the window is over
        (10.0, 30.0, 0.0),  # long after
    ],
)
def test_a_cycle_waits_for_the_end_of_the_window_the_last_start_opened(
    last_start: float | None, now: float, wait_s: float
) -> None:
    window = throttle.Throttle(1.0, last_start)
    assert window.wait_s(now) == pytest.approx(wait_s)


def test_starting_a_cycle_opens_a_new_window() -> None:
    window = throttle.Throttle(2.0)
    window.started(100.0)
    assert window.wait_s(101.5) == pytest.approx(0.5)
    window.started(102.0)
    assert window.wait_s(102.0) == pytest.approx(2.0)


def test_a_zero_interval_never_waits() -> None:
    window = throttle.Throttle(0.0, last_start=7.0)
    assert window.wait_s(7.0) == 0.0
