"""Per-backend probe bookkeeping: backoff after failures, the grace period, and the phase.

Called by the backend cycle once per backend per cycle. Pure: the clock and the random source
come in as parameters. A backend that fails keeps its last good observation for a grace period
as `Degraded`, then becomes `Unreachable`; probing backs off exponentially with jitter, capped,
and only a success resets it. One hung backend therefore costs one timeout per backoff step,
never every cycle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from typing import Generic, TypeVar

from runtimestate import snapshot

Obs = TypeVar("Obs")  # the observation type; opaque here


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    """How probing backs off and how long a failing backend keeps its last good state."""

    grace: dt.timedelta = dt.timedelta(minutes=2)
    base_delay: dt.timedelta = dt.timedelta(seconds=5)
    max_delay: dt.timedelta = dt.timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)  # no slots: they break Generic on Python 3.11
class Record(Generic[Obs]):
    """What the cycle remembers about one backend between cycles."""

    failures: int = 0
    last_ok_at: dt.datetime | None = None
    # When the current failures began (or, for a `resumed` record, the last success).
    first_failure_at: dt.datetime | None = None
    last_good: Obs | None = None
    last_error: str | None = None
    last_reason: str | None = None
    next_probe_at: dt.datetime | None = None

    def due(self, now: dt.datetime) -> bool:
        """Whether the backend should be probed this cycle."""
        return self.next_probe_at is None or now >= self.next_probe_at

    def phase(self, now: dt.datetime, policy: Policy) -> snapshot.Phase:
        if self.failures == 0:
            return snapshot.Phase.READY if self.last_ok_at is not None else snapshot.Phase.UNKNOWN
        if self.last_good is None or self.first_failure_at is None:
            return snapshot.Phase.UNREACHABLE
        return (
            snapshot.Phase.DEGRADED
            if now - self.first_failure_at < policy.grace
            else snapshot.Phase.UNREACHABLE
        )

    def usable(self, now: dt.datetime, policy: Policy) -> Obs | None:
        """The observation to plan with: the fresh one, or the last good one within grace."""
        phase = self.phase(now, policy)
        return self.last_good if phase in (snapshot.Phase.READY, snapshot.Phase.DEGRADED) else None


def succeeded(record: Record[Obs], observation: Obs, now: dt.datetime) -> Record[Obs]:
    """A probe answered: reset the backoff and keep the observation as the last good one."""
    return Record(last_ok_at=now, last_good=observation)


def resumed(
    last_ok_at: dt.datetime | None,
    last_good: Obs | None,
    failing: bool,
    error: str | None = None,
    reason: str | None = None,
) -> Record[Obs]:
    """A record rebuilt by a new process from the persisted status (``serve`` restarted, or
    ``reconcile --once`` under cron), so grace and backoff outlive the process.

    When the failures began is not persisted; it is taken to be the last success, the
    earliest it can have been, so a failing backend is `Degraded` with ``last_good`` only
    while ``last_ok_at`` is within the grace period, never longer than in the process that
    wrote the status. The backend is probed at once; a failing one resumes its backoff from
    one failure.
    """
    if last_ok_at is None:
        last_good = None
    return Record(
        failures=1 if failing else 0,
        last_ok_at=last_ok_at,
        first_failure_at=last_ok_at if last_good is not None else None,
        last_good=last_good,
        last_error=error if failing else None,
        last_reason=reason if failing else None,
    )


def failed(
    record: Record[Obs],
    error: str,
    reason: str,
    now: dt.datetime,
    policy: Policy,
    rng: random.Random,
) -> Record[Obs]:
    """A probe failed: count it, and schedule the next probe with capped, jittered backoff."""
    failures = record.failures + 1
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** min(failures - 1, 20)))
    # Full jitter in the upper half: backends that failed together do not retry together,
    # and the delay still grows with every failure.
    delay = ceiling * (0.5 + rng.random() / 2)
    return dataclasses.replace(
        record,
        failures=failures,
        first_failure_at=record.first_failure_at or now,
        last_error=error,
        last_reason=reason,
        next_probe_at=now + delay,
    )
