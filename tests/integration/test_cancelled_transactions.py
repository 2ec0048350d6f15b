"""A task cancelled inside a transaction must not leave the database locked.

Cut short, the transaction loses its rollback as well (the cancellation reaches the driver call
that would end it) and the connection goes back to the pool holding its locks: on SQLite every
later writer then waits for ever. That froze every download of ``llmctl demo`` when a pull's
heartbeat was stopped in the middle of its lease update. `database.transaction`, which every
cycle's writes go through, lets the transaction end first.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from runtimestate import database


async def _bump(session: AsyncSession) -> int:
    await session.execute(sa.text("UPDATE cancel_probe SET hits = hits + 1 WHERE id = 1"))
    return int((await session.execute(sa.text("SELECT hits FROM cancel_probe"))).scalar_one())


async def test_a_transaction_cancelled_at_any_point_ends_and_leaves_nothing_locked(
    database_url: str,
) -> None:
    engine = database.create_async_engine(database_url)
    sessions = database.session_factory(engine)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text("DROP TABLE IF EXISTS cancel_probe"))
            await connection.execute(
                sa.text("CREATE TABLE cancel_probe (id INTEGER PRIMARY KEY, hits INTEGER)")
            )
            await connection.execute(sa.text("INSERT INTO cancel_probe VALUES (1, 0)"))
        cancelled = 0
        for attempt in range(100):
            writer = asyncio.create_task(database.transaction(sessions, _bump))
            await asyncio.sleep(0.00005 * (attempt % 50))  # before, during and after each step
            cancelled += writer.cancel()
            await asyncio.wait([writer])
            # The next transaction gets the write lock (a leaked one would hold it for ever).
            await asyncio.wait_for(database.transaction(sessions, _bump), 5)
        hits = await asyncio.wait_for(database.transaction(sessions, _bump), 5)
    finally:
        await engine.dispose()
    assert cancelled >= 20  # many were cancelled while they ran, not after they had ended
    # 100 follow-ups, the last one, and every writer but those cancelled before they began.
    assert 201 - cancelled <= hits <= 201
