"""A cycle's reads share one snapshot, whatever commits meanwhile."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from runtimestate import database
from runtimestate.desired import schema, spec, store


async def test_a_read_snapshot_does_not_see_what_commits_between_its_queries(
    database_url: str,
) -> None:
    migrations.upgrade(database_url)
    engine = database.create_async_engine(database_url)
    sessions = database.session_factory(engine)

    async def commit_a_backend() -> None:
        async with sessions() as other, other.begin():
            await store.add_backend(other, spec.make_backend("late", "ollama", "http://h:1"))

    async def reads(session: AsyncSession) -> tuple[list[str], int]:
        names = list(await session.scalars(sa.select(schema.BackendRow.name)))
        await commit_a_backend()
        memberships = len((await session.execute(sa.select(schema.PoolBackendRow.pool_id))).all())
        return names, memberships

    try:
        names, memberships = await database.read_snapshot(sessions, reads)
        assert names == []
        assert memberships == 0
        state = await database.read_snapshot(sessions, store.load)
        assert [b.name for b in state.backends] == ["late"]
    finally:
        await engine.dispose()
