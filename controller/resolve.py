"""``llmctl resolve``: which provider a request would get, from the persisted status.

Reads the backend states the controller persisted (and the desired state) in one transaction,
resolves once with `runtimestate.resolver` and prints the choice, the fallbacks and, with
``--explain``, why every other candidate was left out. Nothing is written and no backend is
called; outcomes and in-flight counts live in applications, so this view has none of them.
Exit codes: 0 a provider qualifies, 1 none does (the diagnostic says why) or the database
cannot be used, 2 invalid input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from controller import output, runner, selection
from runtimestate import resolver, snapshot
from runtimestate.desired import names, spec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate import desired


def _env(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


def resolve_command(
    ctx: typer.Context,
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Preferred model names, best first; none: any model", show_default=False
        ),
    ] = None,
    capability: Annotated[
        spec.Capability | None, typer.Option("--capability", help="chat, embed, prompt or stream")
    ] = None,
    min_context: Annotated[
        int | None, typer.Option("--min-context", min=1, help="Minimum context length in tokens")
    ] = None,
    types: Annotated[
        list[spec.BackendType] | None,
        typer.Option("--type", help="Allowed backend type (repeatable); default: any"),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session key (the sticky policy needs one)")
    ] = None,
    policy: Annotated[
        resolver.Policy, typer.Option("--policy", help="How to choose among qualifying providers")
    ] = resolver.Policy.LEAST_LOADED,
    allow_degraded: Annotated[
        bool, typer.Option("--allow-degraded", help="Also use Degraded backends, after Ready ones")
    ] = False,
    selector: Annotated[
        str | None,
        typer.Option(
            "--selector",
            help=f"Only backends whose labels match. {selection.HELP}",
            show_default=False,
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Say why every other candidate was left out")
    ] = False,
    doc_format: Annotated[
        output.DocFormat, typer.Option("--output", "-o", help="table, json or yaml")
    ] = output.DocFormat.TABLE,
) -> None:
    """Show which provider a request would get, its fallbacks, and why others were excluded."""
    from runtimestate.desired import store
    from runtimestate.reconcile import status

    env = _env(ctx)
    fmt = output.Format(doc_format)
    if policy is resolver.Policy.STICKY and not session:
        env.fail(
            "--policy sticky needs a session key: add --session KEY "
            "(a user or conversation id; the same key always gets the same provider)"
        )
    _check_names(env, models or [])
    chosen = selection.selected(env, selector)
    try:
        request = resolver.Request(
            models=tuple(models or ()),
            capability=None if capability is None else capability.value,
            min_context=min_context,
            types=frozenset(t.value for t in types or ()),
            session=session,
            policy=policy,
            allow_degraded=allow_degraded,
            selector=chosen,
        )
    except resolver.InvalidRequest as exc:
        env.fail(str(exc))

    async def read(
        session_: AsyncSession,
    ) -> tuple[dict[str, snapshot.LLMState], desired.DesiredState]:
        return await status.load_states(session_), await store.load(session_)

    states, wanted = runner.read(env, read)
    chooser = resolver.Resolver.from_snapshot(snapshot.Snapshot(states), desired=wanted)
    try:
        result = chooser.resolve(request)
    except resolver.ResolveError as exc:
        _print_failure(env, exc, explain, fmt)
        raise SystemExit(1) from None
    if fmt is not output.Format.TABLE:
        output.render_one(result.to_dict(explain=explain), fmt, env.out)
        return
    _print_table(env, "CHOSEN", [result.provider])
    if result.fallbacks:
        _print_table(env, "FALLBACKS", list(result.fallbacks))
    if explain:
        _print_exclusions(env, result.excluded)


def _check_names(env: runner.Env, models: list[str]) -> None:
    """A model name follows the grammar of declarations; anything else is invalid input."""
    for model in models:
        try:
            names.parse_ollama(model)
        except names.InvalidName as exc:
            env.fail(f"{exc}; give model names as declared (llmctl model list)")


def _print_failure(
    env: runner.Env, exc: resolver.ResolveError, explain: bool, fmt: output.Format
) -> None:
    if fmt is not output.Format.TABLE:
        doc: dict[str, Any] = {
            "provider": None,
            "error": {"type": type(exc).__name__, "message": str(exc)},
            "fallbacks": [],
        }
        if explain:
            doc["excluded"] = [e.to_dict() for e in exc.exclusions]
        output.render_one(doc, fmt, env.out)
    elif explain:
        _print_exclusions(env, exc.exclusions)
    env.error(str(exc))


def _print_table(env: runner.Env, title: str, providers: list[resolver.Provider]) -> None:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for header in ("BACKEND", "TYPE", "MODEL", "CONTEXT", "CAPABILITIES", "LOADED", "URL"):
        table.add_column(header, overflow="fold")
    for p in providers:
        context = "-" if p.context_length is None else str(p.context_length)
        table.add_row(
            p.backend,
            p.type,
            p.model,
            context,
            ",".join(p.capabilities) or "-",
            "yes" if p.loaded else "no",
            p.base_url,
        )
    env.out.print(table)


def _print_exclusions(env: runner.Env, excluded: tuple[resolver.Exclusion, ...]) -> None:
    table = Table(title="EXCLUDED", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    for header in ("BACKEND", "MODEL", "REASON", "DETAIL"):
        table.add_column(header, overflow="fold")
    for e in excluded:
        table.add_row(e.backend, e.model, e.reason.value, e.detail)
    if not excluded:
        env.out.print("EXCLUDED: none", highlight=False)
        return
    env.out.print(table)
