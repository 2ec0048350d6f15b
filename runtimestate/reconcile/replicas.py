"""The replica record: which processes run backend cycles, whether they are alive, and their
latest cycle (table ``controller_replicas``).

Written by `runtimestate.state.State`: after each backend cycle it ran (`record_cycle`), on every
heartbeat of a ``serve`` replica (`beat`), and when a replica stops (`stopped`). Read by ``llmctl
status`` (`load`). A replica is running while its last heartbeat is younger than the
``stale_after_s`` it wrote (a few of its heartbeat intervals; a replica that died stops beating
and goes stale by itself); a one-off ``reconcile --once`` records its cycle with none. Rows of
processes that have not beaten for `FORGET_AFTER` are deleted on the next write, so one-off runs
from cron do not pile up. Functions take a session and never commit; they must not read or
write any other table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import schema

FORGET_AFTER = dt.timedelta(days=7)
SERVE = "serve"  # a long-running replica that beats
ONCE = "once"  # a one-off cycle (``reconcile --once``)


@dataclasses.dataclass(frozen=True)
class Replica:
    owner: str
    role: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stale_after_s: float | None
    cycle: int | None = None
    cycle_started_at: dt.datetime | None = None
    cycle_duration_s: float | None = None

    def running(self, now: dt.datetime) -> bool:
        """Beating recently enough to be alive (a stopped or one-off process never is)."""
        if self.stale_after_s is None:
            return False
        return (now - self.heartbeat_at).total_seconds() <= self.stale_after_s


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who writes: the process's lease owner, its role, when it started and how long its
    heartbeat stays current (None: it does not beat)."""

    owner: str
    role: str
    started_at: dt.datetime
    stale_after_s: float | None


async def beat(session: AsyncSession, who: Identity, now: dt.datetime) -> None:
    """Record that ``who`` is alive at ``now``; idempotent (creates its row when missing)."""
    row = await _row(session, who, now)
    row.heartbeat_at = now
    row.stale_after_s = who.stale_after_s


async def record_cycle(
    session: AsyncSession,
    who: Identity,
    cycle: int,
    started_at: dt.datetime,
    duration_s: float,
) -> None:
    """Record ``who``'s latest backend cycle (also a heartbeat), and forget long-gone rows."""
    now = started_at + dt.timedelta(seconds=duration_s)
    row = await _row(session, who, now)
    row.heartbeat_at = max(row.heartbeat_at, now)
    row.stale_after_s = who.stale_after_s
    row.cycle = cycle
    row.cycle_started_at = started_at
    row.cycle_duration_s = duration_s
    table = schema.ReplicaRow
    await session.execute(
        sa.delete(table).where(table.heartbeat_at < now - FORGET_AFTER, table.owner != who.owner)
    )


async def stopped(session: AsyncSession, owner: str) -> None:
    """``owner`` stopped on purpose: no longer running; its latest cycle stays on record."""
    table = schema.ReplicaRow
    await session.execute(sa.update(table).where(table.owner == owner).values(stale_after_s=None))


async def load(session: AsyncSession) -> list[Replica]:
    """Every recorded process, oldest first."""
    rows = await session.scalars(
        sa.select(schema.ReplicaRow).order_by(schema.ReplicaRow.started_at)
    )
    return [
        Replica(
            r.owner,
            r.role,
            r.started_at,
            r.heartbeat_at,
            r.stale_after_s,
            r.cycle,
            r.cycle_started_at,
            r.cycle_duration_s,
        )
        for r in rows
    ]


def last_cycle(found: Sequence[Replica]) -> Replica | None:
    """The replica whose backend cycle started last, or None when none ever ran."""
    ran = [r for r in found if r.cycle_started_at is not None]
    return max(ran, key=lambda r: r.cycle_started_at or r.started_at, default=None)


async def _row(session: AsyncSession, who: Identity, now: dt.datetime) -> schema.ReplicaRow:
    row = await session.get(schema.ReplicaRow, who.owner)
    if row is None:
        row = schema.ReplicaRow(
            owner=who.owner, role=who.role, started_at=who.started_at, heartbeat_at=now
        )
        session.add(row)
    return row
