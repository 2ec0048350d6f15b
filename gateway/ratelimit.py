"""Per-minute limits that hold across gateway replicas: a sliding window of counts per limit,
this replica's own plus the latest counts each other replica shared.

Called by the gateway: `Limiter.admit` per request (requests per minute), `Limiter.check` and
`Limiter.record` around it for tokens per minute (a request's tokens are known only after
it), `Limiter.report` every ~100 ms to share this replica's counts (through NATS or
Postgres: the wiring is the caller's) and `Limiter.merge` for each report received. Pure: the
time is given (seconds since the epoch, so that every replica numbers buckets alike), no I/O.

Why it over-admits by at most ~5 % at two replicas: a replica admits while its own count plus
the others' last shared counts stay under the limit, so the only requests it cannot see are
those the others admitted since their last report (one sharing interval, plus delivery). At
600 per minute driven at 1,200 across two replicas that is about one request per 100 ms
interval, and the bucket a request falls in leaves the window at most one bucket early
(``bucket_s`` times the rate). A report is a replica's whole window, not an increment, so a lost
or repeated message changes nothing once the next one arrives.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

Counts = Mapping[int, int]  # bucket number -> amount counted in it
Report = Mapping[str, Counts]  # limit id -> counts of the window


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Admitted, or not with how long until the window frees enough (``Retry-After``)."""

    admitted: bool
    retry_after_s: float = 0.0
    used: int = 0


class Limiter:
    """Sliding-window counters per limit id (such as ``7:rpm``), shared between replicas."""

    def __init__(self, *, window_s: float = 60.0, bucket_s: float = 0.5) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError("the window must hold at least one bucket of positive length")
        self.bucket_s = bucket_s
        self.buckets = math.ceil(window_s / bucket_s)
        self._local: dict[str, dict[int, int]] = {}
        self._remote: dict[str, Report] = {}  # replica -> its last report

    def _bucket(self, now: float) -> int:
        return math.floor(now / self.bucket_s)

    def _oldest(self, now: float) -> int:
        return self._bucket(now) - self.buckets + 1

    def _combined(self, limit_id: str, now: float) -> dict[int, int]:
        oldest = self._oldest(now)
        combined: dict[int, int] = {}
        for counts in (
            self._local.get(limit_id, {}),
            *(r.get(limit_id, {}) for r in self._remote.values()),
        ):
            for bucket, amount in counts.items():
                if bucket >= oldest:
                    combined[bucket] = combined.get(bucket, 0) + amount
        return combined

    def used(self, limit_id: str, now: float) -> int:
        """What every replica counted for ``limit_id`` in the window ending ``now``."""
        return sum(self._combined(limit_id, now).values())

    def record(self, limit_id: str, now: float, amount: int = 1) -> None:
        """Count ``amount`` (a request, or its tokens) against ``limit_id`` at ``now``."""
        if amount <= 0:
            return
        counts = self._local.setdefault(limit_id, {})
        bucket = self._bucket(now)
        counts[bucket] = counts.get(bucket, 0) + amount

    def check(self, limit_id: str, limit: int, now: float, amount: int = 0) -> Decision:
        """Whether ``amount`` more fits under ``limit`` (with ``amount`` 0: whether anything
        is left, as for tokens, counted later); records nothing."""
        combined = self._combined(limit_id, now)
        used = sum(combined.values())
        need = used + amount - limit if amount else used - limit + 1
        if need <= 0:
            return Decision(True, 0.0, used)
        return Decision(False, self._retry_after(combined, need, now), used)

    def admit(self, limit_id: str, limit: int, now: float, amount: int = 1) -> Decision:
        """`check` for ``amount`` (one request), recording it when admitted."""
        decision = self.check(limit_id, limit, now, amount)
        if decision.admitted:
            self.record(limit_id, now, amount)
        return decision

    def _retry_after(self, combined: Mapping[int, int], need: int, now: float) -> float:
        """Seconds until buckets holding at least ``need`` have left the window."""
        freed = 0
        for bucket in sorted(combined):
            freed += combined[bucket]
            if freed >= need:
                return max(0.0, (bucket + self.buckets) * self.bucket_s - now)
        return self.buckets * self.bucket_s  # cannot happen while need <= used

    def report(self, now: float) -> dict[str, dict[int, int]]:
        """This replica's counts in the window, per limit id, to share; prunes older ones."""
        oldest = self._oldest(now)
        for limit_id in list(self._local):
            counts = {b: n for b, n in self._local[limit_id].items() if b >= oldest}
            if counts:
                self._local[limit_id] = counts
            else:
                del self._local[limit_id]
        return {limit_id: dict(counts) for limit_id, counts in self._local.items()}

    def merge(self, replica: str, report: Report, now: float) -> None:
        """Take ``replica``'s latest `report` in place of its previous one (never add them)."""
        oldest = self._oldest(now)
        self._remote[replica] = {
            limit_id: {b: n for b, n in counts.items() if b >= oldest}
            for limit_id, counts in report.items()
        }
