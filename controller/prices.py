"""The price commands: ``llmctl price set|list|delete``, what each model's tokens cost.

``llmctl gateway`` costs every request from these prices and the tokens in the backend's
``usage``, and counts the cost against the key's budget. Prices are USD per million input
(prompt) and output (completion) tokens, kept exactly (`gateway.prices`). Each command runs
one transaction through `controller.runner`; invalid input exits 2 with a one-line message
and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from controller import declare, output, runner, shapes

app = typer.Typer(
    help="Declare what models cost, for the gateway's spend and budgets.", no_args_is_help=True
)


@app.command("set")
def price_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model as requests name it")],
    input_usd: Annotated[
        str, typer.Option("--prompt-usd", help="USD per million prompt (input) tokens, e.g. 0.15")
    ],
    output_usd: Annotated[
        str, typer.Option("--completion-usd", help="USD per million completion (output) tokens")
    ],
) -> None:
    """Declare (or change) a model's price."""
    from gateway import prices, pricestore

    env = declare.env_of(ctx)
    try:
        value = prices.Price(
            model,
            prices.microusd(input_usd, "--prompt-usd"),
            prices.microusd(output_usd, "--completion-usd"),
        )
    except prices.PriceRefused as exc:
        env.fail(str(exc))
    now = dt.datetime.now(dt.UTC)
    changed = runner.transaction(env, lambda s: pricestore.set_price(s, value, now))
    verb = "created" if changed is None else "updated" if changed else "unchanged"
    env.out.print(f"price/{model} {verb}", highlight=False)


@app.command("list")
def price_list(
    ctx: typer.Context,
    fmt: Annotated[output.DocFormat, typer.Option("--output", "-o", help="table, json or yaml")] = (
        output.DocFormat.TABLE
    ),
) -> None:
    """List the declared prices (USD per million tokens)."""
    from gateway import prices, pricestore

    env = declare.env_of(ctx)
    found = runner.read(env, pricestore.all_prices)
    if output.Format(fmt) is not output.Format.TABLE:
        output.render_one([shapes.price_doc(p) for p in found], output.Format(fmt), env.out)
        return
    rows = [[p.model, prices.usd(p.input_microusd), prices.usd(p.output_microusd)] for p in found]
    output.write(env.out, output.table(["MODEL", "PROMPT-USD/M", "COMPLETION-USD/M"], rows))


@app.command("delete")
def price_delete(ctx: typer.Context, model: str) -> None:
    """Forget a model's price: its requests then count no spend."""
    from gateway import pricestore

    env = declare.env_of(ctx)
    runner.transaction(env, lambda s: pricestore.delete_price(s, model))
    env.out.print(f"price/{model} deleted", highlight=False)
