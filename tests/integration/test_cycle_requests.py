"""The cycle requests' store (`runtimestate.reconcile.cyclerequests`) on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate.reconcile import cyclerequests

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


async def test_a_recorded_request_is_consumed_once_and_unknown_ids_count_nothing(
    session: AsyncSession,
) -> None:
    first = await cyclerequests.record(session, NOW)
    second = await cyclerequests.record(session, NOW)
    assert first != second
    assert cyclerequests.is_request_id(first)
    unknown = "0" * 32
    assert await cyclerequests.consume(session, [first, unknown, "not an id"]) == 1
    assert await cyclerequests.consume(session, [first]) == 0  # a replay names nothing
    assert await cyclerequests.pending(session) == 1
    assert await cyclerequests.consume(session, [second]) == 1
    assert await cyclerequests.pending(session) == 0


async def test_requests_nobody_consumed_expire_once_stale(session: AsyncSession) -> None:
    old = await cyclerequests.record(session, NOW - cyclerequests.STALE_AFTER - dt.timedelta(1))
    fresh = await cyclerequests.record(session, NOW - dt.timedelta(seconds=5))
    assert await cyclerequests.expire(session, NOW) == 1
    assert await cyclerequests.consume(session, [old, fresh]) == 1
