"""The download events NATS did not take, one per job: the latest, to publish once it is back.

`dwqueue.publisher.Publisher` keeps an event here when it cannot publish it (NATS down or
reconnecting) and publishes the backlog after every (re)connect, so a pull that ended during an
outage still ends for a plain subscriber and in the JetStream replay. Per job only the newest
event is kept (highest ``seq``; subscribers already drop stale ones by ``seq``): a job's
progress during an outage costs one entry, not one per update. Memory is bounded: past
``limit`` jobs, the least recently kept non-terminal event is forgotten (the next progress event
of that job carries newer figures anyway); a terminal event (succeeded, failed, cancelled) is
never forgotten, and there is at most one per job.

Pure: no NATS, no clock, no I/O.
"""

from __future__ import annotations

from dwqueue import events

DEFAULT_LIMIT = 10_000


class Backlog:
    """The latest unpublished event of each job, in the order they were kept."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.forgotten = 0  # non-terminal events evicted by the limit
        self._open: dict[str, events.DownloadEvent] = {}  # non-terminal, least recent first
        self._ended: dict[str, events.DownloadEvent] = {}  # terminal: never evicted

    def keep(self, event: events.DownloadEvent) -> bool:
        """Remember ``event`` unless a newer one of its job is kept already; True if kept."""
        current = self.get(event.job_id)
        if current is not None and current.seq > event.seq:
            return False
        self._open.pop(event.job_id, None)
        self._ended.pop(event.job_id, None)
        (self._ended if event.TERMINAL else self._open)[event.job_id] = event
        while self._open and len(self._open) + len(self._ended) > self.limit:
            del self._open[next(iter(self._open))]
            self.forgotten += 1
        return True

    def sent(self, event: events.DownloadEvent) -> None:
        """``event`` was published: forget its job's kept event if it is not newer."""
        current = self.get(event.job_id)
        if current is not None and current.seq <= event.seq:
            self._open.pop(event.job_id, None)
            self._ended.pop(event.job_id, None)

    def get(self, job_id: str) -> events.DownloadEvent | None:
        return self._ended.get(job_id) or self._open.get(job_id)

    def pop(self) -> events.DownloadEvent | None:
        """Take out the least recently kept event (None when empty): the publisher sends it at
        once, so a newer event of its job published after is also sent after it."""
        first = [next(iter(kept.values())) for kept in (self._open, self._ended) if kept]
        if not first:
            return None
        event = min(first, key=lambda e: (e.at, e.seq))
        self._open.pop(event.job_id, None)
        self._ended.pop(event.job_id, None)
        return event

    def __len__(self) -> int:
        return len(self._open) + len(self._ended)
