"""Fixtures of the integration tests: migrated databases of both kinds, a session, a fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from runtimestate import database
from tests.integration.cycle_fixtures import Fleet


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database (SQLite or Postgres) at the newest schema."""
    migrations.upgrade(database_url)
    return database_url


@pytest.fixture
async def session(migrated_url: str) -> AsyncIterator[AsyncSession]:
    """A session in an open transaction; the test commits when it means to."""
    engine = database.create_async_engine(migrated_url)
    try:
        async with database.session_factory(engine)() as session:
            yield session
    finally:
        await engine.dispose()


@pytest.fixture
async def fleet(migrated_url: str) -> AsyncIterator[Fleet]:
    """A `Fleet` (a State with fast settings) on a migrated database, closed afterwards."""
    world = Fleet(migrated_url)
    try:
        yield world
    finally:
        await world.close()
