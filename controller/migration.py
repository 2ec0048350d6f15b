"""The ``llmctl db`` commands: upgrade, downgrade and show the revision of the database schema.

Called by the CLI (loaded only when ``db`` runs). Exit codes as every command's: 2 for a bad
URL or revision (nothing changed), 1 (one line, never a traceback) when the database cannot be
reached.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from alembic.util import CommandError

import migrations
from controller import runner
from runtimestate import database, errors

T = TypeVar("T")

app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


@app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision")] = "head"
) -> None:
    """Apply the database migrations (idempotent)."""
    env = _env(ctx)
    _migrate(env, lambda: migrations.upgrade(env.database_url, revision))
    current = _migrate(env, lambda: migrations.current(env.database_url))
    env.out.print(f"database at revision {current}", highlight=False)


@app.command("downgrade")
def db_downgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision, or base")]
) -> None:
    """Revert the database migrations down to REVISION (base drops every llmctl table)."""
    env = _env(ctx)
    _migrate(env, lambda: database.require_existing(env.database_url))
    _migrate(env, lambda: migrations.downgrade(env.database_url, revision))
    current = _migrate(env, lambda: migrations.current(env.database_url))
    env.out.print(f"database at revision {current}", highlight=False)


@app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Print the revision the database is at, and the newest one this llmctl knows."""
    env = _env(ctx)
    _migrate(env, lambda: database.require_existing(env.database_url))
    current = _migrate(env, lambda: migrations.current(env.database_url))
    env.out.print(f"current: {current or 'none'}  head: {migrations.head()}", highlight=False)


def _migrate(env: runner.Env, action: Callable[[], T]) -> T:
    """Run a migrations ``action``: exit 2 for a bad URL or revision, 1 (one line, never a
    traceback) when the database is unreachable."""
    try:
        database.parse(env.database_url)
        with database.guarded():
            return action()
    except (database.DatabaseUrlError, CommandError) as exc:
        env.fail(str(exc))
    except errors.DatabaseUnavailable as exc:
        env.fail(f"cannot use the database at {database.redact(env.database_url)}: {exc}", 1)
