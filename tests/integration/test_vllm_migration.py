"""Revision 0011 gives models a nullable ``vllm`` column: NULL for existing rows, no rebuild.

Adding and dropping the column must leave every model and every pool membership as it was (a
SQLite table rebuild would delete the memberships through ``ON DELETE CASCADE``; see 0009).
"""

from __future__ import annotations

import sqlalchemy as sa

import migrations
from runtimestate import database

# The seed at 0008 (a model and pools with memberships) and the helpers of 0009's tests.
from tests.integration import test_labels_migration as labels

_MODELS = "SELECT name, canonical_name, generation FROM models ORDER BY name"


def _vllm(url: str) -> dict[str, object]:
    rows = sa.table("models", sa.column("name"), sa.column("vllm", sa.JSON))
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return dict(tuple(row) for row in connection.execute(sa.select(rows)))
    finally:
        engine.dispose()


def test_upgrading_gives_existing_models_no_engine_arguments_and_keeps_memberships(
    database_url: str,
) -> None:
    members = labels._seed_at_0008(database_url)
    migrations.upgrade(database_url, "0010")
    models = labels._run(database_url, _MODELS)
    migrations.upgrade(database_url, "0011")
    assert _vllm(database_url) == {"llama3": None}
    assert labels._run(database_url, _MODELS) == models
    assert labels._run(database_url, labels._MEMBERS) == members


def test_downgrading_drops_the_vllm_column_and_keeps_models_and_memberships(
    database_url: str,
) -> None:
    members = labels._seed_at_0008(database_url)
    migrations.upgrade(database_url, "0011")
    labels._run(database_url, "UPDATE models SET vllm = '{\"maxModelLen\": 8192}'")
    assert _vllm(database_url) == {"llama3": {"maxModelLen": 8192}}
    models = labels._run(database_url, _MODELS)
    migrations.downgrade(database_url, "0010")
    assert "vllm" not in labels._columns(database_url, "models")
    assert labels._run(database_url, _MODELS) == models
    assert labels._run(database_url, labels._MEMBERS) == members
    migrations.upgrade(database_url, "0011")
    assert _vllm(database_url) == {"llama3": None}
