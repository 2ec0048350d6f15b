"""Pull progress metering: Ollama's per-blob progress lines into one job's progress.

Called by the download worker for every progress line. Ollama reports each blob separately
(``pulling <digest>`` with that blob's ``completed``/``total``); the job's progress is the sum
over the blobs seen so far, its rate an exponentially weighted average of bytes per second,
and its ETA the bytes left at that rate. A line with a total and no digest (a node agent's pull
reports one running total for the whole snapshot) counts as one blob. Pure: the time comes in
as a number.
"""

from __future__ import annotations

import dataclasses

from dwqueue import jobs


@dataclasses.dataclass
class Meter:
    """Progress of one pull; feed it every line with `update`."""

    smoothing: float = 0.3  # weight of the newest rate sample
    _blobs: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    _last: tuple[float, int] | None = None
    _rate: float | None = None

    def update(
        self, status: str, digest: str | None, completed: int | None, total: int | None, now: float
    ) -> jobs.Progress:
        if total:
            self._blobs[digest or ""] = (min(completed or 0, total), total)
        done = sum(c for c, _ in self._blobs.values())
        size = sum(t for _, t in self._blobs.values())
        self._sample(done, now)
        eta = None
        if self._rate and size:
            eta = round(max(size - done, 0) / self._rate, 1)
        return jobs.Progress(
            status=status,
            digest=digest,
            completed=done if size else None,
            total=size or None,
            rate_bps=None if self._rate is None else round(self._rate, 1),
            eta_s=eta,
        )

    def _sample(self, done: int, now: float) -> None:
        if self._last is None:
            self._last = (now, done)
            return
        then, before = self._last
        elapsed = now - then
        if elapsed < 0.05:  # too close together to measure a rate; keep the older sample
            return
        sample = max(done - before, 0) / elapsed
        self._rate = (
            sample
            if self._rate is None
            else (self.smoothing * sample + (1 - self.smoothing) * self._rate)
        )
        self._last = (now, done)
