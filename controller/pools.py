"""The pool commands: ``llmctl pool create|update|list|get|delete|add-backend|...``.

A pool groups backends, models and adapters: a backend serves the models (and loads the
adapters) of every pool it belongs to.
Each command runs one transaction through `controller.runner` and prints a kubectl-style
confirmation or a document in the chosen output format; invalid input exits 2 with a message
naming the field, and nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from controller import completion, declare, output, runner, selection, shapes
from runtimestate.desired import spec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(
    help="Group backends and models: a backend serves its pools' models.", no_args_is_help=True
)
# Names of existing objects: the shell completes them from the database.
PoolArg = Annotated[str, typer.Argument(autocompletion=completion.pools)]


@app.command("create")
def pool_create(
    ctx: typer.Context,
    name: str,
    purpose: Annotated[str, typer.Option(help="What the pool is for")] = "",
    label: declare.LabelOpt = None,
) -> None:
    """Create an empty pool."""
    from runtimestate.desired import poolstore

    env = declare.env_of(ctx)
    value = spec.PoolSpec(name, purpose, labels=declare.labels_of(env, {}, label))
    runner.transaction(env, lambda s: poolstore.create_pool(s, value))
    env.out.print(f"pool/{name} created", highlight=False)
    runner.notify(env)


@app.command("update")
def pool_update(
    ctx: typer.Context,
    name: PoolArg,
    purpose: Annotated[str | None, typer.Option(help="What the pool is for")] = None,
    label: declare.LabelUpdateOpt = None,
) -> None:
    """Change a pool's purpose or labels; the generation goes up only on a real change."""
    from runtimestate.desired import poolstore

    env = declare.env_of(ctx)

    async def work(session: AsyncSession) -> bool:
        old = (await poolstore.get_pool(session, name)).spec
        new_purpose = purpose if purpose is not None else old.purpose
        labels = declare.labels_of(env, dict(old.labels), label)
        value = spec.PoolSpec(old.name, new_purpose, old.backends, old.models, labels, old.adapters)
        _, changed = await poolstore.update_pool(session, value)
        return changed

    runner.update(env, "pool", name, work)


@app.command("list")
def pool_list(
    ctx: typer.Context,
    fmt: declare.OutputOpt = output.Format.TABLE,
    selector: selection.SelectorOpt = None,
) -> None:
    """List the pools with their members (-l: those whose labels match)."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    chosen = selection.selected(env, selector)
    state = runner.read(env, store.load)
    pools = [p for p in state.pools if chosen.matches(p.spec.labels)]
    output.render_list("pool", [shapes.pool_doc(p) for p in pools], fmt, env.out)


@app.command("get")
def pool_get(
    ctx: typer.Context, name: PoolArg, fmt: declare.OutputOpt = output.Format.TABLE
) -> None:
    """Show one pool."""
    from runtimestate.desired import poolstore

    env = declare.env_of(ctx)
    pool = runner.read(env, lambda s: poolstore.get_pool(s, name))
    output.render_got("pool", shapes.pool_doc(pool), fmt, env.out)


@app.command("delete")
def pool_delete(ctx: typer.Context, name: PoolArg) -> None:
    """Delete a pool (its backends and models stay declared)."""
    from runtimestate.desired import poolstore

    env = declare.env_of(ctx)
    runner.transaction(env, lambda s: poolstore.delete_pool(s, name))
    env.out.print(f"pool/{name} deleted", highlight=False)
    runner.notify(env)


def _membership(ctx: typer.Context, pool: str, member: bool, **target: str) -> None:
    from runtimestate.desired import poolstore

    env = declare.env_of(ctx)
    changed = runner.transaction(
        env, lambda s: poolstore.set_membership(s, pool, member=member, **target)
    )
    ((kind, name),) = target.items()
    verb = (
        ("added to" if member else "removed from")
        if changed
        else ("already in" if member else "not in")
    )
    env.out.print(f"{kind}/{name} {verb} pool/{pool}", highlight=False)
    runner.notify(env)


@app.command("add-backend")
def pool_add_backend(ctx: typer.Context, pool: PoolArg, backend: declare.BackendArg) -> None:
    """Add a backend to a pool (idempotent)."""
    _membership(ctx, pool, True, backend=backend)


@app.command("remove-backend")
def pool_remove_backend(ctx: typer.Context, pool: PoolArg, backend: declare.BackendArg) -> None:
    """Remove a backend from a pool (idempotent)."""
    _membership(ctx, pool, False, backend=backend)


@app.command("add-model")
def pool_add_model(ctx: typer.Context, pool: PoolArg, model: declare.ModelArg) -> None:
    """Add a model to a pool (idempotent)."""
    _membership(ctx, pool, True, model=model)


@app.command("remove-model")
def pool_remove_model(ctx: typer.Context, pool: PoolArg, model: declare.ModelArg) -> None:
    """Remove a model from a pool (idempotent)."""
    _membership(ctx, pool, False, model=model)


AdapterArg = Annotated[str, typer.Argument(autocompletion=completion.adapters)]


@app.command("add-adapter")
def pool_add_adapter(ctx: typer.Context, pool: PoolArg, adapter: AdapterArg) -> None:
    """Place an adapter on the pool's backends (idempotent)."""
    _membership(ctx, pool, True, adapter=adapter)


@app.command("remove-adapter")
def pool_remove_adapter(ctx: typer.Context, pool: PoolArg, adapter: AdapterArg) -> None:
    """Remove an adapter from a pool (idempotent)."""
    _membership(ctx, pool, False, adapter=adapter)
