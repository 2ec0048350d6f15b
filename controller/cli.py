"""The ``llmctl`` command line: global options, ``db``, ``apply``, ``export`` and the sub-apps.

The entry point of the console script. Commands are thin: they parse options, call the domain
through `controller.runner`, and print. Exit codes: 0 success, 1 a service could not be used
(database unreachable), 2 invalid input (nothing written).
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from alembic.util import CommandError
from sqlalchemy.ext.asyncio import AsyncSession

import migrations
from controller import (
    declare,
    demo,
    downloads,
    emulate,
    pools,
    reconcile,
    resolve,
    runner,
    secrets,
    serve,
    usage,
    watch,
)
from runtimestate import database, echo, errors
from runtimestate.desired import manifest, store

T = TypeVar("T")
app = typer.Typer(
    name="llmctl",
    cls=usage.Root,
    help="Declare which models your Ollama, vLLM and cloud backends serve; llmctl converges them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(declare.backend_app, name="backend")
app.add_typer(declare.model_app, name="model")
app.add_typer(pools.app, name="pool")
app.add_typer(emulate.app, name="emulate", help="Run protocol-faithful Ollama or vLLM emulators.")
app.command("reconcile")(reconcile.reconcile_command)
app.add_typer(downloads.app, name="downloads", help="List, cancel and retry model downloads.")
app.command("watch")(watch.watch_command)
app.command("resolve")(resolve.resolve_command)
app.command("serve")(serve.serve_command)
app.command("demo")(demo.demo_command)
app.add_typer(secrets.app, name="secrets")


@app.callback()
def main_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="LLMCTL_DATABASE_URL",
            help="sqlite:///path/file.db or postgresql://user@host/db "
            "[default: a SQLite file in the user's data directory]",
            show_default=False,
        ),
    ] = None,
    nats_url: Annotated[
        str | None,
        typer.Option(
            "--nats-url",
            envvar="LLMCTL_NATS_URL",
            help="nats://host:4222 of the NATS server llmctl publishes events on",
            show_default=False,
        ),
    ] = None,
    prefix: Annotated[
        str,
        typer.Option(
            "--subject-prefix", envvar="LLMCTL_SUBJECT_PREFIX", help="NATS subject prefix"
        ),
    ] = "llmctl",
) -> None:
    runner.configure_cli_logging()
    ctx.obj = runner.Env(
        database_url=database_url or runner.default_database_url(), nats_url=nats_url, prefix=prefix
    )


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision")] = "head"
) -> None:
    """Apply the database migrations (idempotent)."""
    env = _env(ctx)
    _migrate(env, lambda: migrations.upgrade(env.database_url, revision))
    current = _migrate(env, lambda: migrations.current(env.database_url))
    env.out.print(f"database at revision {current}", highlight=False)


@db_app.command("downgrade")
def db_downgrade(
    ctx: typer.Context, revision: Annotated[str, typer.Argument(help="Target revision, or base")]
) -> None:
    """Revert the database migrations down to REVISION (base drops every llmctl table)."""
    env = _env(ctx)
    _migrate(env, lambda: database.require_existing(env.database_url))
    _migrate(env, lambda: migrations.downgrade(env.database_url, revision))
    current = _migrate(env, lambda: migrations.current(env.database_url))
    env.out.print(f"database at revision {current}", highlight=False)


@db_app.command("current")
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


@app.command("apply")
def apply(
    ctx: typer.Context,
    file: Annotated[
        str, typer.Option("--file", "-f", help="YAML file of llmctl/v1 documents; - for stdin")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff, write nothing")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete declared objects absent from the file")
    ] = False,
) -> None:
    """Apply a declarative file in one transaction; the whole file is validated first."""
    env = _env(ctx)
    source = manifest.STDIN if file == "-" else echo.plain(file)
    if file == "-" and (sys.stdin is None or sys.stdin.closed):
        env.fail("standard input is closed; pipe the file in (llmctl apply -f - < fleet.yaml)")
    try:
        data = sys.stdin.buffer.read() if file == "-" else pathlib.Path(file).read_bytes()
    except OSError as exc:
        env.fail(f"cannot read {source}: {exc.strerror}")
    parsed = manifest.read(data, source)
    if parsed.problems and not manifest.needs_store(parsed, prune):
        # Known from the file alone; otherwise apply lists them with the dangling members.
        env.fail(str(manifest.ManifestError(parsed.problems, source)))

    async def work(session: AsyncSession) -> list[manifest.Change]:
        return await manifest.apply(session, parsed, prune=prune, dry_run=dry_run)

    changes = runner.transaction(env, work)
    if not dry_run:
        runner.notify(env)
    suffix = " (dry run)" if dry_run else ""
    for change in changes:
        fields = f" ({', '.join(change.fields)})" if change.fields else ""
        env.out.print(
            f"{change.kind}/{change.name} {change.action.value}{fields}{suffix}", highlight=False
        )


@app.command("export")
def export(
    ctx: typer.Context,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only objects whose labels match (zone=a, gpu in (h100,a100), !draining, ...)",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", help="Only these kinds: Backend, Model, Pool (repeatable or a comma list)"
        ),
    ] = None,
) -> None:
    """Print the desired state as a file that llmctl apply -f accepts unchanged.

    With --kind or -l, only the objects chosen; a pool is printed only when chosen, with its
    members as declared (a note on stderr names those left out of the file)."""
    from controller import selection
    from runtimestate.desired import excerpt

    env = _env(ctx)
    chosen = selection.selected(env, selector)
    try:
        part = excerpt.Excerpt(excerpt.kinds(kind or ()), chosen)
    except runner.USER_ERRORS as exc:
        env.fail(str(exc))
    missing: list[str] = []

    def cut(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = part.cut(docs)
        missing.extend(excerpt.missing_members(kept))
        return kept

    state = runner.read(env, store.load)
    filtered = kind is not None or selector is not None
    env.out.out(manifest.export(state, cut if filtered else None), highlight=False, end="")
    for note in missing:
        env.err.print(
            f"note: {note}, which is not in this export; apply needs it in the database",
            highlight=False,
        )


def main() -> None:
    app()
