"""The CLI's composition root: where a command gets its database and runs one transaction.

Called by every CLI command. Resolves the database URL (``--database-url``,
``LLMCTL_DATABASE_URL``, else a SQLite file in the user's data directory), makes sure the schema
is current (an embedded SQLite database is created and migrated on first use by a command that
writes, never by one that only reads; Postgres must be migrated with ``llmctl db upgrade``),
then runs the command's work in one transaction that commits only when the work returns
normally.

Cheap to import (every command module imports it, and ``--help`` loads those): the database
layer, the migrations and the stores are imported by the functions that use them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape

from controller import datadir, terminal
from dwqueue import natsauth
from runtimestate import errors

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


class UsageError(ValueError):
    """A command-line mistake that no lower layer can see (conflicting options, bad files)."""


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean "the user asked for something invalid": exit 2, nothing
    written. A function so that importing this module does not import the stores."""
    from dwqueue import queue
    from gateway import keys, prices
    from runtimestate import credentials, database
    from runtimestate.desired import manifest, names, spec, store

    return (
        spec.SpecError,
        store.StoreError,
        manifest.ManifestError,
        credentials.CredentialError,
        database.DatabaseUrlError,
        names.InvalidName,
        queue.QueueError,
        keys.KeyRefused,
        prices.PriceRefused,
        UsageError,
    )


def _width() -> int | None:
    # Tables go to pipes and files whole, as kubectl's do; on a terminal rich fits them.
    return None if sys.stdout.isatty() else 100_000


def default_database_url() -> str:
    """The embedded database: ``llmctl.db`` in ``LLMCTL_DATA_DIR`` or the user data directory,
    the same file ``serve`` uses."""
    return f"sqlite:///{datadir.from_environment() / 'llmctl.db'}"


def update(env: Env, kind: str, name: str, work: Callable[[AsyncSession], Awaitable[bool]]) -> None:
    """Run an update of ``kind``/``name`` (``work`` says whether it changed anything), say
    ``updated`` or ``unchanged``, and ask a running controller for a cycle."""
    changed = transaction(env, work)
    env.out.print(f"{kind}/{name} {'updated' if changed else 'unchanged'}", highlight=False)
    notify(env)


def notify(env: Env) -> None:
    """After a committed change: ask a running controller for a cycle now. Best effort, but
    a NATS server that refuses the configured credentials or TLS (or a file of them that
    cannot be used) exits 1 with the reason, saying the change itself is saved."""
    from controller import trigger

    try:
        trigger.request_cycle(
            env.nats_url, env.prefix, auth=env.nats_auth, database_url=env.database_url
        )
    except natsauth.NatsRefused as exc:
        env.fail(f"the change is saved, but {exc}", 1)


@dataclasses.dataclass
class Env:
    """What every command needs: the database URL, NATS and its credentials, where to print.

    Both consoles print text as it is (``markup=False``): what they show comes from users and
    backends (names, errors), and rich would take a ``[`` in it for a style tag, or fail on it.
    They style a terminal only, and nothing under ``NO_COLOR`` (`controller.terminal`).
    """

    database_url: str
    nats_url: str | None = None
    prefix: str = "llmctl"
    nats_auth: natsauth.NatsAuth = dataclasses.field(default_factory=natsauth.NatsAuth)
    out: Console = dataclasses.field(
        default_factory=lambda: Console(
            soft_wrap=True, width=_width(), markup=False, color_system=terminal.color_system()
        )
    )
    err: Console = dataclasses.field(
        default_factory=lambda: Console(
            stderr=True, soft_wrap=True, markup=False, color_system=terminal.color_system()
        )
    )
    environ: dict[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))

    def error(self, message: str) -> None:
        """``error: <message>`` on standard error; the message is shown verbatim."""
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)

    def fail(self, message: str, code: int = 2) -> NoReturn:
        """`error`, then exit with ``code`` (2: invalid input; 1: something else failed)."""
        self.error(message)
        raise SystemExit(code)


def ensure_schema(url: str, *, create: bool = True) -> None:
    """Migrate an embedded SQLite database; refuse a Postgres one that is not current.

    Without ``create`` (commands that only read) a SQLite file that does not exist is refused
    with `database.MissingDatabase` instead of being created with its directory.
    """
    import migrations
    from runtimestate import database

    if not create:
        database.require_existing(url)
    if migrations.is_current(url):
        return
    if database.is_sqlite(database.parse(url)):
        from alembic.util import CommandError

        try:
            migrations.upgrade(url)
        except CommandError as exc:  # a revision this llmctl does not know: say so in a line
            raise UsageError(str(exc)) from None
        return
    raise UsageError(
        f"the database at {database.redact(url)} is not at the current schema "
        f"({migrations.head()}); run: llmctl db upgrade"
    )


async def _transaction(url: str, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from runtimestate import database

    engine = database.create_async_engine(url)
    try:
        async with database.session_factory(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


def transaction(
    env: Env, work: Callable[[AsyncSession], Awaitable[T]], *, create: bool = True
) -> T:
    """Run ``work`` in one transaction; user errors exit 2, an unreachable database exits 1.

    A command that writes creates an embedded SQLite database on first use; one that only
    reads passes ``create=False`` (or calls `read`) and exits 2 naming the missing file.
    """
    from runtimestate import database

    try:
        with database.guarded():
            ensure_schema(env.database_url, create=create)
            return asyncio.run(_transaction(env.database_url, work))
    except user_errors() as exc:
        env.fail(str(exc))
    except errors.DatabaseUnavailable as exc:
        _unavailable(env, exc)


def read(env: Env, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`transaction` for a command that only reads: it never creates the database."""
    return transaction(env, work, create=False)


def run_async(env: Env, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run async ``work`` that builds its own engine; the same exits as `transaction`."""
    from runtimestate import database

    try:
        with database.guarded():
            ensure_schema(env.database_url)
            return asyncio.run(work())
    except user_errors() as exc:
        env.fail(str(exc))
    except errors.DatabaseUnavailable as exc:
        _unavailable(env, exc)


def _unavailable(env: Env, exc: errors.DatabaseUnavailable) -> NoReturn:
    from runtimestate import database

    env.fail(f"cannot use the database at {database.redact(env.database_url)}: {exc}", code=1)


def until_stopped(follow: Callable[[], int]) -> NoReturn:
    """Run a command that follows something live (``watch``, the ``--watch`` lists) and exit
    with the code ``follow`` returns; Ctrl-C ends it with 0, and so does a reader that went
    away (``| head``), quietly."""
    import typer

    try:
        code = follow()
    except KeyboardInterrupt:
        code = 0
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    raise typer.Exit(code)


def read_stdin() -> str:
    if sys.stdin is None or sys.stdin.closed:
        raise UsageError("standard input is closed; pipe the key in: ... --api-key-stdin < key.txt")
    return sys.stdin.read()
