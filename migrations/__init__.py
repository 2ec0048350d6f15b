"""Alembic migrations for every table of every llmctl package, and the functions that run them.

Called by ``llmctl db upgrade``/``downgrade``, ``serve`` at start, and the CLI before it uses an
embedded SQLite database. `migrations.env` combines each package's own ``MetaData``.
"""

from __future__ import annotations

import pathlib

from alembic import command, script
from alembic.config import Config
from alembic.runtime import migration

from runtimestate import database

HERE = pathlib.Path(__file__).resolve().parent


def config(url: str) -> Config:
    """An Alembic config for a plain database URL, independent of the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["llmctl_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Idempotent."""
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    command.downgrade(config(url), revision)


def head() -> str:
    """The newest revision this installation knows."""
    heads = script.ScriptDirectory.from_config(config("sqlite:///unused.db")).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def current(url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return migration.MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    return current(url) == head()
