"""Revision 0002 creates exactly the download queue table `dwqueue.schema` describes."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import migrations
from runtimestate import database


def _inspect(url: str) -> tuple[set[str], dict[str, dict[str, object]]]:
    engine = database.create_sync_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = set(inspector.get_table_names())
        indexes = {}
        if "download_jobs" in tables:
            indexes = {ix["name"]: dict(ix) for ix in inspector.get_indexes("download_jobs")}
        return tables, indexes  # type: ignore[return-value]
    finally:
        engine.dispose()


def test_upgrade_leaves_no_difference_between_the_queue_table_and_the_schema(
    database_url: str,
) -> None:
    migrations.upgrade(database_url)
    engine = database.create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            # Every package's metadata: another package's table would show as one to remove.
            diff = compare_metadata(context, migrations.metadata())  # type: ignore[arg-type]
    finally:
        engine.dispose()
    assert diff == []
    tables, _ = _inspect(database_url)
    assert "download_jobs" in tables


def test_the_one_active_job_index_is_unique_and_partial(database_url: str) -> None:
    migrations.upgrade(database_url)
    _, indexes = _inspect(database_url)
    active = indexes["ix_download_jobs_one_active"]
    assert active["unique"]
    assert active["column_names"] == ["backend", "model_key"]
    where = active.get("dialect_options", {})
    assert any("queued" in str(value) for value in where.values())  # type: ignore[attr-defined]
    assert indexes["ix_download_jobs_claim_order"]["column_names"] == [
        "state",
        "next_attempt_at",
        "id",
    ]


def test_downgrading_to_the_first_revision_removes_only_the_queue_table(database_url: str) -> None:
    migrations.upgrade(database_url)
    migrations.downgrade(database_url, "0001")
    tables, _ = _inspect(database_url)
    assert "download_jobs" not in tables
    assert "backends" in tables
    migrations.upgrade(database_url)
    tables, _ = _inspect(database_url)
    assert "download_jobs" in tables
    assert migrations.is_current(database_url)
