"""Alembic environment: runs migrations against the URL the caller put in the config.

Takes the ``MetaData`` of every package (`migrations.metadata`) so autogenerate and the drift
test see every table.
Migrations run on a synchronous engine (psycopg or sqlite3); SQLite uses batch mode so that
ALTER TABLE works there too.
"""

from __future__ import annotations

import os

from alembic import context

import migrations
from runtimestate import database

target_metadata = migrations.metadata()


def _url() -> str:
    url = context.config.attributes.get("llmctl_url") or os.environ.get("LLMCTL_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set LLMCTL_DATABASE_URL or pass one in the config")
    return str(url)


def run_migrations_online() -> None:
    url = _url()
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection, database.is_sqlite(database.sync_url(url)))
        return
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn, database.is_sqlite(engine.url))
    finally:
        engine.dispose()


def _run(connection: object, sqlite: bool) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run llmctl db upgrade")
run_migrations_online()
