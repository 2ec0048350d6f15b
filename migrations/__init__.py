"""Alembic migrations for every table of every llmctl package, and the functions that run them.

Called by ``llmctl db upgrade``/``downgrade``, ``serve`` at start, and the CLI before it uses an
embedded SQLite database. `migrations.env` combines each package's own ``MetaData``.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

from alembic import command, script
from alembic.config import Config
from alembic.runtime import migration

from runtimestate import database, locks

HERE = pathlib.Path(__file__).resolve().parent


def config(url: str) -> Config:
    """An Alembic config for a plain database URL, independent of the working directory."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["llmctl_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Idempotent, and safe to run from several processes
    at once (replicas starting together, ``llmctl db upgrade`` during a rollout): see
    `serialised`."""
    with serialised(url):
        command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table); serialised with
    every other migration like `upgrade`."""
    with serialised(url):
        command.downgrade(config(url), revision)


@contextlib.contextmanager
def serialised(url: str) -> Iterator[None]:
    """On Postgres, hold the migration advisory lock (`runtimestate.locks.migration_lock`) for
    the block: concurrent migrations take turns, and the later ones find the schema current
    instead of failing half-way on tables the first one created. SQLite serialises writers
    itself, so there it does nothing."""
    if database.is_sqlite(database.parse(url)):
        yield
        return
    engine = database.create_sync_engine(url)
    try:
        with locks.migration_lock(engine):
            yield
    finally:
        engine.dispose()


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
