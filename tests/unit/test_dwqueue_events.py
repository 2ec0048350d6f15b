"""Download events: wire round trips, the version and type checks, and subject rules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwqueue import events, jobs

AT = dt.datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
JOB = jobs.new_job_id(AT)


def _event(
    cls: type[events.DownloadEvent] = events.DownloadProgressed, **kw: object
) -> events.DownloadEvent:
    values: dict[str, object] = {
        "job_id": JOB,
        "backend": "gpu-1",
        "model": "llama3:8b",
        "status": "pulling sha256:ab",
        "digest": "sha256:ab",
        "completed": 10,
        "total": 40,
        "percent": 25.0,
        "rate_bps": 1.5e6,
        "eta_s": 20.0,
        "attempt": 1,
        "max_attempts": 5,
        "seq": 3,
        "at": AT,
    }
    values.update(kw)
    return cls(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", list(events.EVENT_TYPES.values()))
def test_every_event_type_survives_the_wire_unchanged(cls: type[events.DownloadEvent]) -> None:
    event = _event(cls, error="boom", error_class="transient", retry_at=AT)
    decoded = events.from_wire(event.to_wire())
    assert decoded == event
    assert type(decoded) is cls


def test_the_wire_format_names_the_type_and_version_explicitly() -> None:
    body = json.loads(_event(events.DownloadSucceeded).to_wire())
    assert (body["v"], body["type"]) == (1, "succeeded")
    assert body["at"] == "2030-01-01T12:00:00.123456+00:00"
    assert body["job_id"] == JOB
    assert body["retry_at"] is None


@given(
    st.integers(0, 2**62),
    st.integers(1, 2**62),
    st.text(max_size=50),
    st.one_of(st.none(), st.text(max_size=50)),
)
def test_any_progress_round_trips(
    completed: int, total: int, status: str, error: str | None
) -> None:
    event = _event(completed=completed, total=total, status=status, error=error)
    assert events.from_wire(event.to_wire()) == event


def test_unknown_fields_are_ignored_so_adding_one_is_not_a_new_version() -> None:
    body = json.loads(_event().to_wire())
    body["new_field"] = 1
    assert events.from_wire(json.dumps(body).encode()) == _event()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2, "type": "progress"}', "version"),
        (b'{"v": 1, "type": "exploded"}', "unknown event type"),
        (b'{"v": 1, "type": "queued", "backend": "b"}', "missing"),
        (
            b'{"v": 1, "type": "queued", "job_id": "x", "backend": "b", "model": "m", "seq": "1",'
            b' "at": "2030-01-01T00:00:00+00:00"}',
            "seq",
        ),
        (
            b'{"v": 1, "type": "queued", "job_id": "x", "backend": "b", "model": "m", "seq": 1,'
            b' "at": "yesterday"}',
            "at",
        ),
    ],
)
def test_bytes_that_are_not_an_event_raise_a_wire_error(data: bytes, message: str) -> None:
    with pytest.raises(events.WireError, match=message):
        events.from_wire(data)


def test_the_subject_names_backend_and_job_but_never_the_model() -> None:
    event = _event(model="library/llama3:8b")
    assert event.subject("llmctl") == f"llmctl.v1.downloads.gpu-1.{JOB}"
    assert "llama3" not in event.subject("acme.llmctl")
    assert event.subject("acme.llmctl").startswith("acme.llmctl.v1.downloads.")


@pytest.mark.parametrize("backend", ["gpu.1", "gpu*", ">", "gpu 1", ""])
def test_a_backend_that_is_not_one_subject_token_is_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="subject token"):
        events.subject("llmctl", backend, JOB)


@pytest.mark.parametrize("prefix", ["", "a..b", "a.*", "llm ctl"])
def test_a_prefix_must_be_dot_separated_tokens(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        events.stream_name(prefix)


def test_filters_and_stream_names_follow_the_prefix() -> None:
    assert events.filter_subject("llmctl") == "llmctl.v1.downloads.*.*"
    assert events.filter_subject("llmctl", backend="gpu-1") == "llmctl.v1.downloads.gpu-1.*"
    assert events.filter_subject("llmctl", job_id=JOB) == f"llmctl.v1.downloads.*.{JOB}"
    assert events.stream_name("llmctl") == "LLMCTL_DOWNLOADS"
    assert events.stream_name("acme.llm-ctl") == "ACME_LLM_CTL_DOWNLOADS"


def test_an_event_built_from_a_job_carries_its_progress_attempt_and_sequence() -> None:
    job = jobs.Job(
        id=JOB,
        backend="gpu-1",
        model="llama3",
        model_key="library/llama3:latest",
        declaration="",
        state=jobs.JobState.QUEUED,
        attempts=2,
        max_attempts=5,
        next_attempt_at=AT,
        lease_owner=None,
        lease_expires_at=None,
        progress=jobs.Progress("pulling x", "sha256:x", 30, 120, 2e6, 45.0),
        error="reset",
        error_class=jobs.ErrorClass.TRANSIENT,
        seq=9,
        created_at=AT,
        updated_at=AT,
        started_at=None,
        finished_at=None,
    )
    event = events.of(events.DownloadRetrying, job, AT)
    assert (event.percent, event.attempt, event.seq, event.retry_at) == (25.0, 2, 9, AT)
    assert event.error_class == "transient"
    started = events.of(events.DownloadStarted, dataclasses.replace(job, error_class=None), AT)
    assert (started.retry_at, started.error_class) == (None, None)


def test_job_ids_sort_by_time_and_are_subject_tokens() -> None:
    earlier = jobs.new_job_id(AT)
    later = jobs.new_job_id(AT + dt.timedelta(milliseconds=1))
    assert earlier < later
    assert jobs.is_job_id(earlier)
    assert events.subject("llmctl", "b", earlier).endswith(earlier)
    assert not jobs.is_job_id("not-an-id")


@pytest.mark.parametrize(
    ("completed", "total", "percent"),
    [(None, 10, None), (5, None, None), (5, 0, None), (1, 3, 33.33), (9, 3, 100.0)],
)
def test_percent_is_known_only_when_the_total_is(
    completed: int | None, total: int | None, percent: float | None
) -> None:
    assert jobs.Progress("s", completed=completed, total=total).percent == percent
