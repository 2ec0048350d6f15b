"""The backlog of unsent download events: the latest per job, bounded, ends never forgotten."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwqueue import backlog, events

AT = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _event(
    cls: type[events.DownloadEvent], job: str, seq: int, second: int = 0
) -> events.DownloadEvent:
    at = AT + dt.timedelta(seconds=second)
    return cls(job_id=job, backend="b", model="m", seq=seq, at=at)  # type: ignore[arg-type]


def _drain(kept: backlog.Backlog) -> list[tuple[str, str, int]]:
    out = []
    while (event := kept.pop()) is not None:
        out.append((event.job_id, event.TYPE, event.seq))
    return out


def test_the_latest_event_of_a_job_wins_and_a_stale_one_is_ignored() -> None:
    kept = backlog.Backlog()
    assert kept.keep(_event(events.DownloadProgressed, "J1", 3))
    assert kept.keep(_event(events.DownloadSucceeded, "J1", 5))
    assert not kept.keep(_event(events.DownloadProgressed, "J1", 4))  # arrived late: stale
    assert _drain(kept) == [("J1", "succeeded", 5)]
    assert len(kept) == 0


def test_a_job_queued_again_after_its_end_keeps_its_newer_event() -> None:
    kept = backlog.Backlog()
    kept.keep(_event(events.DownloadFailed, "J1", 5))
    kept.keep(_event(events.DownloadQueued, "J1", 6))  # `downloads retry`: same id, next seq
    assert _drain(kept) == [("J1", "queued", 6)]


def test_past_the_limit_the_oldest_progress_is_forgotten_and_no_end_ever_is() -> None:
    kept = backlog.Backlog(limit=2)
    kept.keep(_event(events.DownloadSucceeded, "J1", 9, second=1))
    kept.keep(_event(events.DownloadProgressed, "J2", 4, second=2))
    kept.keep(_event(events.DownloadProgressed, "J3", 4, second=3))
    kept.keep(_event(events.DownloadCancelled, "J4", 2, second=4))
    kept.keep(_event(events.DownloadFailed, "J5", 7, second=5))
    assert kept.forgotten == 2
    assert _drain(kept) == [("J1", "succeeded", 9), ("J4", "cancelled", 2), ("J5", "failed", 7)]


def test_an_event_published_later_supersedes_the_kept_one_of_its_job() -> None:
    kept = backlog.Backlog()
    kept.keep(_event(events.DownloadProgressed, "J1", 3))
    kept.keep(_event(events.DownloadProgressed, "J2", 3))
    kept.sent(_event(events.DownloadProgressed, "J1", 2))  # older than the kept one: no effect
    kept.sent(_event(events.DownloadSucceeded, "J2", 4))
    assert _drain(kept) == [("J1", "progress", 3)]


def test_kept_events_come_out_oldest_first() -> None:
    kept = backlog.Backlog()
    kept.keep(_event(events.DownloadProgressed, "J1", 3, second=1))
    kept.keep(_event(events.DownloadSucceeded, "J2", 8, second=2))
    kept.keep(_event(events.DownloadProgressed, "J3", 3, second=3))
    kept.keep(_event(events.DownloadProgressed, "J1", 4, second=4))
    assert [job for job, _, _ in _drain(kept)] == ["J2", "J3", "J1"]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        backlog.Backlog(limit=0)


@given(st.lists(st.tuples(st.sampled_from(["J1", "J2", "J3", "J4"]), st.booleans()), max_size=60))
def test_every_job_keeps_only_its_latest_event_and_an_end_is_never_forgotten(
    changes: list[tuple[str, bool]],
) -> None:
    kept = backlog.Backlog(limit=2)
    last: dict[str, tuple[int, bool]] = {}
    for second, (job, terminal) in enumerate(changes):
        seq = last.get(job, (0, False))[0] + 1  # a job's events come in its seq order
        cls = events.DownloadSucceeded if terminal else events.DownloadProgressed
        kept.keep(_event(cls, job, seq, second))
        last[job] = (seq, terminal)
    drained = _drain(kept)
    assert len(drained) <= max(2, sum(ended for _, ended in last.values()))
    assert all(seq == last[job][0] for job, _, seq in drained)
    assert {job for job, (_, ended) in last.items() if ended} <= {job for job, _, _ in drained}
