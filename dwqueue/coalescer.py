"""Which progress updates of a pull become an event: at most a few per second per job.

The download worker asks `Coalescer.admit` for every progress line Ollama streams and records
(`dwqueue.leases.record_progress`) and publishes only the admitted ones, so the database write
rate and the NATS event rate are both bounded. `Publisher` can apply one too, as a guard. A
phase change (the Ollama status text changes: ``pulling manifest`` → ``pulling <digest>`` →
``verifying sha256 digest`` → ``writing manifest`` → ``success``) and every non-progress event
(started, retrying, terminal) are always admitted.

Pure: the time is a parameter (seconds on any monotonic clock); no I/O, no clock reads.
"""

from __future__ import annotations

import dataclasses

from dwqueue import events

DEFAULT_PER_SECOND = 4.0
_MAX_TRACKED = 10_000  # jobs whose last admission is remembered; the oldest is forgotten first


@dataclasses.dataclass(frozen=True)
class _Last:
    at: float
    status: str


class Coalescer:
    """Remembers, per job, when a progress event was last admitted and in which phase."""

    def __init__(self, per_second: float = DEFAULT_PER_SECOND) -> None:
        if per_second <= 0:
            raise ValueError(f"per_second must be positive, got {per_second}")
        self.interval = 1.0 / per_second
        self._last: dict[str, _Last] = {}

    def admit(self, job_id: str, status: str, now: float) -> bool:
        """Whether a progress update of ``job_id`` in phase ``status`` at ``now`` is sent.

        True for the job's first update, for a new phase, and once ``interval`` has passed since
        the last admitted one; an admitted update restarts the interval.
        """
        last = self._last.get(job_id)
        if last is not None and last.status == status and now - last.at < self.interval:
            return False
        self._remember(job_id, _Last(now, status))
        return True

    def admit_event(self, event: events.DownloadEvent, now: float) -> bool:
        """`admit` for progress events; every other event is admitted (and a terminal one
        forgets the job)."""
        if isinstance(event, events.DownloadProgressed):
            return self.admit(event.job_id, event.status, now)
        if event.TERMINAL:
            self.forget(event.job_id)
        else:
            self._remember(event.job_id, _Last(now, event.status))
        return True

    def forget(self, job_id: str) -> None:
        self._last.pop(job_id, None)

    def _remember(self, job_id: str, last: _Last) -> None:
        self._last.pop(job_id, None)  # re-insert so the dict's order is least recent first
        self._last[job_id] = last
        if len(self._last) > _MAX_TRACKED:
            del self._last[next(iter(self._last))]

    def __len__(self) -> int:
        return len(self._last)
