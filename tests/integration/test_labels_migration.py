"""Revision 0009 gives models and pools labels: empty for existing rows, memberships kept.

On SQLite the revision rebuilds the two tables, which would delete every pool membership
through ``ON DELETE CASCADE``; these tests hold it to keeping them, up and down.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

import migrations
from runtimestate import database

_NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
_MEMBERS = (
    "SELECT p.name, b.name, t.joined_generation FROM pool_backends t"
    " JOIN pools p ON p.id = t.pool_id JOIN backends b ON b.id = t.backend_id"
    " UNION ALL SELECT p.name, m.name, t.joined_generation FROM pool_models t"
    " JOIN pools p ON p.id = t.pool_id JOIN models m ON m.id = t.model_id ORDER BY 1, 2"
)


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


def _labels(url: str, table: str) -> dict[str, object]:
    rows = sa.table(table, sa.column("name"), sa.column("labels", sa.JSON))
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return dict(tuple(row) for row in connection.execute(sa.select(rows)))
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> set[str]:
    engine = database.create_sync_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def _seed_at_0008(url: str) -> list[tuple[object, ...]]:
    migrations.upgrade(url, "0008")
    return _run(
        url,
        "INSERT INTO backends (name, type, base_url, labels, prune, max_pulls, generation,"
        " created_at, updated_at) VALUES ('gpu-0', 'ollama', 'http://a', '{}', 'managed', 1, 1,"
        " :now, :now)",
        "INSERT INTO models (name, canonical_name, generation, created_at, updated_at)"
        " VALUES ('llama3', 'llama3:latest', 1, :now, :now)",
        "INSERT INTO pools (name, purpose, generation, created_at, updated_at)"
        " VALUES ('edited', '', 7, :now, :now)",
        "INSERT INTO pool_backends (pool_id, backend_id, joined_generation)"
        " SELECT p.id, b.id, p.generation FROM pools p, backends b",
        "INSERT INTO pool_models (pool_id, model_id, joined_generation)"
        " SELECT p.id, m.id, 3 FROM pools p, models m",
        _MEMBERS,
    )


def test_upgrading_gives_existing_models_and_pools_empty_labels_and_keeps_memberships(
    database_url: str,
) -> None:
    members = _seed_at_0008(database_url)
    assert len(members) == 4
    migrations.upgrade(database_url)
    assert _labels(database_url, "models") == {"llama3": {}}
    assert _labels(database_url, "pools") == {"default": {}, "edited": {}}
    assert _run(database_url, _MEMBERS) == members


def test_downgrading_drops_the_labels_columns_and_keeps_memberships(database_url: str) -> None:
    members = _seed_at_0008(database_url)
    migrations.upgrade(database_url)
    _run(database_url, 'UPDATE models SET labels = \'{"tier": "big"}\'')
    migrations.downgrade(database_url, "0008")
    assert "labels" not in _columns(database_url, "models")
    assert "labels" not in _columns(database_url, "pools")
    assert "labels" in _columns(database_url, "backends")
    assert _run(database_url, _MEMBERS) == members
    migrations.upgrade(database_url)
    assert _labels(database_url, "models") == {"llama3": {}}
