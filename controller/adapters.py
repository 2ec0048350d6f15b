"""The declaring commands of LoRA adapters: ``llmctl adapter add|update|list|get|delete``.

An adapter is loaded on the vLLM backends its pools place it on, where its base model is
served. Each command validates its options, runs one transaction through `controller.runner`,
and prints a kubectl-style confirmation (``adapter/sql-lora created``) or a document in the
chosen output format. Invalid input exits 2 with one line naming the field; nothing is written.
Registered lazily by `controller.cli`; the stores are imported by the commands that use them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from controller import completion, declare, output, runner, selection, shapes
from runtimestate.desired import spec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

app = typer.Typer(
    help="Declare LoRA adapters, loaded on vLLM backends where pools place them.",
    no_args_is_help=True,
)
AdapterArg = Annotated[str, typer.Argument(autocompletion=completion.adapters)]
BaseModelOpt = Annotated[
    str | None,
    typer.Option(
        "--base-model", help="The declared model it adapts", autocompletion=completion.models
    ),
]
SourceOpt = Annotated[
    str | None,
    typer.Option("--source", help="An absolute path on the node or a Hugging Face repo id"),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="Branch, tag or commit of a repo id source")
]


@app.command("add")
def adapter_add(
    ctx: typer.Context,
    name: str,
    base_model: BaseModelOpt = None,
    source: SourceOpt = None,
    revision: RevisionOpt = None,
    label: declare.LabelOpt = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool",
            help="Pool to join (repeatable); default: none",
            autocompletion=completion.pools,
        ),
    ] = None,
) -> None:
    """Declare an adapter; it is loaded only where a pool places it (--pool)."""
    from runtimestate.desired import adapterstore

    env = declare.env_of(ctx)
    if base_model is None or source is None:
        env.fail("adapter add needs --base-model MODEL and --source PATH_OR_REPO")
    labels = declare.labels_of(env, {}, label)
    value = spec.AdapterSpec(name, base_model, source, revision, labels)
    runner.transaction(env, lambda s: adapterstore.add_adapters(s, [value], pool or ()))
    env.out.print(f"adapter/{name} created", highlight=False)
    runner.notify(env)


@app.command("update")
def adapter_update(
    ctx: typer.Context,
    name: AdapterArg,
    base_model: BaseModelOpt = None,
    source: SourceOpt = None,
    revision: RevisionOpt = None,
    no_revision: Annotated[bool, typer.Option("--no-revision", help="The default branch")] = False,
    label: declare.LabelUpdateOpt = None,
    pool: declare.PoolUpdateOpt = None,
    no_pool: declare.NoPoolUpdateOpt = False,
) -> None:
    """Change an adapter; the generation goes up on a change but its labels."""
    from runtimestate.desired import adapterstore

    env = declare.env_of(ctx)
    pools = declare.pools_of(env, pool, no_pool, None)
    if revision is not None and no_revision:
        env.fail("--revision and --no-revision contradict each other; give one of them")

    async def work(session: AsyncSession) -> bool:
        old = (await adapterstore.get_adapter(session, name)).spec
        value = dataclasses.replace(
            old,
            base_model=old.base_model if base_model is None else base_model,
            source=old.source if source is None else source,
            revision=None if no_revision else (old.revision if revision is None else revision),
            labels=declare.labels_of(env, dict(old.labels), label),
        )
        _, changed = await adapterstore.update_adapter(session, value, pools)
        return changed

    runner.update(env, "adapter", name, work)


@app.command("list")
def adapter_list(
    ctx: typer.Context,
    fmt: declare.OutputOpt = output.Format.TABLE,
    selector: selection.SelectorOpt = None,
) -> None:
    """List the declared adapters (-l: those whose labels match; -o wide for more)."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    chosen = selection.selected(env, selector)
    state = runner.read(env, store.load)
    docs = [shapes.adapter_doc(a, state) for a in state.adapters if chosen.matches(a.spec.labels)]
    output.render_list("adapter", docs, fmt, env.out)


@app.command("get")
def adapter_get(
    ctx: typer.Context, name: AdapterArg, fmt: declare.OutputOpt = output.Format.TABLE
) -> None:
    """Show an adapter and the backends it is placed on."""
    from runtimestate.desired import store

    env = declare.env_of(ctx)
    state = runner.read(env, store.load)
    adapter = state.adapter(name)
    if adapter is None:
        env.fail(str(store.missing("adapter", name, state.adapters_by_name)))
    doc = shapes.adapter_doc(adapter, state)
    doc["backends"] = [b.name for b in state.backends if adapter in state.adapters_for(b.name)]
    output.render_got("adapter", doc, fmt, env.out)


@app.command("delete")
def adapter_delete(ctx: typer.Context, name: AdapterArg) -> None:
    """Delete an adapter declaration (where loaded, it is unloaded per the prune policy)."""
    from runtimestate.desired import adapterstore

    env = declare.env_of(ctx)
    runner.transaction(env, lambda s: adapterstore.delete_adapter(s, name))
    env.out.print(f"adapter/{name} deleted", highlight=False)
    runner.notify(env)
