"""The gateway's in-memory copy of the key store (`gateway.keybook`) on a real Postgres that
goes away for a while: no batch of spend is lost, and the last one is written at close."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
import sqlalchemy.exc
from psycopg import sql

import migrations
from gateway import keybook, keys, keystore
from runtimestate import database
from tests import services

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def _admit_connections(server: services.Postgres, url: str, allowed: bool) -> None:
    """Let clients connect to ``url``'s database, or refuse them and drop those connected."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


async def test_spend_counted_while_the_database_is_away_is_written_once_it_is_back(
    postgres_server: services.Postgres, postgres_url: str
) -> None:
    migrations.upgrade(postgres_url)
    engine = database.create_async_engine(postgres_url)
    book = keybook.KeyBook(database.session_factory(engine), now=lambda: T0)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            key = await keystore.create(session, keys.KeySpec("alice"), "0" * 64, "llmk-abcdef", T0)
        await book.sync()
        assert len(book.keyring) == 1
        book.charge(key.id, "all", 5)
        _admit_connections(postgres_server, postgres_url, False)
        try:
            with pytest.raises(sqlalchemy.exc.DBAPIError):
                await book.sync()
            assert book.spent(key.id, "all") == 5
            book.charge(key.id, "all", 7)
        finally:
            _admit_connections(postgres_server, postgres_url, True)
        await book.sync()
        assert book.spent(key.id, "all") == 12
        book.charge(key.id, "all", 30)
        await book.close()
        async with database.session_factory(engine)() as session:
            assert await keystore.spent(session, key.id, "all") == 42
    finally:
        await engine.dispose()
