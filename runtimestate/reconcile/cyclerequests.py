"""Cycle requests: the database's word that a trigger on NATS is genuine (table ``cycle_requests``).

A CLI command that committed a change records a request (`record`: one row, a random id and the
time) and publishes the id on ``<prefix>.v1.control.trigger``; ``serve`` runs a cycle only for
ids it consumes here (`consume` deletes them, so an id acts once, on one replica, however often
it is replayed). Whoever can publish on NATS but not write to the database can therefore name
nothing that runs a cycle. Requests nobody consumed (no ``serve`` was running) are removed
once `STALE_AFTER` has passed (`expire`): the scheduled cycles have covered them by then.

Called by `controller.trigger` and `controller.downloads` (record) and `controller.control`
(consume, expire). Functions take a session and never commit; they must not read or write any
other table.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Collection

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.desired import schema

STALE_AFTER = dt.timedelta(minutes=10)
_ID = re.compile(r"[0-9a-f]{32}")


def is_request_id(text: str) -> bool:
    """Whether ``text`` has the form `record` gives ids (32 lower-case hex digits)."""
    return _ID.fullmatch(text) is not None


async def record(session: AsyncSession, now: dt.datetime) -> str:
    """Record a request for a backend cycle made at ``now``; its id (128 random bits)."""
    request_id = secrets.token_hex(16)
    await session.execute(sa.insert(schema.CycleRequestRow).values(id=request_id, requested_at=now))
    return request_id


async def consume(session: AsyncSession, ids: Collection[str]) -> int:
    """Delete the requests named by ``ids``; how many existed (each is consumed once)."""
    wanted = [i for i in ids if is_request_id(i)]
    if not wanted:
        return 0
    row = schema.CycleRequestRow
    result = await session.execute(sa.delete(row).where(row.id.in_(wanted)))
    return int(getattr(result, "rowcount", 0) or 0)


async def expire(session: AsyncSession, now: dt.datetime) -> int:
    """Delete requests older than `STALE_AFTER` at ``now``; how many there were."""
    row = schema.CycleRequestRow
    stale = row.requested_at < now - STALE_AFTER
    result = await session.execute(sa.delete(row).where(stale))
    return int(getattr(result, "rowcount", 0) or 0)


async def pending(session: AsyncSession) -> int:
    """How many requests wait to be consumed (for tests and ``status``-like readers)."""
    count = await session.scalar(sa.select(sa.func.count()).select_from(schema.CycleRequestRow))
    return int(count or 0)
