"""Database URLs and engines: users write plain URLs, llmctl picks the driver.

``sqlite:///path/to/file.db`` runs on aiosqlite (async) or sqlite3 (sync, for migrations);
``postgresql://user@host/db`` runs on psycopg 3 for both. Called by the composition root
(the CLI, ``serve``, benchmarks and tests); nothing here holds a global engine. Engines made
here bind an `EncodedJSON` to a JSON column as the text it holds.

It is also the one place that says which exceptions mean "the database is unavailable"
(`UNAVAILABLE`) and raises `errors.DatabaseUnavailable` for them, named by the driver's first
line (`describe`): `transaction` and `read_snapshot` do it, and `guarded` around other database
work (migrations, probes, a command's own engine). Callers catch `errors.DatabaseUnavailable`,
never a tuple of their own.

Every engine's URL passes through `with_password`: a Postgres URL without a password gets the
one in the file ``LLMCTL_DATABASE_PASSWORD_FILE`` names (a mounted Kubernetes Secret), so the
CLI, ``serve``, ``reconcile`` and `Resolver.from_database` all take it. TLS needs nothing here:
``sslmode`` and ``sslrootcert`` in the URL's query reach libpq as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext import asyncio as sa_asyncio

from dwqueue import secretfiles
from runtimestate import connectionhints, errors

T = TypeVar("T")
PASSWORD_FILE_ENV = connectionhints.PASSWORD_FILE_ENV

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg_async"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
# What a lost, restarting or overloaded database raises (the drivers' errors come wrapped in
# the first two; a refused or reset socket can surface as a bare OSError; the third is the
# pool's wait for a connection). Other database errors (a constraint, a bad statement) are not
# an outage: they stay SQLAlchemy's.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    OSError,
)


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedJSON:
    """A JSON document already encoded: bound to a JSON column as it is.

    A writer of many large documents (the first status write of a 1,000-backend fleet) can
    encode them one at a time instead of holding them all as Python objects until the
    statement runs."""

    text: str


def _json_serializer(value: Any) -> str:
    if isinstance(value, EncodedJSON):
        return value.text
    return json.dumps(value)


class DatabaseUrlError(ValueError):
    """A database URL llmctl cannot use; the message says what would work."""


def parse(url: str) -> sa.URL:
    """Parse a plain URL and check that it names a database llmctl supports."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseUrlError(
            f"{redact(url)!r} is not a database URL; use sqlite:///path/to/file.db "
            "or postgresql://user@host/db"
        ) from None
    if parsed.drivername not in _POSTGRES_SCHEMES | _SQLITE_SCHEMES:
        raise DatabaseUrlError(
            f"unsupported database {parsed.drivername!r}; use sqlite:///path/to/file.db "
            "or postgresql://user@host/db"
        )
    if is_sqlite(parsed) and parsed.database in (None, "", ":memory:"):
        raise DatabaseUrlError("an in-memory SQLite database would vanish; give a file path")
    return parsed


class MissingDatabase(DatabaseUrlError):
    """A SQLite database a command would only read is not there; the message names the path."""


def require_existing(url: str) -> None:
    """Raise `MissingDatabase` when ``url`` is a SQLite file that does not exist.

    For commands that only read: connecting would create the file (and `create_async_engine`
    its directory), leaving an empty database behind a typo. Postgres URLs pass: a missing
    Postgres database is the server's error to report. Creates nothing.
    """
    parsed = parse(url)
    if not is_sqlite(parsed) or parsed.database is None:
        return
    path = pathlib.Path(parsed.database).expanduser()
    if path.is_file():
        return
    where = "its directory does not exist" if not path.parent.is_dir() else "no such file"
    raise MissingDatabase(
        f"no llmctl database at {path} ({where}); create it with: llmctl db upgrade "
        "(llmctl serve and the declaring commands, such as llmctl backend add, create it too), "
        "or give the right --database-url"
    )


def is_sqlite(url: sa.URL) -> bool:
    return url.get_backend_name() == "sqlite"


def async_url(url: str) -> sa.URL:
    parsed = with_password(parse(url))
    driver = "sqlite+aiosqlite" if is_sqlite(parsed) else "postgresql+psycopg"
    return parsed.set(drivername=driver)


def sync_url(url: str) -> sa.URL:
    parsed = with_password(parse(url))
    driver = "sqlite+pysqlite" if is_sqlite(parsed) else "postgresql+psycopg"
    return parsed.set(drivername=driver)


def with_password(url: sa.URL, environ: Mapping[str, str] | None = None) -> sa.URL:
    """``url`` with the password read from the file ``LLMCTL_DATABASE_PASSWORD_FILE`` names
    (in ``environ``, default the process's environment), one trailing newline stripped.

    Unchanged when the variable is unset or empty, and for SQLite. Reads the file on every
    call (a rotated Secret is picked up by the next engine). Raises `DatabaseUrlError` when
    the URL has a password too, or the file cannot be read or is empty; the message never
    holds the password.
    """
    path = (os.environ if environ is None else environ).get(PASSWORD_FILE_ENV, "")
    if not path or is_sqlite(url):
        return url
    if url.password is not None:
        raise DatabaseUrlError(
            f"the database URL {url.render_as_string(hide_password=True)} has a password and "
            f"{PASSWORD_FILE_ENV} is set too; give it in one place: remove it from the URL, "
            f"or unset {PASSWORD_FILE_ENV}"
        )
    try:
        password = secretfiles.read(path, "the database password file", PASSWORD_FILE_ENV)
    except secretfiles.SecretFileError as exc:
        raise DatabaseUrlError(str(exc)) from None
    return url.set(password=password)


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def describe(exc: BaseException) -> str:
    """One line naming a database error: the driver's first line (its class name when it has
    no text), never SQLAlchemy's text, which carries the statement and its parameters; for a
    connection refused over TLS or its password, followed by what to change
    (`connectionhints.fix`)."""
    origin = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = str(origin).strip().splitlines()
    if not lines:
        return type(origin).__name__
    fix = connectionhints.fix(lines[0])
    return f"{lines[0].strip()}; {fix}" if fix else lines[0].strip()


def unavailable(exc: BaseException) -> errors.DatabaseUnavailable:
    """The `errors.DatabaseUnavailable` for one of the `UNAVAILABLE` exceptions."""
    return errors.DatabaseUnavailable(describe(exc))


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Raise `errors.DatabaseUnavailable` (from the original) for an `UNAVAILABLE` exception
    in the block; anything else passes unchanged. Usable around ``await`` too."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _ensure_sqlite_directory(url: sa.URL) -> None:
    if url.database:
        pathlib.Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_async_engine(url: str, **kwargs: Any) -> sa_asyncio.AsyncEngine:
    """An async engine for a plain URL. The caller disposes of it."""
    target = async_url(url)
    if is_sqlite(target):
        _ensure_sqlite_directory(target)
    kwargs.setdefault("json_serializer", _json_serializer)
    engine = sa_asyncio.create_async_engine(target, **kwargs)
    if is_sqlite(target):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_sync_engine(url: str, **kwargs: Any) -> sa.Engine:
    """A synchronous engine (used by migrations). The caller disposes of it."""
    target = sync_url(url)
    if is_sqlite(target):
        _ensure_sqlite_directory(target)
    kwargs.setdefault("json_serializer", _json_serializer)
    engine = sa.create_engine(target, **kwargs)
    if is_sqlite(target):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(
    engine: sa_asyncio.AsyncEngine,
) -> sa_asyncio.async_sessionmaker[sa_asyncio.AsyncSession]:
    return sa_asyncio.async_sessionmaker(engine, expire_on_commit=False)


async def uncut(work: Awaitable[T]) -> T:
    """Await ``work`` (a transaction) so that a cancellation cannot cut it short.

    A task cancelled inside a transaction loses its rollback too (the cancellation reaches the
    driver call that would end it), and the connection goes back holding its locks: on SQLite
    the write lock, so every later writer waits for ever. Here the transaction runs in a task
    of its own; when the caller is cancelled it still ends (committed or rolled back, as it
    would have), and then the cancellation goes on. Exceptions propagate as usual.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller was cancelled, it wants no result
        raise


async def transaction(
    sessions: sa_asyncio.async_sessionmaker[sa_asyncio.AsyncSession],
    work: Callable[[sa_asyncio.AsyncSession], Awaitable[T]],
) -> T:
    """Run ``work`` in one transaction, committed if it returns and rolled back if it raises,
    never cut short by a cancellation (see `uncut`). Raises `errors.DatabaseUnavailable` when
    the database is unreachable."""

    async def run() -> T:
        async with sessions() as session, session.begin():
            return await work(session)

    with guarded():
        return await uncut(run())


async def read_snapshot(
    sessions: sa_asyncio.async_sessionmaker[sa_asyncio.AsyncSession],
    work: Callable[[sa_asyncio.AsyncSession], Awaitable[T]],
) -> T:
    """Run read-only ``work`` on one consistent snapshot of the database; writes nothing.
    A cancellation waits for the reads to end (see `uncut`). Raises
    `errors.DatabaseUnavailable` when the database is unreachable."""
    with guarded():
        return await uncut(_read_snapshot(sessions, work))


async def _read_snapshot(
    sessions: sa_asyncio.async_sessionmaker[sa_asyncio.AsyncSession],
    work: Callable[[sa_asyncio.AsyncSession], Awaitable[T]],
) -> T:
    """`read_snapshot` without the shield.

    On Postgres every statement of a default (READ COMMITTED) transaction sees what was
    committed when it began, so five queries could see five states: a backend listed by the
    first and gone from its pool memberships by the fourth. REPEATABLE READ gives them all one
    snapshot; on SQLite a transaction begun before the first read does.
    """
    async with sessions() as session:
        dialect = session.bind.dialect.name if session.bind is not None else ""
        if dialect == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        elif dialect == "sqlite":
            # The sqlite3 driver opens no transaction for SELECTs, so each would read the
            # latest commit; an explicit BEGIN makes the reads one WAL snapshot.
            await session.execute(sa.text("BEGIN"))
        try:
            return await work(session)
        finally:
            await session.rollback()


async def upsert(
    session: sa_asyncio.AsyncSession,
    table: type[Any],
    keys: dict[str, Any],
    values: dict[str, Any],
) -> None:
    """Update the row of ORM class ``table`` whose columns equal ``keys`` to ``values``, or
    insert it: the same statements on SQLite and Postgres. Idempotent; two writers racing to
    insert one key are kept apart by the callers' locks or the primary key."""
    where = [getattr(table, column) == value for column, value in keys.items()]
    updated = await session.execute(sa.update(table).where(*where).values(values))
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(sa.insert(table).values(**keys, **values))
