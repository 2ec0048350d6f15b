"""Shell completion: ``llmctl completion bash|zsh|fish`` and the names it completes.

The command prints the script a shell loads; the script runs ``llmctl`` again with
``_LLMCTL_COMPLETE=complete_<shell>`` for each completion, and click answers from the command
tree (typer's scripts and answer formats, which `register` installs before click answers).
The completers here give the names of backends, models, adapters, pools and downloads from the
database
that line names (``--database-url`` anywhere on it, else ``LLMCTL_DATABASE_URL``, else the
embedded file); they are the ``autocompletion=`` of the name arguments and options in
`controller.declare`, `controller.pools` and `controller.downloads`.

A completer never creates a database, never prints, never fails: a missing, unreachable or
unmigrated database completes nothing. The database layer is imported inside the completers,
so importing this module costs nothing to commands that do not complete.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import sqlalchemy as sa

PROG = "llmctl"
COMPLETE_VAR = "_LLMCTL_COMPLETE"
_CONNECT_TIMEOUT_S = 2  # a completion waits on an unreachable server no longer than this


class Shell(enum.StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"


def completion_command(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish", show_default=False)],
) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    It completes commands, options, and the names of backends, models, pools and downloads.

    Load it at shell start-up:

    bash, in ~/.bashrc: eval "$(llmctl completion bash)"

    zsh, in ~/.zshrc after compinit: eval "$(llmctl completion zsh)"

    fish: llmctl completion fish > ~/.config/fish/completions/llmctl.fish
    """
    from typer import _completion_shared  # typer's scripts; it has no public name for them

    script = _completion_shared.get_completion_script(
        prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell.value
    )
    typer.echo(script)


def register() -> None:
    """Answer completion requests in the format the printed scripts read (typer's classes;
    click's own would answer ``plain,NAME`` lines). Idempotent."""
    from typer import _completion_classes

    _completion_classes.completion_init()


def backends(ctx: typer.Context, incomplete: str) -> list[str]:
    """The declared backends whose names start with ``incomplete``."""
    return _starting(_names(ctx, "backends"), incomplete)


def models(ctx: typer.Context, incomplete: str) -> list[str]:
    """The declared models whose names start with ``incomplete``."""
    return _starting(_names(ctx, "models"), incomplete)


def adapters(ctx: typer.Context, incomplete: str) -> list[str]:
    """The declared adapters whose names start with ``incomplete``."""
    return _starting(_names(ctx, "adapters"), incomplete)


def pools(ctx: typer.Context, incomplete: str) -> list[str]:
    """The pools whose names start with ``incomplete``."""
    return _starting(_names(ctx, "pools"), incomplete)


def downloads(ctx: typer.Context, incomplete: str) -> list[str]:
    """Download ids, newest first, starting with ``incomplete``."""
    return _starting(_names(ctx, "downloads"), incomplete)


def _starting(names: list[str], incomplete: str) -> list[str]:
    return [name for name in names if name.startswith(incomplete)]


def _database_url(ctx: typer.Context) -> str:
    given = ctx.find_root().params.get("database_url")  # the option or LLMCTL_DATABASE_URL
    if isinstance(given, str) and given:
        return given
    from controller import runner

    return runner.default_database_url()


def _names(ctx: typer.Context, kind: str) -> list[str]:
    """The names of ``kind`` in the line's database; none when it cannot be read as it is."""
    import sqlalchemy as sa

    from runtimestate import database, errors

    try:
        engine = _reader(_database_url(ctx))
        try:
            with database.guarded(), engine.connect() as connection:
                return [str(name) for name in connection.execute(_query(kind)).scalars()]
        finally:
            engine.dispose()
    except (database.DatabaseUrlError, errors.DatabaseUnavailable, sa.exc.SQLAlchemyError):
        return []


def _reader(url: str) -> sa.Engine:
    """An engine that only reads: a SQLite file opened read-only (never created, never
    converted), a Postgres server given `_CONNECT_TIMEOUT_S` to answer."""
    import pathlib
    import sqlite3

    import sqlalchemy as sa

    from runtimestate import database

    database.require_existing(url)
    parsed = database.parse(url)
    if not database.is_sqlite(parsed):
        return database.create_sync_engine(
            url, connect_args={"connect_timeout": _CONNECT_TIMEOUT_S}
        )
    if not parsed.database:  # in memory: nothing declared there
        raise database.DatabaseUrlError("an in-memory SQLite database holds no names")
    uri = f"{pathlib.Path(parsed.database).expanduser().resolve().as_uri()}?mode=ro"
    return sa.create_engine("sqlite+pysqlite://", creator=lambda: sqlite3.connect(uri, uri=True))


def _query(kind: str) -> sa.Select[Any]:
    import sqlalchemy as sa

    from dwqueue import schema as queue_schema
    from runtimestate.desired import schema

    if kind == "downloads":
        jobs = queue_schema.download_jobs
        return sa.select(jobs.c.id).order_by(jobs.c.id.desc())
    name = {
        "backends": schema.BackendRow.name,
        "models": schema.ModelRow.name,
        "pools": schema.PoolRow.name,
        "adapters": schema.AdapterRow.name,
    }[kind]
    return sa.select(name).order_by(name)
