"""The key commands: ``llmctl key create|list|get|update|revoke``, the gateway's virtual API keys.

``llmctl gateway`` admits a request only with a key made here. ``create`` prints the key's
secret once (it is stored only as a SHA-256, `gateway.keys`) with a warning on standard
error; nothing else ever prints it, only its prefix. Each command runs one transaction
through `controller.runner`; invalid input exits 2 with a one-line message and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from controller import completion, declare, output, runner, shapes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from gateway import keys

app = typer.Typer(
    help="Manage the gateway's virtual API keys: what each may use and spend.",
    no_args_is_help=True,
)

T = TypeVar("T")
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", help="A model the key may use (repeatable)", autocompletion=completion.models
    ),
]
PoolsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--pool",
        help="A pool whose models it may use (repeatable)",
        autocompletion=completion.pools,
    ),
]
RpmOpt = Annotated[
    int | None,
    typer.Option("--rpm", parser=declare.whole_number, help="Requests per minute at most"),
]
TpmOpt = Annotated[
    int | None,
    typer.Option("--tpm", parser=declare.whole_number, help="Tokens per minute at most"),
]
BudgetOpt = Annotated[
    str | None, typer.Option("--budget", help="USD it may spend per period, e.g. 25 or 0.50")
]
PeriodOpt = Annotated[
    str | None, typer.Option("--period", help="day, month or none (the key's life): the budget's")
]
PolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--policy",
        help="How the gateway routes its requests that name no X-Llmctl-Policy "
        "(least_loaded, sticky, adaptive, ...)",
    ),
]
WARNING = (
    "warning: the secret above is shown only now; llmctl keeps only its hash. Store it safely."
)


def _budget(
    env: runner.Env, budget: str | None, period: str | None
) -> tuple[int | None, keys.Period | None]:
    """The budget in micro-USD and the period given (None: not given); exits 2 on bad ones."""
    from gateway import keys, prices

    try:
        micro = None if budget is None else prices.microusd(budget, "--budget")
    except prices.PriceRefused as exc:
        env.fail(str(exc))
    if period is None:
        return micro, None
    try:
        return micro, keys.Period(period.strip().lower())
    except ValueError:
        env.fail(f"--period {period!r} is not one of day|month|none")


@app.command("create")
def key_create(
    ctx: typer.Context,
    name: str,
    model: ModelsOpt = None,
    pool: PoolsOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    budget: BudgetOpt = None,
    period: PeriodOpt = None,
    policy: PolicyOpt = None,
    fmt: Annotated[output.DocFormat, typer.Option("--output", "-o", help="table, json or yaml")] = (
        output.DocFormat.TABLE
    ),
) -> None:
    """Create a key (no --model or --pool: every model) and print its secret, once."""
    from gateway import keys, keystore

    env = declare.env_of(ctx)
    micro, chosen = _budget(env, budget, period)
    value = keys.KeySpec(name, tuple(model or ()), tuple(pool or ()), rpm, tpm, micro,
                         chosen or keys.Period.NONE, policy)  # fmt: skip
    try:
        keys.check(value)
    except keys.KeyRefused as exc:
        env.fail(str(exc))
    secret = keys.new_secret()
    now = dt.datetime.now(dt.UTC)
    key = runner.transaction(
        env, lambda s: keystore.create(s, value, keys.digest(secret), keys.prefix(secret), now)
    )
    if output.Format(fmt) is output.Format.TABLE:
        env.out.print(f"key/{name} created", highlight=False)
        output.write(env.out, secret)
    else:
        output.render_one({**shapes.key_doc(key), "secret": secret}, output.Format(fmt), env.out)
    env.err.print(WARNING, highlight=False)


@app.command("list")
def key_list(ctx: typer.Context, fmt: declare.OutputOpt = output.Format.TABLE) -> None:
    """List the keys, revoked ones included (their prefixes, never their secrets)."""
    from gateway import keystore

    env = declare.env_of(ctx)
    found = runner.read(env, keystore.all_keys)
    output.render_list("key", [shapes.key_doc(k) for k in found], fmt, env.out)


@app.command("get")
def key_get(ctx: typer.Context, name: str, fmt: declare.OutputOpt = output.Format.TABLE) -> None:
    """Show one key."""
    from gateway import keystore

    env = declare.env_of(ctx)
    key = runner.read(env, lambda s: keystore.get(s, name))
    output.render_got("key", shapes.key_doc(key), fmt, env.out)


@app.command("update")
def key_update(
    ctx: typer.Context,
    name: str,
    model: ModelsOpt = None,
    pool: PoolsOpt = None,
    clear_models: Annotated[bool, typer.Option("--clear-models", help="Name no models")] = False,
    clear_pools: Annotated[bool, typer.Option("--clear-pools", help="Name no pools")] = False,
    rpm: RpmOpt = None,
    no_rpm: Annotated[bool, typer.Option("--no-rpm", help="No requests-per-minute limit")] = False,
    tpm: TpmOpt = None,
    no_tpm: Annotated[bool, typer.Option("--no-tpm", help="No tokens-per-minute limit")] = False,
    budget: BudgetOpt = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="No spend budget")] = False,
    period: PeriodOpt = None,
    policy: PolicyOpt = None,
    no_policy: Annotated[
        bool, typer.Option("--no-policy", help="Route as the gateway does by default")
    ] = False,
) -> None:
    """Change what a key allows; options given replace the old values (the secret stays)."""
    import dataclasses

    from gateway import keys, keystore

    env = declare.env_of(ctx)
    for given, clear, option in ((model, clear_models, "--model"), (pool, clear_pools, "--pool"),
                                 (rpm, no_rpm, "--rpm"), (tpm, no_tpm, "--tpm"),
                                 (budget, no_budget, "--budget"),
                                 (policy, no_policy, "--policy")):  # fmt: skip
        if given is not None and clear:
            env.fail(f"{option} contradicts its clearing option; give one of them")
    micro, chosen = _budget(env, budget, period)

    async def work(session: AsyncSession) -> bool:
        old = (await keystore.get(session, name)).spec
        new = dataclasses.replace(
            old,
            models=() if clear_models else tuple(model or old.models),
            pools=() if clear_pools else tuple(pool or old.pools),
            rpm=_replaced(no_rpm, rpm, old.rpm),
            tpm=_replaced(no_tpm, tpm, old.tpm),
            budget_microusd=_replaced(no_budget, micro, old.budget_microusd),
            period=keys.Period.NONE if no_budget else chosen or old.period,
            policy=_replaced(no_policy, policy, old.policy),
        )
        return (await keystore.update(session, new))[1]

    changed = runner.transaction(env, work)  # no cycle to ask for: keys are the gateway's
    env.out.print(f"key/{name} {'updated' if changed else 'unchanged'}", highlight=False)


def _replaced(clear: bool, given: T | None, old: T | None) -> T | None:
    """An updated optional value: none when cleared, else the one given, else the old one."""
    if clear:
        return None
    return old if given is None else given


@app.command("revoke")
def key_revoke(ctx: typer.Context, name: str) -> None:
    """Revoke a key for good: the gateway refuses it from then on (the record stays)."""
    from gateway import keystore

    env = declare.env_of(ctx)
    now = dt.datetime.now(dt.UTC)
    revoked = runner.transaction(env, lambda s: keystore.revoke(s, name, now))
    env.out.print(f"key/{name} {'revoked' if revoked else 'already revoked'}", highlight=False)
