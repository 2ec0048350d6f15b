"""Revision 0006 dates existing pool memberships at their pool's generation.

That keeps the declaration keys of downloads held before the upgrade what they were (the key
used the pool's generation), so upgrading re-queues no download a user cancelled.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

import migrations
from runtimestate import database

_NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _run(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = database.create_sync_engine(url)
    try:
        with engine.begin() as connection:
            result: list[tuple[object, ...]] = []
            for statement in statements:
                rows = connection.execute(sa.text(statement), {"now": _NOW})
                result = [tuple(row) for row in rows] if rows.returns_rows else []
            return result
    finally:
        engine.dispose()


def test_upgrading_dates_each_membership_at_its_pools_generation(database_url: str) -> None:
    migrations.upgrade(database_url, "0005")
    _run(
        database_url,
        "INSERT INTO backends (name, type, base_url, labels, prune, max_pulls, generation,"
        " created_at, updated_at) VALUES ('gpu-0', 'ollama', 'http://a', '{}', 'managed', 1, 1,"
        " :now, :now)",
        "INSERT INTO models (name, canonical_name, generation, created_at, updated_at)"
        " VALUES ('llama3', 'llama3:latest', 1, :now, :now)",
        "INSERT INTO pools (name, purpose, generation, created_at, updated_at)"
        " VALUES ('edited', '', 7, :now, :now)",
        "INSERT INTO pool_backends (pool_id, backend_id) SELECT p.id, b.id FROM pools p, backends b",
        "INSERT INTO pool_models (pool_id, model_id) SELECT p.id, m.id FROM pools p, models m",
    )
    migrations.upgrade(database_url)
    for table in ("pool_backends", "pool_models"):
        dated = _run(
            database_url,
            f"SELECT p.name, t.joined_generation FROM {table} t"  # noqa: S608 (fixed names)
            " JOIN pools p ON p.id = t.pool_id ORDER BY p.name",
        )
        assert dated == [("default", 1), ("edited", 7)]
    migrations.downgrade(database_url, "0005")
    engine = database.create_sync_engine(database_url)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("pool_models")}
    finally:
        engine.dispose()
    assert columns == {"pool_id", "model_id"}
