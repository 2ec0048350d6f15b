"""Alembic migrations for every table of every llmctl package, and the functions that run them.

Called by ``llmctl db upgrade``/``downgrade``, ``serve`` at start, and the CLI before it uses an
embedded SQLite database. `metadata` combines each package's own ``MetaData`` (for `migrations.env`
and the tests that compare the migrated schema with the code).

Alembic is imported only to migrate: `is_current`, which every CLI command asks, reads the
revision table with one query and finds the head in the revision files' text (the test suite
checks that it is the head Alembic finds), so a read command never pays for Alembic.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa

from runtimestate import database, locks

if TYPE_CHECKING:
    from alembic.config import Config

HERE = pathlib.Path(__file__).resolve().parent
_REVISION = re.compile(r'^(down_)?revision(?::[^=]*)?=\s*(?:"([^"]*)"|None)', re.MULTILINE)


def metadata() -> list[sa.MetaData]:
    """Every package's ``MetaData``: what the migrations must create, table for table."""
    from dwqueue import schema as dwqueue_schema
    from gateway import schema as gateway_schema
    from runtimestate.desired import schema

    return [schema.metadata, dwqueue_schema.metadata, gateway_schema.metadata]


def config(url: str) -> Config:
    """An Alembic config for a plain database URL, independent of the working directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["llmctl_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Idempotent, and safe to run from several processes
    at once (replicas starting together, ``llmctl db upgrade`` during a rollout): see
    `serialised`."""
    from alembic import command

    with serialised(url):
        _refuse_unknown(url)
        command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table); serialised with
    every other migration like `upgrade`."""
    from alembic import command

    with serialised(url):
        _refuse_unknown(url)
        command.downgrade(config(url), revision)


def _refuse_unknown(url: str) -> None:
    """Raise Alembic's `CommandError`, naming the way out, when the database is at a revision
    no file of this installation has (a newer llmctl migrated it); Alembic's own message
    names only the revision."""
    at = current(url)
    if at is not None and at not in known():
        from alembic.util import CommandError

        raise CommandError(
            f"the database is at schema revision {at}, which this llmctl does not know (its "
            f"newest is {head()}): a newer llmctl migrated it; run that version, or use "
            "another database"
        )


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


def _graph() -> tuple[set[str], set[str]]:
    """(every revision of this installation's files, those another revision follows)."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in (HERE / "versions").glob("[0-9]*.py"):
        found = {bool(m.group(1)): m.group(2) for m in _REVISION.finditer(path.read_text())}
        revisions.add(found[False])
        if found.get(True):
            followed.add(found[True])
    return revisions, followed


def known() -> set[str]:
    """Every revision this installation has a file for."""
    return _graph()[0]


def head() -> str:
    """The newest revision this installation knows: the one no other revision follows."""
    revisions, followed = _graph()
    heads = sorted(revisions - followed)
    assert len(heads) == 1, f"migrations have several heads: {heads}"
    return heads[0]


def current(url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = database.create_sync_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            found = versions.scalars().all()
    finally:
        engine.dispose()
    assert len(found) <= 1, f"the database is at several revisions: {found}"
    return found[0] if found else None


def is_current(url: str) -> bool:
    return current(url) == head()
