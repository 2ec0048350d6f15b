"""The declarative-file commands: ``llmctl apply -f`` and ``llmctl delete -f``.

Registered on the root app by `controller.cli`. ``-f`` names a file, a directory (every
``*.yaml``, ``*.yml`` and ``*.json`` directly in it, by name; with ``-R`` its subdirectories
too) or ``-`` for standard input, and may be repeated. Every file is read and checked whole
before the database is touched; then one transaction through `controller.runner` writes
everything or nothing. Invalid input exits 2 naming the file and document, and writes nothing.
This module reads files and prints; it writes the database only through
`runtimestate.desired.manifest` and `runtimestate.desired.deletion`, and imports them (and
everything else heavy) inside the commands, so that loading it stays cheap.
"""

from __future__ import annotations

import pathlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from controller import runner
from runtimestate import echo

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate.desired import deletion, manifest, sources

FileOpt = Annotated[
    list[str],
    typer.Option(
        "--file",
        "-f",
        help="A YAML or JSON file, a directory of them, or - for stdin (repeatable)",
        show_default=False,
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-R", help="Also read the subdirectories of a directory")
]
SUFFIXES = (".yaml", ".yml", ".json")


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


def read_files(env: runner.Env, given: list[str], recursive: bool) -> list[sources.Source]:
    """The files ``-f`` names, read in order; exits 2 naming one that cannot be read, a
    directory with no manifests, or ``-`` given twice."""
    from runtimestate.desired import sources

    if given.count("-") > 1:
        env.fail("-f - (standard input) can be given once")
    if "" in given:
        env.fail("-f needs a file, a directory or - (standard input), not an empty value")
    found: list[sources.Source] = []
    for arg in given:
        if arg == "-":
            if sys.stdin is None or sys.stdin.closed:
                env.fail("standard input is closed; pipe the file in (-f - < fleet.yaml)")
            found.append(sources.Source(sources.STDIN, sys.stdin.buffer.read()))
            continue
        path = pathlib.Path(arg)
        paths = _manifests(env, path, recursive) if path.is_dir() else [path]
        found += [_read(env, p) for p in paths]
    return found


def _manifests(env: runner.Env, directory: pathlib.Path, recursive: bool) -> list[pathlib.Path]:
    """The manifests in ``directory``, sorted by path; exits 2 when there is none."""
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    paths = sorted(p for p in candidates if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        where = " or its subdirectories" if recursive else " (add -R for its subdirectories)"
        env.fail(
            f"{echo.path(str(directory))}: no manifests found: no *.yaml, *.yml or *.json "
            f"file in the directory{where}"
        )
    return paths


def _read(env: runner.Env, path: pathlib.Path) -> sources.Source:
    from runtimestate.desired import sources

    name = echo.path(str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        env.fail(f"cannot read {name}: {exc.strerror}")
    return sources.Source(name, data, json=path.suffix.lower() == ".json")


def _label(given: list[str]) -> str:
    """What ``-f`` is called in a message: the one file or directory, or "the files"."""
    if len(given) > 1:
        return "the files"
    return "<stdin>" if given[0] == "-" else echo.path(given[0])


def apply_command(
    ctx: typer.Context,
    file: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff, write nothing")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete declared objects absent from the files")
    ] = False,
    recursive: RecursiveOpt = False,
) -> None:
    """Apply declarative files in one transaction; every file is validated first."""
    from runtimestate.desired import manifest

    env = _env(ctx)
    parsed = manifest.read_all(read_files(env, file, recursive), _label(file))
    if parsed.problems and not manifest.needs_store(parsed, prune):
        # Known from the files alone; otherwise apply lists them with the dangling members.
        env.fail(str(manifest.ManifestError(parsed.problems, parsed.source)))

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


def delete_command(
    ctx: typer.Context,
    file: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted, delete nothing")
    ] = False,
    ignore_not_found: Annotated[
        bool,
        typer.Option("--ignore-not-found", help="Exit 0 when an object named is not stored"),
    ] = False,
    recursive: RecursiveOpt = False,
) -> None:
    """Delete every object the files name (kind and metadata.name), in one transaction.

    The default pool is kept; objects not stored are reported and make the exit code 1.
    """
    from runtimestate.desired import deletion, manifest

    env = _env(ctx)
    try:
        targets = deletion.identify(read_files(env, file, recursive), _label(file))
    except manifest.ManifestError as exc:
        env.fail(str(exc))

    async def work(session: AsyncSession) -> list[deletion.Verdict]:
        return await deletion.delete(session, targets, dry_run=dry_run)

    verdicts = runner.transaction(env, work)
    _report(env, verdicts, dry_run, ignore_not_found)


def _report(
    env: runner.Env, verdicts: list[deletion.Verdict], dry_run: bool, ignore_not_found: bool
) -> None:
    from runtimestate.desired import deletion

    suffix = " (dry run)" if dry_run else ""
    missing = [v for v in verdicts if v.outcome is deletion.Outcome.NOT_FOUND]
    for verdict in verdicts:
        if verdict.outcome is not deletion.Outcome.NOT_FOUND:
            env.out.print(deletion.message(verdict) + suffix, highlight=False)
    if not dry_run and any(v.outcome is deletion.Outcome.DELETED for v in verdicts):
        runner.notify(env)
    if missing and not ignore_not_found:
        for verdict in missing:
            env.error(deletion.message(verdict))
        raise SystemExit(1)
