"""Download events: frozen, past-tense types, their JSON wire format and their NATS subjects.

The store functions of `dwqueue.queue` and `dwqueue.leases` build one event per lifecycle step
(with the job's sequence number) and hand it back; the caller publishes it with
`dwqueue.publisher` after the commit, and `dwqueue.subscriber` (``llmctl watch``, any app) reads
it back with `from_wire`. Pure: no NATS, no database, no clock (the time is a parameter).

Wire format, version 1: one JSON object with ``"v": 1``, ``"type"`` (``queued``, ``started``,
``progress``, ``retrying``, ``succeeded``, ``failed``, ``cancelled``) and every field of
`DownloadEvent`; timestamps are ISO 8601 in UTC. Readers ignore fields they do not know, so
adding a field is not a new version. Subjects: ``<prefix>.v1.downloads.<backend>.<job_id>``;
model names never appear in a subject.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any, ClassVar

from dwqueue import jobs

WIRE_VERSION = 1
DEFAULT_PREFIX = "llmctl"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


class WireError(ValueError):
    """Bytes that are not a download event this version of llmctl can read."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadEvent:
    """Fields every download event carries; ``seq`` grows by one per event of the job."""

    TYPE: ClassVar[str] = ""
    TERMINAL: ClassVar[bool] = False

    job_id: jobs.JobId
    backend: str
    model: str
    status: str = ""
    digest: str | None = None
    completed: int | None = None
    total: int | None = None
    percent: float | None = None
    rate_bps: float | None = None
    eta_s: float | None = None
    attempt: int = 0
    max_attempts: int = 0
    error: str | None = None
    error_class: str | None = None
    retry_at: dt.datetime | None = None
    seq: int
    at: dt.datetime

    def to_wire(self) -> bytes:
        body: dict[str, Any] = {"v": WIRE_VERSION, "type": self.TYPE}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            body[field.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return json.dumps(body, separators=(",", ":")).encode()

    def subject(self, prefix: str = DEFAULT_PREFIX) -> str:
        return subject(prefix, self.backend, self.job_id)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadQueued(DownloadEvent):
    TYPE: ClassVar[str] = "queued"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadStarted(DownloadEvent):
    TYPE: ClassVar[str] = "started"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadProgressed(DownloadEvent):
    TYPE: ClassVar[str] = "progress"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadRetrying(DownloadEvent):
    TYPE: ClassVar[str] = "retrying"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadSucceeded(DownloadEvent):
    TYPE: ClassVar[str] = "succeeded"
    TERMINAL: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadFailed(DownloadEvent):
    TYPE: ClassVar[str] = "failed"
    TERMINAL: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadCancelled(DownloadEvent):
    TYPE: ClassVar[str] = "cancelled"
    TERMINAL: ClassVar[bool] = True


EVENT_TYPES: dict[str, type[DownloadEvent]] = {
    cls.TYPE: cls
    for cls in (
        DownloadQueued,
        DownloadStarted,
        DownloadProgressed,
        DownloadRetrying,
        DownloadSucceeded,
        DownloadFailed,
        DownloadCancelled,
    )
}

_DATETIMES = frozenset({"at", "retry_at"})
_INTS = frozenset({"completed", "total", "attempt", "max_attempts", "seq"})
_FLOATS = frozenset({"percent", "rate_bps", "eta_s"})


def from_wire(data: bytes) -> DownloadEvent:
    """Decodes `DownloadEvent.to_wire` output; raises `WireError` for anything else."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise WireError("not a JSON object")
    if body.get("v") != WIRE_VERSION:
        raise WireError(f"unsupported wire version {body.get('v')!r}")
    cls = EVENT_TYPES.get(body.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise WireError(f"unknown event type {body.get('type')!r}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in body:
            values[field.name] = _field(field.name, body[field.name])
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise WireError(str(exc)) from exc


def _field(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if name in _DATETIMES:
            parsed = dt.datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
        if name in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"expected an integer, got {value!r}")
            return value
        if name in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"expected a number, got {value!r}")
            return float(value)
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
    except (TypeError, ValueError) as exc:
        raise WireError(f"field {name!r}: {exc}") from exc
    return jobs.JobId(value) if name == "job_id" else value


def of(cls: type[DownloadEvent], job: jobs.Job, at: dt.datetime) -> DownloadEvent:
    """The event ``cls`` describing ``job`` as it is now (its ``seq`` included)."""
    progress = job.progress
    return cls(
        job_id=job.id,
        backend=job.backend,
        model=job.model,
        status=progress.status,
        digest=progress.digest,
        completed=progress.completed,
        total=progress.total,
        percent=progress.percent,
        rate_bps=progress.rate_bps,
        eta_s=progress.eta_s,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        error=job.error,
        error_class=None if job.error_class is None else job.error_class.value,
        retry_at=job.next_attempt_at if cls is DownloadRetrying else None,
        seq=job.seq,
        at=at,
    )


def check_prefix(prefix: str) -> str:
    """Returns ``prefix`` if it is one or more dot-separated subject tokens; else ValueError."""
    if not all(_TOKEN.match(token) for token in prefix.split(".")):
        raise ValueError(f"subject prefix {prefix!r} must be dot-separated [A-Za-z0-9_-] tokens")
    return prefix


def _token(kind: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{kind} {value!r} cannot be a NATS subject token")
    return value


def subject(prefix: str, backend: str, job_id: str) -> str:
    """``<prefix>.v1.downloads.<backend>.<job_id>``; ValueError for an unusable token."""
    return f"{downloads_root(prefix)}.{_token('backend', backend)}.{_token('job id', job_id)}"


def downloads_root(prefix: str) -> str:
    return f"{check_prefix(prefix)}.v{WIRE_VERSION}.downloads"


def filter_subject(prefix: str, backend: str | None = None, job_id: str | None = None) -> str:
    """The subject filter for every job, one backend's jobs, or one job."""
    backend_token = "*" if backend is None else _token("backend", backend)
    job_token = "*" if job_id is None else _token("job id", job_id)
    return f"{downloads_root(prefix)}.{backend_token}.{job_token}"


def stream_name(prefix: str) -> str:
    """The JetStream stream holding the latest event per job: ``LLMCTL_DOWNLOADS``."""
    return check_prefix(prefix).replace(".", "_").replace("-", "_").upper() + "_DOWNLOADS"
