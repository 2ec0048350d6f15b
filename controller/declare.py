"""The declaring commands of backends, ``llmctl backend ...``, and the options every declaring
command shares (`controller.models` and `controller.pools` use them).

Each command validates its options, runs one transaction through `controller.runner`, and
prints either a kubectl-style confirmation (``backend/gpu-1 created``) or a document in the
chosen output format. Invalid input exits 2 with a message naming the field; nothing is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller import completion, output, runner, selection, shapes
from runtimestate.desired import spec

if TYPE_CHECKING:
    from rich.console import Console
    from sqlalchemy.ext.asyncio import AsyncSession

    from runtimestate import credentials, desired, snapshot

# The stores, the status reader and the credentials are imported by the commands that use
# them: ``llmctl backend --help`` imports none of them (tests/e2e/test_cli_imports.py).

backend_app = typer.Typer(help="Declare the backends llmctl manages.", no_args_is_help=True)

OutputOpt = Annotated[
    output.Format,
    typer.Option("--output", "-o", help="table, wide, json, yaml or name"),
]
PoolOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pool",
        help="Pool to join (repeatable); default: the default pool",
        autocompletion=completion.pools,
    ),
]
# The name of an existing backend or model: the shell completes it from the database.
BackendArg = Annotated[str, typer.Argument(autocompletion=completion.backends)]
ModelArg = Annotated[str, typer.Argument(autocompletion=completion.models)]
NoPoolOpt = Annotated[bool, typer.Option("--no-pool", help="Join no pool (observe only)")]
LabelOpt = Annotated[list[str] | None, typer.Option("--label", help="k=v (repeatable)")]
LabelUpdateOpt = Annotated[
    list[str] | None, typer.Option("--label", help="k=v sets, k- removes (repeatable)")
]
# On update: the pools given replace the ones joined.
PoolUpdateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pool", help="Set the pools exactly (repeatable)", autocompletion=completion.pools
    ),
]
NoPoolUpdateOpt = Annotated[bool, typer.Option("--no-pool", help="Leave every pool")]
VramOpt = Annotated[
    str | None,
    typer.Option("--vram", help="Memory warm models may hold: bytes, or e.g. 24GiB, 20GB"),
]
DiskOpt = Annotated[
    str | None,
    typer.Option("--disk", help="Disk pulls are admitted against: bytes, or e.g. 500GB"),
]


def budgets(
    env: runner.Env, value: spec.BackendSpec, vram: str | None, disk: str | None
) -> spec.BackendSpec:
    """``value`` with the ``--vram``/``--disk`` sizes given (``none`` clears one); exits 2
    naming a bad size."""
    from runtimestate.desired import residency

    def parsed(given: str | None, old: int | None, field: str) -> int | None:
        if given is None:
            return old
        return None if given.lower() == "none" else residency.size(given, field)

    try:
        vram_bytes = parsed(vram, value.vram_bytes, "vram")
        disk_bytes = parsed(disk, value.disk_bytes, "disk")
    except spec.SpecError as exc:
        env.fail(str(exc))
    return dataclasses.replace(value, vram_bytes=vram_bytes, disk_bytes=disk_bytes)


def whole_number(text: str | int) -> int:
    """The parser of count options: digits only, where ``int`` takes ``1_0``, ``+2`` and `` 2``."""
    try:
        return spec.parse_whole_number(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def env_of(ctx: typer.Context) -> runner.Env:
    env = ctx.find_root().obj
    assert isinstance(env, runner.Env)
    return env


def pools_of(
    env: runner.Env, pools: list[str] | None, no_pool: bool, default: Sequence[str] | None
) -> Sequence[str] | None:
    if pools and no_pool:
        env.fail("--pool and --no-pool contradict each other; give one of them")
    if no_pool:
        return ()
    return pools if pools else default


def _credentials(
    env: runner.Env, api_key_env: str | None, api_key_stdin: bool
) -> credentials.Credentials | None:
    from runtimestate import credentials

    if api_key_env and api_key_stdin:
        env.fail("--api-key-env and --api-key-stdin contradict each other; give one of them")
    try:
        if api_key_env:
            return credentials.Credentials(
                credentials.CredentialKind.ENV, env_var=spec.env_var(api_key_env)
            )
        if api_key_stdin:
            secret_key = credentials.require_secret_key(env.environ)
            return credentials.encrypt(runner.read_stdin(), secret_key)
    except runner.user_errors() as exc:
        env.fail(str(exc))
    return None


def labels_of(env: runner.Env, base: dict[str, str], items: list[str] | None) -> dict[str, str]:
    """``base`` with the ``--label`` items applied (``k=v`` sets, ``k-`` removes), validated;
    exits 2 naming a bad one."""
    labels = dict(base)
    for item in items or []:
        if item.endswith("-") and "=" not in item:
            labels.pop(item[:-1], None)
            continue
        try:
            key, value = spec.parse_label(item)
        except spec.SpecError as exc:
            env.fail(str(exc))
        labels[key] = value
    try:
        return spec.labels(labels)
    except spec.SpecError as exc:
        env.fail(str(exc))


# --- backend ---------------------------------------------------------------------------------


@backend_app.command("add")
def backend_add(
    ctx: typer.Context,
    name: str,
    url: Annotated[str, typer.Option("--url", help="http(s) base URL, may carry a path prefix")],
    type_: Annotated[str, typer.Option("--type", help="ollama, vllm, openai, gemini or node")],
    pool: PoolOpt = None,
    no_pool: NoPoolOpt = False,
    prune: Annotated[str, typer.Option(help="none, managed or all")] = "managed",
    max_pulls: Annotated[
        int,
        typer.Option("--max-pulls", help="Concurrent pulls on this backend", parser=whole_number),
    ] = 1,
    label: Annotated[list[str] | None, typer.Option("--label", help="k=v (repeatable)")] = None,
    api_key_env: Annotated[
        str | None, typer.Option("--api-key-env", help="Read the key from this variable")
    ] = None,
    api_key_stdin: Annotated[
        bool, typer.Option("--api-key-stdin", help="Read the key from stdin; stored encrypted")
    ] = False,
    vram: VramOpt = None,
    disk: DiskOpt = None,
) -> None:
    """Declare a backend (generation 1). It joins the default pool unless told otherwise."""
    from runtimestate.desired import store

    env = env_of(ctx)
    pools = pools_of(env, pool, no_pool, [spec.DEFAULT_POOL])
    assert pools is not None
    labels = labels_of(env, {}, label)
    creds = _credentials(env, api_key_env, api_key_stdin)

    async def work(session: AsyncSession) -> spec.Backend:
        value = spec.make_backend(
            name, type_, url, labels=labels, prune=prune, max_pulls=max_pulls, credentials=creds
        )
        return await store.add_backend(session, budgets(env, value, vram, disk), pools)

    runner.transaction(env, work)
    env.out.print(f"backend/{name} created", highlight=False)
    runner.notify(env)


@backend_app.command("update")
def backend_update(
    ctx: typer.Context,
    name: BackendArg,
    url: Annotated[str | None, typer.Option("--url")] = None,
    type_: Annotated[str | None, typer.Option("--type")] = None,
    pool: PoolUpdateOpt = None,
    no_pool: NoPoolUpdateOpt = False,
    prune: Annotated[str | None, typer.Option()] = None,
    max_pulls: Annotated[int | None, typer.Option("--max-pulls", parser=whole_number)] = None,
    label: LabelUpdateOpt = None,
    api_key_env: Annotated[str | None, typer.Option("--api-key-env")] = None,
    api_key_stdin: Annotated[bool, typer.Option("--api-key-stdin")] = False,
    no_api_key: Annotated[
        bool, typer.Option("--no-api-key", help="Forget the credentials")
    ] = False,
    vram: Annotated[str | None, typer.Option("--vram", help="A size, or none to clear")] = None,
    disk: Annotated[str | None, typer.Option("--disk", help="A size, or none to clear")] = None,
) -> None:
    """Change a backend; the generation goes up when its spec really changes."""
    from runtimestate.desired import store

    env = env_of(ctx)
    pools = pools_of(env, pool, no_pool, None)
    new_creds = _credentials(env, api_key_env, api_key_stdin)
    if no_api_key and new_creds is not None:
        env.fail("--no-api-key contradicts --api-key-env/--api-key-stdin; give one of them")

    async def work(session: AsyncSession) -> bool:
        old = (await store.get_backend(session, name)).spec
        value = spec.make_backend(
            name,
            type_ if type_ is not None else old.type,
            url if url is not None else old.url,
            labels=labels_of(env, dict(old.labels), label),
            prune=prune if prune is not None else old.prune,
            max_pulls=max_pulls if max_pulls is not None else old.max_pulls,
            credentials=None if no_api_key else (new_creds or old.credentials),
        )
        kept = dataclasses.replace(value, vram_bytes=old.vram_bytes, disk_bytes=old.disk_bytes)
        value = budgets(env, kept, vram, disk)
        _, changed = await store.update_backend(session, value, pools)
        return changed

    runner.update(env, "backend", name, work)


async def _with_status(
    session: AsyncSession,
) -> tuple[desired.DesiredState, dict[str, snapshot.LLMState]]:
    from runtimestate.desired import store
    from runtimestate.reconcile import status

    return await store.load(session), await status.load_states(session)


def _render_backends(docs: Sequence[dict[str, Any]], fmt: output.Format, console: Console) -> None:
    output.render_list("backend", docs, fmt, console)


WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch", "-w", help="Keep the list on screen, redrawn as it changes (Ctrl-C to stop)"
    ),
]
# What a backend cycle, a status change or a declaration says on NATS: the list may have changed.
BACKEND_SUBJECTS = ("v1.state.>", "v1.cycles", "v1.control.trigger")


@backend_app.command("list")
def backend_list(
    ctx: typer.Context,
    fmt: OutputOpt = output.Format.TABLE,
    selector: selection.SelectorOpt = None,
    watch: WatchOpt = False,
) -> None:
    """List the declared backends with their observed status (-o wide for the spec too)."""
    env = env_of(ctx)
    chosen = selection.selected(env, selector)

    async def docs(session: AsyncSession) -> list[dict[str, Any]]:
        state, observed = await _with_status(session)
        return [
            shapes.backend_doc(b, state, observed.get(b.name))
            for b in state.backends
            if chosen.matches(b.spec.labels)
        ]

    if watch:
        from controller import livelist

        source = livelist.Source(
            docs, _render_backends, BACKEND_SUBJECTS, (("status", "lastOkAt"),)
        )
        livelist.watch(env, source, fmt)
    _render_backends(runner.read(env, docs), fmt, env.out)


@backend_app.command("get")
def backend_get(ctx: typer.Context, name: BackendArg, fmt: OutputOpt = output.Format.TABLE) -> None:
    """Show a backend's spec, desired models, conditions, observed models and downloads."""
    from runtimestate.desired import store

    env = env_of(ctx)
    state, observed = runner.read(env, _with_status)
    backend = state.backend(name)
    if backend is None:
        env.fail(str(store.missing("backend", name, state.backends_by_name)))
    doc = shapes.backend_doc(backend, state, observed.get(name))
    doc["desiredModels"] = [m.name for m in state.models_for(name)]
    if fmt is output.Format.NAME:
        output.render_names("backend", [doc], env.out)
        return
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.render_one(doc, fmt, env.out)
        return
    output.render_backend(doc, env.out, wide=fmt is output.Format.WIDE)


@backend_app.command("delete")
def backend_delete(ctx: typer.Context, name: BackendArg) -> None:
    """Delete a backend. Its pending downloads are cancelled by the next cycle."""
    from runtimestate.desired import store

    env = env_of(ctx)
    runner.transaction(env, lambda s: store.delete_backend(s, name))
    env.out.print(f"backend/{name} deleted", highlight=False)
    runner.notify(env)
