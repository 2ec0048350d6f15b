"""The coalescer: a few progress events per second per job; phase changes and ends always."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwqueue import coalescer, events

AT = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _event(
    cls: type[events.DownloadEvent], status: str = "pulling a", job: str = "J1"
) -> events.DownloadEvent:
    return cls(job_id=job, backend="b", model="m", status=status, seq=1, at=AT)  # type: ignore[arg-type]


def test_updates_within_the_interval_are_held_back() -> None:
    c = coalescer.Coalescer(per_second=4)
    admitted = [t for t in (0.0, 0.1, 0.2, 0.25, 0.3, 0.49, 0.5) if c.admit("J1", "pulling a", t)]
    assert admitted == [0.0, 0.25, 0.5]


def test_a_new_phase_is_admitted_at_once() -> None:
    c = coalescer.Coalescer(per_second=4)
    assert c.admit("J1", "pulling a", 0.0)
    assert c.admit("J1", "pulling b", 0.01)
    assert c.admit("J1", "verifying sha256 digest", 0.02)
    assert not c.admit("J1", "verifying sha256 digest", 0.03)


def test_jobs_are_coalesced_independently() -> None:
    c = coalescer.Coalescer(per_second=4)
    assert c.admit("J1", "pulling a", 0.0)
    assert c.admit("J2", "pulling a", 0.01)
    assert not c.admit("J1", "pulling a", 0.02)


@pytest.mark.parametrize(
    "cls",
    [
        events.DownloadStarted,
        events.DownloadRetrying,
        events.DownloadSucceeded,
        events.DownloadFailed,
        events.DownloadCancelled,
    ],
)
def test_lifecycle_events_are_always_admitted(cls: type[events.DownloadEvent]) -> None:
    c = coalescer.Coalescer(per_second=1)
    assert c.admit_event(_event(events.DownloadProgressed), 0.0)
    assert c.admit_event(_event(cls), 0.001)


def test_a_terminal_event_forgets_the_job() -> None:
    c = coalescer.Coalescer()
    c.admit_event(_event(events.DownloadProgressed), 0.0)
    assert len(c) == 1
    c.admit_event(_event(events.DownloadSucceeded), 0.01)
    assert len(c) == 0


@given(st.lists(st.floats(0, 10, allow_nan=False), max_size=300), st.floats(0.5, 20))
def test_never_more_than_the_rate_allows_in_one_phase(
    times: list[float], per_second: float
) -> None:
    c = coalescer.Coalescer(per_second)
    admitted = [t for t in sorted(times) if c.admit("J", "pulling a", t)]
    assert all(b - a >= c.interval for a, b in itertools.pairwise(admitted))
    assert len(admitted) <= 10 * per_second + 1
    if times:
        assert admitted[0] == min(times)


def test_a_rate_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        coalescer.Coalescer(0)
