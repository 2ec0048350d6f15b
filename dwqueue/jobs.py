"""Download jobs as domain values: identity, state, error class, progress and the job itself.

Everything outside `dwqueue.queue`, `dwqueue.leases` and `dwqueue.rows` sees jobs only as these
frozen values; the store builds them from rows. Pure: no SQLAlchemy, NATS or clock (a new id
takes the time it is given).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import secrets
from typing import NewType

JobId = NewType("JobId", str)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
JOB_ID_LENGTH = 26


def new_job_id(now: dt.datetime) -> JobId:
    """A ULID: 48 bits of milliseconds then 80 random bits, as 26 Crockford base-32 letters.

    Ids sort by creation time, and every letter is a valid NATS subject token character.
    """
    millis = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | secrets.randbits(80)
    letters = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return JobId("".join(letters))


def is_job_id(text: str) -> bool:
    return len(text) == JOB_ID_LENGTH and all(c in _CROCKFORD for c in text)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})


class ErrorClass(enum.StrEnum):
    """Why a job stopped or went back to the queue; decides whether it is retried."""

    TRANSIENT = "transient"  # retried with backoff until max_attempts
    PERMANENT = "permanent"  # never retried automatically (bad name, manifest not found)
    INSUFFICIENT_DISK = "insufficient_disk"  # permanent: retrying only refills the disk
    LEASE_EXPIRED = "lease_expired"  # the worker vanished; the reaper re-queued the job
    CANCELLED = "cancelled"  # a user or the reconciler cancelled it

    @property
    def retryable(self) -> bool:
        return self in (ErrorClass.TRANSIENT, ErrorClass.LEASE_EXPIRED)


@dataclasses.dataclass(frozen=True)
class Progress:
    """The last progress line of a pull, as Ollama reports it (all but status optional)."""

    status: str = ""
    digest: str | None = None
    completed: int | None = None
    total: int | None = None
    rate_bps: float | None = None
    eta_s: float | None = None

    @property
    def percent(self) -> float | None:
        if self.completed is None or not self.total:
            return None
        return round(min(100.0, 100.0 * self.completed / self.total), 2)


@dataclasses.dataclass(frozen=True)
class Job:
    """One download of one model onto one backend, as stored."""

    id: JobId
    backend: str
    model: str
    model_key: str
    declaration: str
    state: JobState
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    progress: Progress
    error: str | None
    error_class: ErrorClass | None
    seq: int
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES
