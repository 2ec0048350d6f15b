"""The migrations create exactly what the models describe, on Postgres and on SQLite."""

from __future__ import annotations

import subprocess
import sys
import time

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import migrations
from runtimestate import database

TABLES = {
    "backends", "models", "pools", "pool_backends", "pool_models",
    "backend_status", "managed_models", "download_jobs", "controller_replicas",
    "adapters", "pool_adapters", "managed_adapters", "preloaded_models", "cycle_requests",
    "gateway_keys", "gateway_key_spend", "model_prices", "upgrade_checks", "upgrade_requests",
}  # fmt: skip


def _tables(url: str) -> set[str]:
    engine = database.create_sync_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_leaves_no_difference_between_models_and_schema(database_url: str) -> None:
    migrations.upgrade(database_url)
    engine = database.create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, migrations.metadata()) == []
    finally:
        engine.dispose()
    assert _tables(database_url) == TABLES
    assert migrations.is_current(database_url)


def test_the_first_migration_creates_the_default_pool(database_url: str) -> None:
    migrations.upgrade(database_url)
    engine = database.create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT name, generation FROM pools")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("default", 1)]


def test_downgrade_to_base_removes_every_table_and_upgrade_is_repeatable(database_url: str) -> None:
    migrations.upgrade(database_url)
    migrations.upgrade(database_url)
    migrations.downgrade(database_url, "base")
    assert _tables(database_url) == set()
    assert migrations.current(database_url) is None
    migrations.upgrade(database_url)
    assert _tables(database_url) == TABLES


def test_concurrent_upgrades_of_a_new_postgres_database_take_turns(postgres_url: str) -> None:
    # Replicas starting together, or `llmctl db upgrade` run during a rollout: without the
    # migration lock, all but one would fail on tables another created meanwhile.
    code = (
        "import sys, time, migrations; time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
        "migrations.upgrade(sys.argv[1])"
    )
    start = str(time.time() + 5)  # every process imported and waiting, then all at once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, postgres_url, start], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    failures = [proc.stderr.read() for proc in procs if proc.wait(timeout=120) != 0]  # type: ignore[union-attr]
    assert failures == []
    assert migrations.is_current(postgres_url)
    assert _tables(postgres_url) == TABLES


def test_the_head_read_from_the_revision_files_is_the_head_alembic_finds() -> None:
    from alembic import script

    directory = script.ScriptDirectory.from_config(migrations.config("sqlite:///unused.db"))
    assert [migrations.head()] == directory.get_heads()


def test_current_reads_the_revision_a_database_is_at(database_url: str) -> None:
    migrations.upgrade(database_url, "0002")
    assert migrations.current(database_url) == "0002"
    assert not migrations.is_current(database_url)
    migrations.upgrade(database_url)
    assert migrations.current(database_url) == migrations.head()
    assert migrations.is_current(database_url)
    migrations.downgrade(database_url, "base")
    assert migrations.current(database_url) is None
